"""The seed-compatible store API (the calls the original tai-state exposes), written once on
top of the Store contract: ``save_state``, ``get_state``, ``update_state``, ``exists``,
``batch_get_states``, ``log_event``, ``get_all_events``, ``replay_events``,
``create_snapshot``, ``cleanup_old_data``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from tai_fsm.errors import InvalidInput, StateNotFound
from tai_fsm.records import (
    ChangeMetadata,
    CleanupResult,
    Event,
    StateSnapshot,
    utc_now,
)
from tai_fsm.stores.common import check_id
from tai_fsm.stores.spans import EventSpan, replay_events

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tai_fsm.records import AppendResult, StoredState

__all__ = ["SeedAPI"]


@dataclass(frozen=True, slots=True)
class _Cut:
    stream_id: str
    version: int


class SeedAPI:
    """Mixed into :class:`~tai_fsm.stores.base.Store`: the seed's calls, all in terms of the
    Store contract (so every backend has them, checked the same way)."""

    if TYPE_CHECKING:  # the Store calls these are written in (defined by Store itself)
        read_state: Callable[..., Awaitable[StoredState]]
        write_state: Callable[..., Awaitable[int]]
        batch_read_states: Callable[..., Awaitable[dict[str, StoredState]]]
        append_events: Callable[..., Awaitable[AppendResult]]
        read_events: Callable[..., AsyncIterator[Event]]
        read_event_span: Callable[..., Awaitable[EventSpan]]
        iter_all_events: Callable[..., AsyncIterator[Event]]
        list_streams: Callable[..., Awaitable[list[str]]]
        snapshot_versions: Callable[..., Awaitable[list[int]]]
        save_snapshot: Callable[..., Awaitable[None]]
        compact_stream: Callable[..., Awaitable[CleanupResult]]

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
        return await self.write_state(governor, state_id, snapshot, expected_version=None)

    async def get_state(self, governor: str, state_id: str) -> tuple[StateSnapshot, int]:
        """``(snapshot, version)``; ``StateNotFound`` when absent."""
        stored = await self.read_state(governor, state_id)
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
        return await self.write_state(governor, state_id, new, expected_version=expected_version)

    async def exists(self, governor: str, state_id: str) -> bool:
        try:
            await self.read_state(governor, state_id)
        except StateNotFound:
            return False
        return True

    async def batch_get_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, tuple[StateSnapshot, int]]:
        found = await self.batch_read_states(governor, state_ids)
        return {sid: (s.snapshot, s.version) for sid, s in found.items()}

    async def log_event(self, governor: str, event: Event) -> Event:
        """Append one event at the head of ``event.stream_id`` (default: ``to_state.id``);
        returns it as stored (version assigned)."""
        if not isinstance(event, Event):
            raise InvalidInput(
                f"log_event needs an Event, got {type(event).__name__}", field="event"
            )
        stream_id = event.stream_id or event.to_state.id
        result = await self.append_events(governor, stream_id, [event], expected_version=None)
        async for stored in self.read_events(
            governor, stream_id, after_version=result.version - 1, up_to_version=result.version
        ):
            return stored
        return event.model_copy(update={"version": result.version, "stream_id": stream_id})

    async def get_all_events(self, governor: str) -> list[Event]:
        """Every event of ``governor`` (stream id, then version order). Loads all into memory:
        prefer ``iter_all_events`` for large governors."""
        return [event async for event in self.iter_all_events(governor)]

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
        await self.save_snapshot(governor, state_id, snapshot)

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
        for stream_id in await self.list_streams(governor):
            for version in reversed(await self.snapshot_versions(governor, stream_id)):
                span = await self.read_event_span(
                    governor, stream_id, after_version=version - 1, up_to_version=version
                )
                if span.last is not None and span.last.timestamp < cutoff:
                    cuts.append(_Cut(stream_id, version))
                    break
        total = CleanupResult()
        for cut in cuts:
            done = await self.compact_stream(governor, cut.stream_id, up_to_version=cut.version)
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
