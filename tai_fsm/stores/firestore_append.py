"""``append_events`` for the Firestore store: the commit of a transition in one round trip.

The commit is ONE batched write (DESIGN.md §4 point 2):

* each event document is **created** (precondition: must not exist) under the key
  (stream id, version), so two writers of the same version collide;
* with ``state``, the state document is created (``expected_version == 0``, precondition
  ``exists=False``) or updated with the precondition ``update_time == token`` — the token from
  the caller's last read or commit. The event key alone is not enough: compaction frees old
  keys, and a writer whose view predates it would otherwise slip in below the head;
* without ``state``, the event at ``expected_version`` is rewritten unchanged (precondition:
  exists), which fails for a writer below the head even over a compacted range; an append to
  an empty stream counts its events first (one query).

A failed precondition is then explained by reading the target versions: the same event ids
mean a retried call that already landed (``already_applied``); otherwise ``VersionConflict``
carries the real head. No read happens before the write when the token is current.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from google.cloud.firestore_v1.base_query import FieldFilter

from tai_fsm.errors import InvalidInput, VersionConflict
from tai_fsm.records import AppendResult, Event, StateSnapshot
from tai_fsm.stores.common import encode_event, encode_snapshot
from tai_fsm.stores.firestore_codec import (
    Token,
    create_write,
    event_fields,
    event_key,
    set_write,
    state_fields,
    touch_write,
)
from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS
from tai_fsm.stores.firestore_io import RETRIES, Documents, pause

__all__ = ["Appender"]

_IN_LIMIT = 30  # values per "in" filter


class Appender:
    """Appends to event streams through :class:`Documents` (see the module docstring)."""

    def __init__(self, docs: Documents) -> None:
        self.docs = docs

    async def append(
        self,
        governor: str,
        stream_id: str,
        events: list[Event],
        expected: int | None,
        state: StateSnapshot | None,
        token: str | None,
    ) -> AppendResult:
        """``Store.append_events`` after argument checks (see the module docstring)."""
        if expected is None:
            return await self._append_at_head(governor, stream_id, events, state)
        known = Token.parse(token) if state is not None and expected > 0 else None
        for attempt in range(RETRIES):
            if state is not None and expected > 0 and (known is None or known.version != expected):
                # no usable token: read the state document first (a second RPC)
                current = await self.docs.get_state(governor, stream_id)
                if current is None or current.version != expected:
                    return await self._settle(governor, stream_id, events, expected, state)
                known = Token.parse(current.token)
            if state is None and expected == 0 and await self.docs.count(governor, stream_id):
                return await self._settle(governor, stream_id, events, expected, state)
            try:
                return await self._write(
                    governor, stream_id, events, expected, state, known, touch=state is None
                )
            except CONFLICT_ERRORS:
                settled = await self._resolve(governor, stream_id, events, expected, state)
                if settled is not None:
                    return settled
                known = None  # head and state record are at `expected`: only the token was stale
                await pause(attempt)
        raise VersionConflict(stream_id, expected, expected)

    async def _write(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        expected: int,
        state: StateSnapshot | None,
        known: Token | None,
        *,
        touch: bool,
    ) -> AppendResult:
        """The single commit: create the events at ``expected + 1 ...``; with ``touch``,
        rewrite the event at ``expected`` unchanged (it must exist); write the state record
        anew (``known`` None: must not exist) or over the ``known`` update time."""
        docs = self.docs
        head = expected + len(events)
        writes = []
        for version, event in enumerate(events, start=expected + 1):
            raw = encode_event(event, stream_id, version)
            path = docs.doc_path(governor, "events", event_key(stream_id, version))
            writes.append(create_write(path, event_fields(event.id, stream_id, version, raw)))
        if touch and expected > 0:
            path = docs.doc_path(governor, "events", event_key(stream_id, expected))
            writes.append(touch_write(path, {"stream_id": stream_id}))
        if state is None:
            await docs.commit(writes, f"append to stream {stream_id!r}")
            return AppendResult(version=head)
        path = docs.doc_path(governor, "states", stream_id)
        record = state_fields(head, encode_snapshot(state, head, f"state {stream_id!r}"))
        writes.append(
            create_write(path, record) if known is None else set_write(path, record, known)
        )
        times = await docs.commit(writes, f"append to stream {stream_id!r}")
        return AppendResult(version=head, token=str(Token.of(head, times[-1])))

    async def _settle(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        expected: int,
        state: StateSnapshot | None,
    ) -> AppendResult:
        """:meth:`_resolve`, raising ``VersionConflict`` when it finds no reason."""
        settled = await self._resolve(governor, stream_id, events, expected, state)
        if settled is None:
            raise VersionConflict(stream_id, expected, expected)
        return settled

    async def _resolve(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        expected: int,
        state: StateSnapshot | None,
    ) -> AppendResult | None:
        """Why an append cannot commit: the target versions already hold these very events
        -> ``already_applied``; the stream head or the state record is not at ``expected``
        -> ``VersionConflict`` with the real version; both are current -> None (retry)."""
        first, last = expected + 1, expected + len(events)
        query = self.docs.key_range(
            self.docs.events(governor),
            event_key(stream_id, first),
            event_key(stream_id, last),
            end_inclusive=True,
            fields=["event_id"],
        )
        stored = await self.docs.fetch(query, f"read of stream {stream_id!r}")
        current = await self.docs.get_state(governor, stream_id) if state is not None else None
        if [doc.get("event_id") for doc in stored] == [event.id for event in events]:
            token = current.token if current is not None and current.version == last else None
            return AppendResult(version=last, token=token, already_applied=True)
        head = await self.docs.head(governor, stream_id)
        if head != expected:
            raise VersionConflict(stream_id, expected, head)
        version = current.version if current is not None else 0
        if state is not None and version != expected:
            raise VersionConflict(stream_id, expected, version)
        return None

    async def _find_ids(self, governor: str, stream_id: str, ids: list[str]) -> dict[str, int]:
        """Versions of those of ``ids`` already stored in ``stream_id`` (queries on the
        single-field index of ``event_id``, 30 ids each)."""
        col = self.docs.events(governor)
        found: dict[str, int] = {}
        for start in range(0, len(ids), _IN_LIMIT):
            chunk = ids[start : start + _IN_LIMIT]
            query = col.where(filter=FieldFilter("event_id", "in", chunk)).select(
                ["event_id", "stream_id", "version"]
            )
            for doc in await self.docs.fetch(query, f"event id lookup in {stream_id!r}"):
                if doc.get("stream_id") == stream_id:
                    found[str(doc.get("event_id"))] = int(doc.get("version"))
        return found

    async def _append_at_head(
        self,
        governor: str,
        stream_id: str,
        events: list[Event],
        state: StateSnapshot | None,
    ) -> AppendResult:
        """``expected_version=None``: estimate the head and look the event ids up (parallel
        queries), then commit with the usual preconditions, which confirm the estimate; a
        race with another writer retries."""
        ids = [event.id for event in events]
        for attempt in range(RETRIES):
            head, found = await asyncio.gather(
                self.docs.head_estimate(governor, stream_id),
                self._find_ids(governor, stream_id, ids),
            )
            if found:
                if len(found) != len(ids):
                    raise InvalidInput(
                        "some events of this append are already in stream "
                        f"{stream_id!r} and others are not",
                        field="events",
                    )
                return AppendResult(version=max(found.values()), already_applied=True)
            if events[0].version and events[0].version != head + 1:
                raise InvalidInput(
                    f"event {events[0].id!r} carries version {events[0].version} but would "
                    f"be appended as version {head + 1}",
                    field="events",
                )
            known: Token | None = None
            if state is not None:
                current = await self.docs.get_state(governor, stream_id)
                known = Token.parse(current.token) if current is not None else None
            try:
                return await self._write(
                    governor, stream_id, events, head, state, known, touch=True
                )
            except CONFLICT_ERRORS:
                await pause(attempt)
        raise VersionConflict(stream_id, head, None)  # other writers kept winning
