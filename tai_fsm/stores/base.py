"""The Store contract every backend implements (memory, sqlite, firestore, third-party).

A store holds, per governor (a namespace), three kinds of records (docs/architecture.md):

* **records** — the current state of one id per *kind* (``states``: a machine instance's
  state record; ``locks``: lock leases; ...), with a version that starts at 1 and grows by
  exactly 1 per write;
* **event streams** — append-only, one per stream id (for a runtime instance the stream id is
  the instance id), versions 1, 2, 3, ... with no gap and no duplicate;
* **snapshots** — a stream's full state at one of its versions, newest K kept.

Every multi-record write goes through ONE primitive, :meth:`Store.commit`: a list of typed
operations (:mod:`tai_fsm.stores.ops`) committed all-or-none. ``append_events``,
``write_state`` and ``delete_state`` are one-operation commits.

**Template methods.** The public methods below check every argument and encode/decode every
record exactly once, here; a backend implements only the ``_underscore`` methods, which see
checked arguments and stored bytes (:mod:`tai_fsm.stores.recordcodec` defines the stored
form, :mod:`tai_fsm.stores.planning` decides commits). So bad input raises a ``TaiFsmError``
before any backend code runs and leaves the store unchanged, and every record read back is
checked against the key it was read under — for every store, third-party ones included.
Every backend must pass ``tai_fsm.testing``'s contract suite unchanged.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self

from tai_fsm.errors import IntegrityError, InvalidInput, StateNotFound
from tai_fsm.records import (
    AppendResult,
    CleanupResult,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
)
from tai_fsm.stores.common import (
    check_batch_size,
    check_expected_version,
    check_id,
    check_ids,
    check_keep,
    check_read,
    check_snapshot,
    check_version,
)
from tai_fsm.stores.ops import STATES, Append, CommitResult, Delete, Op, Put
from tai_fsm.stores.planning import EventRow, Prepared, check_snapshot_version, prepare
from tai_fsm.stores.query import check_filter, scan_states
from tai_fsm.stores.recordcodec import (
    FULL_EVERY,
    EventDecoder,
    anchor,
    decode_record,
    encode_event_document,
    encode_record,
)
from tai_fsm.stores.seed import SeedAPI
from tai_fsm.stores.spans import EventSpan, replay_events, span_of

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EventSpan",
    "RawRecord",
    "Store",
    "replay_events",
    "span_of",
]

DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A stored record as a backend returns it: version, stored JSON, concurrency token."""

    version: int
    raw: bytes
    token: str | None = None


