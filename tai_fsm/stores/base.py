"""The Store contract every backend implements (memory, sqlite, firestore, third-party).

A store holds, per governor (a namespace), three kinds of records (DESIGN.md §3):

* **state records** — the current state of one id, with a version that starts at 1 and grows
  by exactly 1 per write;
* **event streams** — append-only, one per stream id (for a runtime instance the stream id is
  the instance id), versions 1, 2, 3, ... with no gap and no duplicate;
* **snapshots** — a stream's full state at one of its versions, newest K kept.

The commit of a transition is ONE call: :meth:`Store.append_events` with ``state=`` appends the
events and writes the state record atomically, checking ``expected_version``.

Every id is checked by :func:`tai_fsm.ids.validate_id` and every record by the 1 MiB limit
(:mod:`tai_fsm.codec`) *before* anything is written; bad input raises a ``TaiFsmError``
subclass and leaves the store unchanged. Every backend must pass ``tai_fsm.testing``'s
contract suite unchanged.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self

from tai_fsm.errors import InvalidInput, StateNotFound
from tai_fsm.ids import validate_id
from tai_fsm.records import (
    AppendResult,
    ChangeMetadata,
    CleanupResult,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
    ensure_utc,
    utc_now,
)

__all__ = ["DEFAULT_BATCH_SIZE", "EventSpan", "Store", "replay_events", "span_of"]

DEFAULT_BATCH_SIZE = 1000


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


@dataclass(frozen=True, slots=True)
class EventSpan:
    """A run of one stream's events, summarised for replay: how many there are, their first
    and last version, and the newest one decoded (``None`` when the run is empty)."""

    count: int
    first_version: int
    last_version: int
    last: Event | None

    @property
    def dense(self) -> bool:
        """True when no version is missing between the first and the last."""
        return self.count == 0 or self.last_version - self.first_version + 1 == self.count


async def span_of(
    events: AsyncIterator[Event], *, stop_after: datetime | None = None
) -> EventSpan:
    """Summarise ``events`` (one stream, version order) as an ``EventSpan``; with
    ``stop_after``, stop at the first event later than that time."""
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


class Store(abc.ABC):
    """Async store contract. Implementations are safe for concurrent use from one event
    loop; cross-process/cross-node safety comes from the backend's own atomicity (SQLite
    transactions, Firestore preconditions), never from in-process locks alone."""

    #: The URL this store was opened with (``memory://``, ``sqlite:///path``, ...).
    url: str = ""

    # ------------------------------------------------------------------ lifecycle
    async def close(self) -> None:  # noqa: B027 - optional hook, default no-op
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

    # ------------------------------------------------------------------ state records
    @abc.abstractmethod
    async def read_state(self, governor: str, state_id: str) -> StoredState:
        """The current state record with its version and concurrency token.
        Raises ``StateNotFound`` when absent."""

    @abc.abstractmethod
    async def batch_read_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        """Several state records in one round trip; absent ids are left out of the result."""

    @abc.abstractmethod
    async def write_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        *,
        expected_version: int | None,
    ) -> int:
        """Write a state record and return its new version (previous + 1, or 1 when new).

        ``expected_version=None`` writes unconditionally; an int must equal the current
        version (0 = must not exist) or ``VersionConflict(state_id, expected, actual)`` is
        raised and nothing is written. The stored snapshot's ``version`` is the new version."""

    @abc.abstractmethod
    async def delete_state(
        self, governor: str, state_id: str, expected_version: int | None = None
    ) -> None:
        """Delete a state record (its event stream and snapshots are kept: they are the
        audit trail). ``StateNotFound`` if absent; ``VersionConflict`` if
        ``expected_version`` is given and differs."""

    @abc.abstractmethod
    def list_states(self, governor: str) -> AsyncIterator[str]:
        """Ids of the state records in ``governor``, ascending."""

    @abc.abstractmethod
    async def list_governors(self) -> list[str]:
        """Governors holding any record, ascending."""

    # ------------------------------------------------------------------ event streams
    @abc.abstractmethod
    async def append_events(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: StateSnapshot | None = None,
        token: str | None = None,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically — all or none.

        * ``expected_version`` is the stream head the caller saw (0 = empty stream). The
          events get versions ``expected_version + 1 ...``; an event whose ``version`` is
          non-zero must already carry exactly that number (else ``InvalidInput``) and its
          ``stream_id`` must be ``stream_id``. ``None`` appends at the current head (no
          concurrency check; used by ``log_event``).
        * ``state``: when given, the state record ``stream_id`` is written in the SAME atomic
          commit with version = new head, and its current version must equal
          ``expected_version`` (absent counts as 0). ``token`` is the ``StoredState.token`` /
          ``AppendResult.token`` from the caller's last read or commit of that record; stores
          that need it (Firestore) use it to commit in one round trip without reading, and
          read first when it is ``None``.
        * On a head mismatch: if the events already stored at those versions carry the same
          ids (a retry of a call that landed), nothing is written and the result has
          ``already_applied=True``; otherwise ``VersionConflict(stream_id, expected,
          actual_head)`` and nothing is written. With ``expected_version=None`` a retry is
          recognised by an event id already present in the stream.
        * Returns the new head and the new state record's token."""

    @abc.abstractmethod
    def read_events(
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
        ``batch_size`` (bounded memory for any stream length)."""

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
        """Exactly the events :meth:`read_events` would yield (same filters, same bounded
        batches), summarised as an ``EventSpan``. Replay sets the state from each event's
        ``to_state`` in turn, so only the newest event's content matters: backends override
        this to read versions only and decode just that one."""
        return await span_of(self.read_events(
            governor, stream_id, after_version=after_version, up_to_version=up_to_version,
            until=until, batch_size=batch_size,
        ))

    @abc.abstractmethod
    async def stream_version(self, governor: str, stream_id: str) -> int:
        """The stream's head version (0 when it has no events)."""

    @abc.abstractmethod
    def iter_all_events(
        self, governor: str, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[Event]:
        """Every event of ``governor``, ordered by stream id then version, in batches."""

    @abc.abstractmethod
    async def list_streams(self, governor: str) -> list[str]:
        """Stream ids that hold at least one event in ``governor``, ascending."""

    # ------------------------------------------------------------------ snapshots
    @abc.abstractmethod
    async def save_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, *, keep: int | None = None
    ) -> None:
        """Store ``snapshot`` as the stream's state at version ``snapshot.version`` (>= 1;
        saving the same version again replaces it). With ``keep``, only the newest ``keep``
        snapshots of the stream remain afterwards."""

    @abc.abstractmethod
    async def load_snapshot(
        self, governor: str, stream_id: str, *, at_or_before: int | None = None
    ) -> StateSnapshot | None:
        """The newest snapshot (with ``version <= at_or_before`` when given), or None."""

    @abc.abstractmethod
    async def snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        """Versions of the stream's stored snapshots, ascending."""

    @abc.abstractmethod
    async def compact_stream(
        self, governor: str, stream_id: str, *, up_to_version: int
    ) -> CleanupResult:
        """Delete events with ``version <= up_to_version`` and snapshots older than the
        newest snapshot at or before ``up_to_version``. Requires a snapshot at a version
        ``>= up_to_version`` (else ``InvalidInput``): recovery and ``state_at`` for every
        version from that snapshot on stay possible. The head event is never deleted, so
        the head version stays known."""

    # ------------------------------------------------------------------ statistics
    @abc.abstractmethod
    async def get_stats(self, governor: str | None = None) -> StoreStats:
        """Exact counts for ``governor`` (all governors when None); ``bytes`` is the size of
        the stored encoded records."""

    # ------------------------------------------------------------------ seed-compatible API
    async def save_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        metadata: ChangeMetadata | None = None,
    ) -> int:
        """Write unconditionally; returns the new version (1 for a new record)."""
        if metadata is not None:
            snapshot = snapshot.model_copy(update={"metadata": metadata})
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
        if metadata is not None:
            new = new.model_copy(update={"metadata": metadata})
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
        """Append one event at the head of ``event.stream_id``; returns it with its version."""
        stream_id = event.stream_id or event.to_state.id
        result = await self.append_events(governor, stream_id, [event], expected_version=None)
        if result.already_applied:
            async for stored in self.read_events(governor, stream_id):
                if stored.id == event.id:
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
        if snapshot.version < 1:
            snapshot = snapshot.model_copy(update={"version": 1})
        await self.save_snapshot(governor, state_id, snapshot)

    async def cleanup_old_data(
        self, governor: str, older_than: timedelta
    ) -> CleanupResult:
        """Compact every stream of ``governor`` up to its newest snapshot whose events are all
        older than ``now - older_than``. Never removes what recovery, or ``state_at`` for a
        time after the cut, needs."""
        validate_id(governor, "governor")
        if older_than < timedelta(0):
            raise InvalidInput("older_than must not be negative", field="older_than")
        cutoff = utc_now() - older_than
        total = CleanupResult()
        for stream_id in await self.list_streams(governor):
            cut = 0
            for version in reversed(await self.snapshot_versions(governor, stream_id)):
                newest_covered: Event | None = None
                async for event in self.read_events(
                    governor, stream_id, after_version=version - 1, up_to_version=version
                ):
                    newest_covered = event
                if newest_covered is not None and newest_covered.timestamp < cutoff:
                    cut = version
                    break
            if cut:
                done = await self.compact_stream(governor, stream_id, up_to_version=cut)
                total = CleanupResult(
                    deleted_events=total.deleted_events + done.deleted_events,
                    deleted_snapshots=total.deleted_snapshots + done.deleted_snapshots,
                    recovered_bytes=total.recovered_bytes + done.recovered_bytes,
                )
        return total
