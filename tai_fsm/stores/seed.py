"""The seed-compatible store API (the calls the original tai-state exposes), written once on
top of the Store contract: ``save_state``, ``get_state``, ``update_state``, ``exists``,
``batch_get_states``, ``log_event``, ``get_all_events``, ``replay_events``,
``create_snapshot``, ``cleanup_old_data``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from tai_fsm.errors import InvalidInput, StateNotFound
from tai_fsm.records import (
    ChangeMetadata,
    CleanupResult,
    Event,
    StateSnapshot,
    ensure_utc,
    utc_now,
)
from tai_fsm.stores.common import check_id

if TYPE_CHECKING:
    from tai_fsm.stores.base import EventSpan, Store

__all__ = ["SeedAPI", "replay_events", "span_of"]


def replay_events(events: Iterable[Event], until: datetime | None = None) -> StateSnapshot:
    """The state after ``events`` (ordered by version within a stream), ignoring events
    later than ``until``. Raises ``InvalidInput`` when no event qualifies."""
    cutoff = ensure_utc(until, "until") if until is not None else None
    last: Event | None = None
    for event in sorted(events, key=lambda e: (e.stream_id, e.version, e.timestamp)):
        if cutoff is not None and event.timestamp > cutoff:
            continue
        if last is None or (event.version, event.timestamp) >= (last.version, last.timestamp):
            last = event
    if last is None:
        raise InvalidInput("replay_events needs at least one event at or before 'until'")
    return last.to_state.model_copy(update={"version": last.version or last.to_state.version})


async def span_of(
    events: AsyncIterator[Event], *, stop_after: datetime | None = None
) -> EventSpan:
    """Summarise ``events`` (one stream, version order) as an ``EventSpan``; with
    ``stop_after``, stop at the first event later than that time."""
    from tai_fsm.stores.base import EventSpan

    count = first = last_version = 0
    last: Event | None = None
    async for event in events:
        if stop_after is not None and event.timestamp > stop_after:
            break
        count += 1
        first = first or event.version
        last_version = event.version
        last = event
    return EventSpan(count, first, last_version, last)


def _store(api: SeedAPI) -> Store:
    return cast("Store", api)


@dataclass(frozen=True, slots=True)
class _Cut:
    stream_id: str
    version: int


class SeedAPI:
    """Mixed into :class:`~tai_fsm.stores.base.Store`: the seed's calls, all in terms of the
    Store contract (so every backend has them, checked the same way)."""

    async def save_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        metadata: ChangeMetadata | None = None,
    ) -> int:
        """Write unconditionally; returns the new version (1 for a new record)."""
        if metadata is not None:
            snapshot = _with_metadata(snapshot, metadata)
        return await _store(self).write_state(governor, state_id, snapshot, expected_version=None)

    async def get_state(self, governor: str, state_id: str) -> tuple[StateSnapshot, int]:
        """``(snapshot, version)``; ``StateNotFound`` when absent."""
        stored = await _store(self).read_state(governor, state_id)
        return stored.snapshot, stored.version

    async def update_state(
        self,
        governor: str,
        state_id: str,
        new: StateSnapshot,
        expected_version: int,
        metadata: ChangeMetadata | None = None,
    ) -> int:
        """Conditional write: ``VersionConflict`` unless the record is at
        ``expected_version``; returns ``expected_version + 1``."""
        if expected_version is None:
            raise InvalidInput("update_state needs an expected_version", field="expected_version")
        if metadata is not None:
            new = _with_metadata(new, metadata)
        store = _store(self)
        return await store.write_state(governor, state_id, new, expected_version=expected_version)

    async def exists(self, governor: str, state_id: str) -> bool:
        try:
            await _store(self).read_state(governor, state_id)
        except StateNotFound:
            return False
        return True

    async def batch_get_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, tuple[StateSnapshot, int]]:
        found = await _store(self).batch_read_states(governor, state_ids)
        return {sid: (s.snapshot, s.version) for sid, s in found.items()}

    async def log_event(self, governor: str, event: Event) -> Event:
        """Append one event at the head of ``event.stream_id`` (default: ``to_state.id``);
        returns it as stored (version assigned)."""
        if not isinstance(event, Event):
            raise InvalidInput(
                f"log_event needs an Event, got {type(event).__name__}", field="event"
            )
        stream_id = event.stream_id or event.to_state.id
        store = _store(self)
        result = await store.append_events(governor, stream_id, [event], expected_version=None)
        async for stored in _store(self).read_events(
            governor, stream_id, after_version=result.version - 1, up_to_version=result.version
        ):
            return stored
        return event.model_copy(update={"version": result.version, "stream_id": stream_id})

    async def get_all_events(self, governor: str) -> list[Event]:
        """Every event of ``governor`` (stream id, then version order). Loads all into memory:
        prefer ``iter_all_events`` for large governors."""
        return [event async for event in _store(self).iter_all_events(governor)]

    @staticmethod
    async def replay_events(
        events: Iterable[Event], until: datetime | None = None
    ) -> StateSnapshot:
        """The state after ``events`` as of ``until`` (see :func:`replay_events`)."""
        return replay_events(events, until)

    async def create_snapshot(
        self, governor: str, state_id: str, snapshot: StateSnapshot
    ) -> None:
        """Store a snapshot at ``snapshot.version`` (at least 1)."""
        if isinstance(snapshot, StateSnapshot) and snapshot.version < 1:
            snapshot = snapshot.model_copy(update={"version": 1})
        await _store(self).save_snapshot(governor, state_id, snapshot)

    async def cleanup_old_data(
        self, governor: str, older_than: timedelta
    ) -> CleanupResult:
        """Compact every stream of ``governor`` up to its newest snapshot whose events are all
        older than ``now - older_than``. Never removes what recovery, or ``state_at`` for a
        time after the cut, needs."""
        check_id(governor, "governor")
        if not isinstance(older_than, timedelta):
            raise InvalidInput(
                f"older_than must be a timedelta, got {type(older_than).__name__}",
                field="older_than",
            )
        if older_than < timedelta(0):
            raise InvalidInput("older_than must not be negative", field="older_than")
        cutoff = utc_now() - older_than
        cuts: list[_Cut] = []
        for stream_id in await _store(self).list_streams(governor):
            for version in reversed(await _store(self).snapshot_versions(governor, stream_id)):
                span = await _store(self).read_event_span(
                    governor, stream_id, after_version=version - 1, up_to_version=version
                )
                if span.last is not None and span.last.timestamp < cutoff:
                    cuts.append(_Cut(stream_id, version))
                    break
        total = CleanupResult()
        for cut in cuts:
            store = _store(self)
            done = await store.compact_stream(governor, cut.stream_id, up_to_version=cut.version)
            total = CleanupResult(
                deleted_events=total.deleted_events + done.deleted_events,
                deleted_snapshots=total.deleted_snapshots + done.deleted_snapshots,
                recovered_bytes=total.recovered_bytes + done.recovered_bytes,
            )
        return total


def _with_metadata(snapshot: StateSnapshot, metadata: ChangeMetadata) -> StateSnapshot:
    if not isinstance(metadata, ChangeMetadata):
        raise InvalidInput(
            f"metadata must be a ChangeMetadata, got {type(metadata).__name__}", field="metadata"
        )
    if not isinstance(snapshot, StateSnapshot):
        raise InvalidInput(
            f"snapshot must be a StateSnapshot, got {type(snapshot).__name__}", field="snapshot"
        )
    return snapshot.model_copy(update={"metadata": metadata})