class Store(SeedAPI, abc.ABC):
    """Async store contract. Implementations are safe for concurrent use from one event
    loop; cross-process/cross-node safety comes from the backend's own atomicity (SQLite
    transactions, Firestore preconditions), never from in-process locks alone."""

    #: The URL this store was opened with (``memory://``, ``sqlite:///path``, ...).
    url: str = ""
    #: Most writes one atomic commit may hold (Firestore: 500); None = no limit.
    max_commit_writes: int | None = None

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        """Release connections. Idempotent. The store must not be used afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ records
    async def read_state(self, governor: str, state_id: str) -> StoredState:
        """The current state record with its version and concurrency token.
        Raises ``StateNotFound`` when absent."""
        return await self.read_record(governor, state_id, kind=STATES)

    async def read_record(self, governor: str, record_id: str, *, kind: str) -> StoredState:
        """The current record ``record_id`` of ``kind``; ``StateNotFound`` when absent."""
        gov = check_id(governor, "governor")
        kind = check_id(kind, "record kind")
        rid = check_id(record_id, "state id" if kind == STATES else f"{kind} record id")
        found = (await self._read_records(gov, kind, [rid])).get(rid)
        if found is None:
            raise StateNotFound(gov, rid, "state" if kind == STATES else f"{kind} record")
        return self._stored(gov, kind, rid, found)

    async def batch_read_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        """Several state records in one round trip; absent ids are left out of the result."""
        return await self.batch_read_records(governor, state_ids, kind=STATES)

    async def batch_read_records(
        self, governor: str, record_ids: Sequence[str], *, kind: str
    ) -> dict[str, StoredState]:
        """Several records of ``kind`` in one round trip, in the order asked; absent ids
        are left out."""
        gov = check_id(governor, "governor")
        kind = check_id(kind, "record kind")
        ids = list(dict.fromkeys(check_ids(record_ids, "state id")))
        if not ids:
            return {}
        found = await self._read_records(gov, kind, ids)
        return {rid: self._stored(gov, kind, rid, found[rid]) for rid in ids if rid in found}

    @staticmethod
    def _stored(governor: str, kind: str, record_id: str, found: RawRecord) -> StoredState:
        what = "state" if kind == STATES else f"{kind} record"
        snapshot = decode_record(found.raw, governor, record_id, found.version, what)
        return StoredState(snapshot=snapshot, version=found.version, token=found.token)

    async def write_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        *,
        expected_version: int | None,
        token: str | None = None,
    ) -> int:
        """Write a state record and return its new version (previous + 1, or 1 when new).

        ``expected_version=None`` writes unconditionally; an int must equal the current
        version (0 = must not exist) or ``VersionConflict(state_id, expected, actual)`` is
        raised and nothing is written. The stored snapshot's ``version`` is the new version."""
        result = await self.commit(
            governor, [Put(state_id, snapshot, expected_version, token)]
        )
        return result[0].version

    async def delete_state(
        self, governor: str, state_id: str, expected_version: int | None = None
    ) -> None:
        """Delete a state record (its event stream and snapshots are kept: they are the
        audit trail). ``StateNotFound`` if absent; ``VersionConflict`` if
        ``expected_version`` is given and differs."""
        await self.commit(governor, [Delete(state_id, expected_version)])

    async def list_states(
        self,
        governor: str,
        *,
        machine: str | None = None,
        state: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> AsyncIterator[str]:
        """Ids of the state records in ``governor``, ascending, read in pages of
        ``batch_size`` — only those of ``machine`` and/or in ``state`` when given (see
        :meth:`find_states`)."""
        gov = check_id(governor, "governor")
        machine = check_filter(machine, "machine")
        state = check_filter(state, "state")
        size = check_batch_size(batch_size)
        if machine is None and state is None:
            async for record_id in self.list_records(gov, kind=STATES):
                yield record_id
            return
        after = ""
        while True:
            page = await self._find_states(gov, machine, state, after, size)
            for record_id in page:
                yield record_id
            if len(page) < size:
                return
            after = page[-1]

    async def find_states(
        self,
        governor: str,
        *,
        machine: str | None = None,
        state: str | None = None,
        after: str = "",
        limit: int = DEFAULT_BATCH_SIZE,
    ) -> list[str]:
        """One page of a query: up to ``limit`` ids greater than ``after``, ascending, of
        the state records whose ``data`` names ``machine`` (``data["machine"]``) and/or
        ``state`` (``data["state"]``, an exact state path); ``None`` matches anything.
        Pass the last id of a page as ``after`` for the next one. Answered from an index
        kept with every write (:mod:`tai_fsm.stores.query`); each page is one consistent
        read, so an instance that changes state while you page is listed at most once."""
        gov = check_id(governor, "governor")
        machine = check_filter(machine, "machine")
        state = check_filter(state, "state")
        if not isinstance(after, str):
            raise InvalidInput(
                f"after must be a string (an id), got {type(after).__name__}", field="after"
            )
        size = check_version(limit, "limit", minimum=1)
        return await self._find_states(gov, machine, state, after, size)

    async def list_records(self, governor: str, *, kind: str) -> AsyncIterator[str]:
        """Ids of the records of ``kind`` in ``governor``, ascending, read in pages."""
        gov = check_id(governor, "governor")
        kind = check_id(kind, "record kind")
        after = ""
        while True:
            page = await self._list_records(gov, kind, after, DEFAULT_BATCH_SIZE)
            for record_id in page:
                yield record_id
            if len(page) < DEFAULT_BATCH_SIZE:
                return
            after = page[-1]

    async def list_governors(self) -> list[str]:
        """Governors holding any record, ascending."""
        return sorted(await self._list_governors())

    # ------------------------------------------------------------------ the commit
    async def commit(self, governor: str, ops: Sequence[Op]) -> CommitResult:
        """Commit ``ops`` (:mod:`tai_fsm.stores.ops`) atomically: all or none.

        Each operation's precondition is checked when the commit applies; the first that
        fails raises — ``VersionConflict(id, expected, actual)`` for a version,
        ``StateNotFound`` for a delete of an absent record, ``LockNotHeld`` for a stale
        fencing token — and nothing is written. A commit with appends whose events are
        already stored at the versions they asked for (a retry of a commit that landed) is
        recognised: nothing is written and ``already_applied`` is True."""
        gov = check_id(governor, "governor")
        prepared = prepare(ops, max_writes=self.max_commit_writes)
        return await self._commit(gov, prepared)

    async def append_events(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: StateSnapshot | None = None,
        token: str | None = None,
        prior: StateSnapshot | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically — a one-operation :meth:`commit`
        of :class:`~tai_fsm.stores.ops.Append` (see there for ``state``, ``token`` and
        ``prior``).

        ``expected_version`` is the stream head the caller saw (0 = empty stream); an event
        whose ``version`` is non-zero must already carry the number it gets. ``None``
        appends at the current head, recognised on retry by event id. On a head mismatch,
        the same event ids at those versions mean a retry that landed
        (``already_applied=True``); otherwise ``VersionConflict(stream_id, expected,
        actual)``."""
        result = await self.commit(
            governor, [Append(stream_id, events, expected_version, state, token, prior)]
        )
        first = result[0]
        return AppendResult(
            version=first.version, token=first.token, already_applied=first.already_applied
        )

    # ------------------------------------------------------------------ event streams
    async def read_events(
        self,
        governor: str,
        stream_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
        until: datetime | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> AsyncIterator[Event]:
        """Events of one stream with ``after_version < version <= up_to_version`` and
        ``timestamp <= until``, oldest first, fetched in batches of at most
        ``batch_size`` (bounded memory for any stream length). Each event's ``from_state``
        is the ``to_state`` of the event before it. A damaged or missing stored event
        raises ``IntegrityError`` naming stream and version."""
        bounds = check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        after, upper, cutoff, size = bounds.after, bounds.upper, bounds.cutoff, bounds.size
        if upper is not None and upper <= after:
            return
        decoder = EventDecoder(gov, stream)
        position = anchor(after) - 1 if after >= 1 else 0
        while True:
            page = await self._event_rows(gov, stream, position, upper, size)
            for version, ts, raw in page:
                if version <= after:
                    decoder.skip(raw, version)
                    continue
                if cutoff is not None and ts > cutoff:
                    decoder.skip(raw, version)
                    continue
                yield decoder.event(raw, version)
            if len(page) < size:
                return
            position = page[-1][0]

    async def read_event_span(
        self,
        governor: str,
        stream_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
        until: datetime | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> EventSpan:
        """Exactly the events :meth:`read_events` would yield (same filters), summarised
        as an ``EventSpan``: replay only needs the newest event's ``to_state``, so only the
        versions are read, and the newest event (with the few before it that a delta
        needs) is decoded."""
        bounds = check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        after, upper, cutoff, size = bounds.after, bounds.upper, bounds.cutoff, bounds.size
        if upper is not None and upper <= after:
            return EventSpan(0, 0, 0, None)
        count = first = last = 0
        position = after
        while True:
            versions = await self._event_versions(gov, stream, position, upper, cutoff, size)
            if versions:
                count += len(versions)
                first = first or versions[0]
                last = versions[-1]
            if len(versions) < size:
                break
            position = versions[-1]
        if not count:
            return EventSpan(0, 0, 0, None)
        return EventSpan(count, first, last, await self._decode_at(gov, stream, last))

    async def _decode_at(self, governor: str, stream_id: str, version: int) -> Event:
        """The event at ``version``, decoded with the rows before it that it needs."""
        decoder = EventDecoder(governor, stream_id)
        start = anchor(version - 1) - 1 if version > 1 else 0
        rows = await self._event_rows(governor, stream_id, start, version, FULL_EVERY + 1)
        for number, _ts, raw in rows:
            if number == version:
                return decoder.event(raw, version)
            decoder.skip(raw, number)
        raise IntegrityError(
            f"event {stream_id!r} version {version} disappeared while it was read "
            "(a concurrent compaction?); read again",
            stream_id=stream_id,
            version=version,
        )

    async def stream_version(self, governor: str, stream_id: str) -> int:
        """The stream's head version (0 when it has no events)."""
        return await self._stream_head(
            check_id(governor, "governor"), check_id(stream_id, "stream id")
        )

    async def iter_all_events(
        self, governor: str, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[Event]:
        """Every event of ``governor``, ordered by stream id then version, in batches."""
        check_id(governor, "governor")
        size = check_batch_size(batch_size)
        for stream_id in await self.list_streams(governor):
            async for event in self.read_events(governor, stream_id, batch_size=size):
                yield event

    async def list_streams(self, governor: str) -> list[str]:
        """Stream ids that hold at least one event in ``governor``, ascending."""
        return await self._list_streams(check_id(governor, "governor"))

    # ------------------------------------------------------------------ snapshots
    async def save_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, *, keep: int | None = None
    ) -> None:
        """Store ``snapshot`` as the stream's state at version ``snapshot.version`` (>= 1;
        saving the same version again replaces it). With ``keep``, only the newest ``keep``
        snapshots of the stream remain afterwards."""
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        check_snapshot(snapshot)
        check_snapshot_version(snapshot)
        keep_n = check_keep(keep)
        version = snapshot.version
        raw = encode_record(snapshot, stream, version, f"snapshot {stream!r}@{version}")
        await self._save_snapshot(gov, stream, version, raw, keep_n)

    async def load_snapshot(
        self, governor: str, stream_id: str, *, at_or_before: int | None = None
    ) -> StateSnapshot | None:
        """The newest snapshot (with ``version <= at_or_before`` when given), or None."""
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        limit = None if at_or_before is None else check_version(at_or_before, "at_or_before")
        found = await self._load_snapshot(gov, stream, limit)
        if found is None:
            return None
        version, raw = found
        return decode_record(raw, gov, stream, version, "snapshot")

    async def snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        """Versions of the stream's stored snapshots, ascending."""
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        return sorted(await self._snapshot_versions(gov, stream))

    async def compact_stream(
        self, governor: str, stream_id: str, *, up_to_version: int
    ) -> CleanupResult:
        """Delete events with ``version <= up_to_version`` and snapshots older than the
        newest snapshot at or before ``up_to_version``. Requires a snapshot at a version
        ``>= up_to_version`` (else ``InvalidInput``): recovery and ``state_at`` for every
        version from that snapshot on stay possible. The head event is never deleted, so
        the head version stays known; the first event kept is rewritten to hold its
        ``from_state`` and full data (the events it referred to are gone)."""
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        cut = check_version(up_to_version, "up_to_version", minimum=1)
        versions = await self._snapshot_versions(gov, stream)
        if not versions or max(versions) < cut:
            raise InvalidInput(
                f"compact_stream({stream!r}, up_to_version={cut}) needs a snapshot at "
                f"version {cut} or later; save one first",
                field="up_to_version",
            )
        head = await self._stream_head(gov, stream)
        last = min(cut, head - 1)
        rewrite: EventRow | None = None
        if last >= 1:
            kept = await self._decode_document_at(gov, stream, last + 1)
            if kept is not None:
                rewrite = kept
        return await self._compact(gov, stream, cut, last, rewrite)

    async def _decode_document_at(
        self, governor: str, stream_id: str, version: int
    ) -> EventRow | None:
        """The stored row of ``version`` rewritten self-contained (explicit ``from_state``,
        full data), or None when it is already or the stream has no such event."""
        decoder = EventDecoder(governor, stream_id)
        start = anchor(version - 1) - 1 if version > 1 else 0
        rows = await self._event_rows(governor, stream_id, start, version, FULL_EVERY + 1)
        for number, ts, raw in rows:
            if number == version:
                document = decoder.document(raw, version)
                event_id = str(document.get("id"))
                return (version, event_id, ts, encode_event_document(document, "event"))
            decoder.skip(raw, number)
        return None

    # ------------------------------------------------------------------ statistics
    async def get_stats(self, governor: str | None = None) -> StoreStats:
        """Exact counts for ``governor`` (all governors when None): state records, events,
        snapshots; ``max_version`` is the highest version of any state record or event;
        ``bytes`` is the size of the stored encoded records."""
        gov = None if governor is None else check_id(governor, "governor")
        return await self._stats(gov)

    # ------------------------------------------------------------------ backend hooks
    @abc.abstractmethod
    async def _read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        """The stored records of ``kind`` among ``record_ids`` (distinct, checked)."""

    @abc.abstractmethod
    async def _list_records(self, governor: str, kind: str, after: str, limit: int) -> list[str]:
        """Up to ``limit`` record ids of ``kind`` greater than ``after``, ascending."""

    async def _find_states(
        self, governor: str, machine: str | None, state: str | None, after: str, limit: int
    ) -> list[str]:
        """Up to ``limit`` ids ``> after`` of state records matching both filters (``None``
        = any), ascending. The default lists every id (:meth:`list_records`) and decodes
        each record (:func:`tai_fsm.stores.query.scan_states`) — correct for any store,
        wrappers included, and linear in the governor's size per page; backends override
        it with an index."""

        async def read_raw(ids: list[str]) -> dict[str, bytes]:
            rows = await self._read_records(governor, STATES, ids) if ids else {}
            return {rid: row.raw for rid, row in rows.items()}

        return await scan_states(
            aiter(self.list_records(governor, kind=STATES)),
            read_raw, machine, state, after, limit, DEFAULT_BATCH_SIZE,
        )

    @abc.abstractmethod
    async def _list_governors(self) -> list[str]:
        """Governors holding any record, event or snapshot."""

    @abc.abstractmethod
    async def _commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        """Commit checked operations all-or-none (see :mod:`tai_fsm.stores.planning`)."""

    @abc.abstractmethod
    async def _event_rows(
        self, governor: str, stream_id: str, after: int, upper: int | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        """Up to ``limit`` stored events ``(version, timestamp micros, JSON)`` with
        ``after < version <= upper`` (no upper bound when None), ascending."""

    async def _event_versions(
        self,
        governor: str,
        stream_id: str,
        after: int,
        upper: int | None,
        cutoff: int | None,
        limit: int,
    ) -> list[int]:
        """Up to ``limit`` versions ``> after`` (``<= upper``, timestamp ``<= cutoff``),
        ascending. Backends override this to read versions without the records."""
        position, found = after, list[int]()
        while len(found) < limit:
            rows = await self._event_rows(governor, stream_id, position, upper, limit)
            found.extend(v for v, ts, _ in rows if cutoff is None or ts <= cutoff)
            if len(rows) < limit:
                break
            position = rows[-1][0]
        return found[:limit]

    @abc.abstractmethod
    async def _stream_head(self, governor: str, stream_id: str) -> int:
        """The stream's head version (0 when it has no events)."""

    @abc.abstractmethod
    async def _list_streams(self, governor: str) -> list[str]:
        """Stream ids holding events, ascending."""

    @abc.abstractmethod
    async def _save_snapshot(
        self, governor: str, stream_id: str, version: int, raw: bytes, keep: int | None
    ) -> None:
        """Store (or replace) the snapshot at ``version``; then keep the newest ``keep``."""

    @abc.abstractmethod
    async def _load_snapshot(
        self, governor: str, stream_id: str, at_or_before: int | None
    ) -> tuple[int, bytes] | None:
        """``(version, JSON)`` of the newest snapshot (``<= at_or_before``), or None."""

    @abc.abstractmethod
    async def _snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        """Versions of the stream's snapshots."""

    @abc.abstractmethod
    async def _compact(
        self,
        governor: str,
        stream_id: str,
        cut: int,
        last: int,
        rewrite: EventRow | None,
    ) -> CleanupResult:
        """Delete the events ``<= last`` and the snapshots older than the newest one at or
        before ``cut``; replace the stored event ``rewrite[0]`` (the first kept) by
        ``rewrite`` first. Every intermediate state must stay readable."""

    @abc.abstractmethod
    async def _stats(self, governor: str | None) -> StoreStats:
        """Exact statistics (see :meth:`get_stats`)."""

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def check_expected(value: object) -> int | None:
        """``None`` or a version >= 0 (for backends and wrappers)."""
        return check_expected_version(value)
