"""An in-process store: the reference implementation of the Store contract.

``MemoryStore`` keeps every record as its encoded JSON bytes (so non-serialisable data fails
exactly as on disk, and ``get_stats().bytes`` is the real encoded size) and enforces the same
rules as every store: ids, the 1 MiB record limit, versions, all-or-nothing appends, retried
appends recognised by their event ids. Each operation runs under one ``asyncio.Lock`` and
never awaits while it mutates, so every call is atomic with respect to the others.

Nothing survives the process: use it for tests and for throw-away runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tai_fsm.errors import InvalidInput, StateNotFound, TaiFsmError, VersionConflict
from tai_fsm.records import (
    AppendResult,
    CleanupResult,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
)
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, EventSpan, Store
from tai_fsm.stores.common import (
    check_batch_size,
    check_events,
    check_expected_version,
    check_id,
    check_ids,
    check_keep,
    check_read,
    check_snapshot,
    check_version,
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
    micros,
)

__all__ = ["MemoryStore"]

_Key = tuple[str, str]


@dataclass
class _StoredEvent:
    event_id: str
    micros: int
    raw: bytes


@dataclass
class _Stream:
    """Events ``first .. head``, contiguous (compaction only removes a prefix)."""

    first: int = 1
    events: list[_StoredEvent] = field(default_factory=list)
    ids: dict[str, int] = field(default_factory=dict)

    @property
    def head(self) -> int:
        return self.first - 1 + len(self.events)

    def at(self, version: int) -> _StoredEvent:
        return self.events[version - self.first]


class MemoryStore(Store):
    """The Store contract in memory. ``MemoryStore()`` takes no arguments."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = asyncio.Lock()
        self._closed = False
        self._states: dict[_Key, tuple[int, bytes]] = {}
        self._streams: dict[_Key, _Stream] = {}
        self._snapshots: dict[_Key, dict[int, bytes]] = {}

    async def close(self) -> None:
        """Mark the store closed (idempotent); its data is dropped with the object."""
        self._closed = True

    def _open(self) -> None:
        if self._closed:
            raise TaiFsmError(f"{self.url} store is closed")

    # ------------------------------------------------------------------ state records
    async def read_state(self, governor: str, state_id: str) -> StoredState:
        check_id(governor, "governor")
        check_id(state_id, "state id")
        async with self._lock:
            self._open()
            found = self._states.get((governor, state_id))
        if found is None:
            raise StateNotFound(governor, state_id)
        version, raw = found
        return StoredState(
            snapshot=decode_snapshot(raw, governor, state_id, version), version=version
        )

    async def batch_read_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        check_id(governor, "governor")
        ids = check_ids(state_ids, "state id")
        async with self._lock:
            self._open()
            found = {
                sid: self._states[(governor, sid)] for sid in ids if (governor, sid) in self._states
            }
        return {
            sid: StoredState(snapshot=decode_snapshot(raw, governor, sid, v), version=v)
            for sid, (v, raw) in found.items()
        }

    async def write_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        *,
        expected_version: int | None,
    ) -> int:
        check_id(governor, "governor")
        check_id(state_id, "state id")
        check_snapshot(snapshot)
        expected = check_expected_version(expected_version)
        async with self._lock:
            self._open()
            current = self._states.get((governor, state_id), (0, b""))[0]
            if expected is not None and expected != current:
                raise VersionConflict(state_id, expected, current)
            version = current + 1
            raw = encode_snapshot(snapshot, version, f"state {state_id!r}")
            self._states[(governor, state_id)] = (version, raw)
        return version

    async def delete_state(
        self, governor: str, state_id: str, expected_version: int | None = None
    ) -> None:
        check_id(governor, "governor")
        check_id(state_id, "state id")
        expected = check_expected_version(expected_version)
        async with self._lock:
            self._open()
            found = self._states.get((governor, state_id))
            if found is None:
                raise StateNotFound(governor, state_id)
            if expected is not None and expected != found[0]:
                raise VersionConflict(state_id, expected, found[0])
            del self._states[(governor, state_id)]

    async def list_states(self, governor: str) -> AsyncIterator[str]:
        check_id(governor, "governor")
        async with self._lock:
            self._open()
            ids = sorted(sid for gov, sid in self._states if gov == governor)
        for sid in ids:
            yield sid

    async def list_governors(self) -> list[str]:
        async with self._lock:
            self._open()
            governors = {gov for gov, _ in self._states}
            governors.update(gov for gov, _ in self._streams)
            governors.update(gov for gov, _ in self._snapshots)
        return sorted(governors)

    # ------------------------------------------------------------------ event streams
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
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        expected = check_expected_version(expected_version)
        checked = check_events(stream_id, events, expected)
        if state is not None:
            check_snapshot(state, "state")
        key = (governor, stream_id)
        async with self._lock:
            self._open()
            stream = self._streams.get(key) or _Stream()
            head = stream.head
            ids = [event.id for event in checked]
            if expected is None:
                present = [stream.ids[i] for i in ids if i in stream.ids]
                if present:
                    if len(present) == len(ids):
                        return AppendResult(version=max(present), already_applied=True)
                    raise InvalidInput(
                        "some events of this append are already in stream "
                        f"{stream_id!r} and others are not",
                        field="events",
                    )
                if checked[0].version and checked[0].version != head + 1:
                    raise InvalidInput(
                        f"event {checked[0].id!r} carries version {checked[0].version} but "
                        f"would be appended as version {head + 1}",
                        field="events",
                    )
                base = head
            else:
                if head != expected:
                    if self._landed(stream, expected, ids):
                        return AppendResult(version=expected + len(ids), already_applied=True)
                    raise VersionConflict(stream_id, expected, head)
                if state is not None:
                    current = self._states.get(key, (0, b""))[0]
                    if current != expected:
                        raise VersionConflict(stream_id, expected, current)
                base = expected
            new_head = base + len(checked)
            encoded = [
                _StoredEvent(e.id, micros(e.timestamp), encode_event(e, stream_id, base + n))
                for n, e in enumerate(checked, start=1)
            ]
            state_raw = (
                encode_snapshot(state, new_head, f"state {stream_id!r}")
                if state is not None
                else None
            )
            # Everything is encoded and checked: now mutate (no await, no failure point).
            self._streams[key] = stream
            stream.events.extend(encoded)
            for n, stored in enumerate(encoded, start=1):
                stream.ids[stored.event_id] = base + n
            if state_raw is not None:
                self._states[key] = (new_head, state_raw)
        return AppendResult(version=new_head)

    @staticmethod
    def _landed(stream: _Stream, expected: int, ids: list[str]) -> bool:
        """True when versions ``expected+1 ..`` hold exactly these event ids."""
        if expected + len(ids) > stream.head or expected + 1 < stream.first:
            return False
        return all(
            stream.at(expected + n).event_id == event_id for n, event_id in enumerate(ids, start=1)
        )

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
        bounds = check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        position, upper, cutoff, size = bounds.after, bounds.upper, bounds.cutoff, bounds.size
        while True:
            batch: list[tuple[int, bytes]] = []
            async with self._lock:
                self._open()
                stream = self._streams.get((governor, stream_id))
                if stream is None:
                    return
                last = stream.head if upper is None else min(upper, stream.head)
                version = max(position + 1, stream.first)
                while version <= last and len(batch) < size:
                    stored = stream.at(version)
                    if cutoff is None or stored.micros <= cutoff:
                        batch.append((version, stored.raw))
                    version += 1
                position = version - 1
                exhausted = version > last
            for number, raw in batch:
                yield decode_event(raw, governor, stream_id, number)
            if exhausted:
                return

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
        bounds = check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        position, upper, cutoff = bounds.after, bounds.upper, bounds.cutoff
        async with self._lock:
            self._open()
            stream = self._streams.get((governor, stream_id))
            if stream is None:
                return EventSpan(0, 0, 0, None)
            last = stream.head if upper is None else min(upper, stream.head)
            versions = [
                version
                for version in range(max(position + 1, stream.first), last + 1)
                if cutoff is None or stream.at(version).micros <= cutoff
            ]
            if not versions:
                return EventSpan(0, 0, 0, None)
            raw = stream.at(versions[-1]).raw
        newest = decode_event(raw, governor, stream_id, versions[-1])
        return EventSpan(len(versions), versions[0], versions[-1], newest)

    async def stream_version(self, governor: str, stream_id: str) -> int:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        async with self._lock:
            self._open()
            stream = self._streams.get((governor, stream_id))
            return 0 if stream is None else stream.head

    async def iter_all_events(
        self, governor: str, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[Event]:
        check_id(governor, "governor")
        check_batch_size(batch_size)
        for stream_id in await self.list_streams(governor):
            async for event in self.read_events(governor, stream_id, batch_size=batch_size):
                yield event

    async def list_streams(self, governor: str) -> list[str]:
        check_id(governor, "governor")
        async with self._lock:
            self._open()
            return sorted(sid for gov, sid in self._streams if gov == governor)

    # ------------------------------------------------------------------ snapshots
    async def save_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, *, keep: int | None = None
    ) -> None:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        check_snapshot(snapshot)
        version = check_version(snapshot.version, "snapshot.version", minimum=1)
        keep_n = check_keep(keep)
        raw = encode_snapshot(snapshot, version, f"snapshot {stream_id!r}@{version}")
        async with self._lock:
            self._open()
            stored = self._snapshots.setdefault((governor, stream_id), {})
            stored[version] = raw
            if keep_n is not None:
                for old in sorted(stored)[:-keep_n]:
                    del stored[old]

    async def load_snapshot(
        self, governor: str, stream_id: str, *, at_or_before: int | None = None
    ) -> StateSnapshot | None:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        limit = None if at_or_before is None else check_version(at_or_before, "at_or_before")
        async with self._lock:
            self._open()
            stored = self._snapshots.get((governor, stream_id), {})
            versions = [v for v in stored if limit is None or v <= limit]
            if not versions:
                return None
            version = max(versions)
            raw = stored[version]
        return decode_snapshot(raw, governor, stream_id, version, "snapshot")

    async def snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        async with self._lock:
            self._open()
            return sorted(self._snapshots.get((governor, stream_id), {}))

    async def compact_stream(
        self, governor: str, stream_id: str, *, up_to_version: int
    ) -> CleanupResult:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        cut = check_version(up_to_version, "up_to_version", minimum=1)
        key = (governor, stream_id)
        async with self._lock:
            self._open()
            snapshots = self._snapshots.get(key, {})
            if not any(v >= cut for v in snapshots):
                raise InvalidInput(
                    f"compact_stream({stream_id!r}, up_to_version={cut}) needs a snapshot at "
                    f"version {cut} or later; save one first",
                    field="up_to_version",
                )
            covering = [v for v in snapshots if v <= cut]
            dropped_snapshots = [v for v in snapshots if covering and v < max(covering)]
            recovered = sum(len(snapshots[v]) for v in dropped_snapshots)
            for version in dropped_snapshots:
                del snapshots[version]
            deleted = 0
            stream = self._streams.get(key)
            if stream is not None:
                # Remove a prefix, never the head event.
                last = min(cut, stream.head - 1)
                count = max(0, last - stream.first + 1)
                for stored in stream.events[:count]:
                    recovered += len(stored.raw)
                    del stream.ids[stored.event_id]
                del stream.events[:count]
                stream.first += count
                deleted = count
        return CleanupResult(
            deleted_events=deleted,
            deleted_snapshots=len(dropped_snapshots),
            recovered_bytes=recovered,
        )

    # ------------------------------------------------------------------ statistics
    async def get_stats(self, governor: str | None = None) -> StoreStats:
        """Counts of state records, events and snapshots; ``max_version`` is the highest
        version of any state record or event; ``bytes`` the encoded size of all three."""
        if governor is not None:
            check_id(governor, "governor")

        def mine(key: _Key) -> bool:
            return governor is None or key[0] == governor

        async with self._lock:
            self._open()
            states = [value for key, value in self._states.items() if mine(key)]
            streams = [value for key, value in self._streams.items() if mine(key)]
            snapshots = [value for key, value in self._snapshots.items() if mine(key)]
            return StoreStats(
                total_states=len(states),
                total_events=sum(len(s.events) for s in streams),
                total_snapshots=sum(len(s) for s in snapshots),
                max_version=max(
                    [v for v, _ in states] + [s.head for s in streams if s.events], default=0
                ),
                bytes=sum(len(raw) for _, raw in states)
                + sum(len(e.raw) for s in streams for e in s.events)
                + sum(len(raw) for s in snapshots for raw in s.values()),
            )
