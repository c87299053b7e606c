"""An in-process store: the reference implementation of the Store contract.

``MemoryStore`` keeps every record as its encoded JSON bytes (so non-serialisable data fails
exactly as on disk, and ``get_stats().bytes`` is the real encoded size) and gets every rule
from the ``Store`` base class. Each hook runs without awaiting while it reads or mutates,
under one ``threading.Lock`` (cheap, and safe if a store is shared across event loops), so
every commit is atomic with respect to every other call.

Nothing survives the process: use it for tests and for throw-away runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from tai_fsm.errors import TaiFsmError, VersionConflict
from tai_fsm.records import CleanupResult, StoreStats
from tai_fsm.stores.base import RawRecord, Store
from tai_fsm.stores.ops import LOCKS, STATES, CommitResult
from tai_fsm.stores.planning import (
    Current,
    EventRow,
    Prepared,
    fencing_token_of,
    landed_ranges,
    needs,
    plan,
    recognise,
)
from tai_fsm.stores.query import Index, matches

__all__ = ["MemoryStore"]


@dataclass
class _Stream:
    """Events ``first .. head``, contiguous (compaction only removes a prefix)."""

    first: int = 1
    rows: list[EventRow] = field(default_factory=list)

    @property
    def head(self) -> int:
        return self.first - 1 + len(self.rows)

    def at(self, version: int) -> EventRow:
        return self.rows[version - self.first]


class MemoryStore(Store):
    """The Store contract in memory. ``MemoryStore()`` takes no arguments."""

    def __init__(self) -> None:
        self.url = "memory://"
        self._lock = threading.Lock()
        self._closed = False
        self._records: dict[tuple[str, str, str], tuple[int, bytes]] = {}
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._snapshots: dict[tuple[str, str], dict[int, bytes]] = {}
        #: (governor, id) -> (machine, state) of every state record: the query index
        self._index: dict[tuple[str, str], Index] = {}

    async def close(self) -> None:
        """Mark the store closed (idempotent); its data is dropped with the object."""
        self._closed = True

    def _open(self) -> None:
        if self._closed:
            raise TaiFsmError(f"{self.url} store is closed")

    # ------------------------------------------------------------------ records
    async def _read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        with self._lock:
            self._open()
            found = {rid: self._records.get((governor, kind, rid)) for rid in record_ids}
        return {rid: RawRecord(v[0], v[1]) for rid, v in found.items() if v is not None}

    async def _list_records(self, governor: str, kind: str, after: str, limit: int) -> list[str]:
        with self._lock:
            self._open()
            ids = sorted(
                rid
                for gov, k, rid in self._records
                if gov == governor and k == kind and rid > after
            )
        return ids[:limit]

    async def _find_states(
        self, governor: str, machine: str | None, state: str | None, after: str, limit: int
    ) -> list[str]:
        """A scan of the index beside the records (no record is decoded)."""
        with self._lock:
            self._open()
            ids = sorted(
                rid for (gov, rid), index in self._index.items()
                if gov == governor and rid > after and matches(index, machine, state)
            )
        return ids[:limit]

    async def _list_governors(self) -> list[str]:
        with self._lock:
            self._open()
            governors = {key[0] for key in self._records}
            governors.update(gov for gov, _ in self._streams)
            governors.update(gov for gov, _ in self._snapshots)
        return sorted(governors)

    # ------------------------------------------------------------------ the commit
    async def _commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        with self._lock:
            self._open()
            wanted = needs(prepared)
            current = Current()
            for stream_id in wanted.streams:
                stream = self._streams.get((governor, stream_id))
                current.heads[stream_id] = 0 if stream is None else stream.head
            for kind, record_id in wanted.records:
                found = self._records.get((governor, kind, record_id))
                current.versions[(kind, record_id)] = 0 if found is None else found[0]
            for resource in wanted.fences:
                lease = self._records.get((governor, LOCKS, resource))
                current.fences[resource] = None if lease is None else fencing_token_of(lease[1])
            for stream_id, ids in wanted.ids.items():
                stream = self._streams.get((governor, stream_id))
                rows = [] if stream is None else stream.rows
                wanted_ids = set(ids)
                current.found_ids[stream_id] = {
                    row[1]: row[0] for row in rows if row[1] in wanted_ids
                }
            try:
                decided = plan(governor, prepared, current)
            except VersionConflict:
                stored: dict[str, list[str]] = {}
                for stream_id, first, last in landed_ranges(prepared):
                    stream = self._streams.get((governor, stream_id))
                    stored[stream_id] = [] if stream is None else [
                        stream.at(v)[1] for v in range(max(first, stream.first), last + 1)
                        if v <= stream.head
                    ]
                landed = recognise(prepared, stored, {})
                if landed is not None:
                    return landed
                raise
            # Everything is decided and encoded: now mutate (no await, no failure point).
            for stream_id, rows in decided.events:
                stream = self._streams.setdefault((governor, stream_id), _Stream())
                stream.rows.extend(rows)
            for kind, record_id, version, raw in decided.puts:
                self._records[(governor, kind, record_id)] = (version, raw)
                if kind == STATES:
                    self._index[(governor, record_id)] = decided.index(kind, record_id)
            for kind, record_id in decided.deletes:
                del self._records[(governor, kind, record_id)]
                if kind == STATES:
                    del self._index[(governor, record_id)]
        return decided.result

    # ------------------------------------------------------------------ event streams
    async def _event_rows(
        self, governor: str, stream_id: str, after: int, upper: int | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        with self._lock:
            self._open()
            stream = self._streams.get((governor, stream_id))
            if stream is None:
                return []
            last = stream.head if upper is None else min(upper, stream.head)
            start = max(after + 1, stream.first)
            stop = min(last, start + limit - 1)
            return [(v, ts, raw) for v, _, ts, raw in
                    stream.rows[start - stream.first : stop - stream.first + 1]]

    async def _event_versions(
        self,
        governor: str,
        stream_id: str,
        after: int,
        upper: int | None,
        cutoff: int | None,
        limit: int,
    ) -> list[int]:
        with self._lock:
            self._open()
            stream = self._streams.get((governor, stream_id))
            if stream is None:
                return []
            last = stream.head if upper is None else min(upper, stream.head)
            found: list[int] = []
            for version in range(max(after + 1, stream.first), last + 1):
                if cutoff is None or stream.at(version)[2] <= cutoff:
                    found.append(version)
                    if len(found) == limit:
                        break
            return found

    async def _stream_head(self, governor: str, stream_id: str) -> int:
        with self._lock:
            self._open()
            stream = self._streams.get((governor, stream_id))
            return 0 if stream is None else stream.head

    async def _list_streams(self, governor: str) -> list[str]:
        with self._lock:
            self._open()
            return sorted(sid for gov, sid in self._streams if gov == governor)

    # ------------------------------------------------------------------ snapshots
    async def _save_snapshot(
        self, governor: str, stream_id: str, version: int, raw: bytes, keep: int | None
    ) -> None:
        with self._lock:
            self._open()
            stored = self._snapshots.setdefault((governor, stream_id), {})
            stored[version] = raw
            if keep is not None:
                for old in sorted(stored)[:-keep]:
                    del stored[old]

    async def _load_snapshot(
        self, governor: str, stream_id: str, at_or_before: int | None
    ) -> tuple[int, bytes] | None:
        with self._lock:
            self._open()
            stored = self._snapshots.get((governor, stream_id), {})
            versions = [v for v in stored if at_or_before is None or v <= at_or_before]
            if not versions:
                return None
            version = max(versions)
            return version, stored[version]

    async def _snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        with self._lock:
            self._open()
            return sorted(self._snapshots.get((governor, stream_id), {}))

    async def _compact(
        self,
        governor: str,
        stream_id: str,
        cut: int,
        last: int,
        rewrite: EventRow | None,
    ) -> CleanupResult:
        with self._lock:
            self._open()
            key = (governor, stream_id)
            snapshots = self._snapshots.get(key, {})
            covering = [v for v in snapshots if v <= cut]
            dropped = [v for v in snapshots if covering and v < max(covering)]
            recovered = sum(len(snapshots[v]) for v in dropped)
            for version in dropped:
                del snapshots[version]
            deleted = 0
            stream = self._streams.get(key)
            if stream is not None and last >= stream.first:
                if rewrite is not None and stream.first <= rewrite[0] <= stream.head:
                    old = stream.rows[rewrite[0] - stream.first]
                    recovered -= len(rewrite[3]) - len(old[3])
                    stream.rows[rewrite[0] - stream.first] = rewrite
                count = last - stream.first + 1
                recovered += sum(len(row[3]) for row in stream.rows[:count])
                del stream.rows[:count]
                stream.first += count
                deleted = count
        return CleanupResult(
            deleted_events=deleted, deleted_snapshots=len(dropped), recovered_bytes=recovered
        )

    # ------------------------------------------------------------------ statistics
    async def _stats(self, governor: str | None) -> StoreStats:
        with self._lock:
            self._open()
            records = [
                (key, value) for key, value in self._records.items()
                if governor is None or key[0] == governor
            ]
            streams = [s for k, s in self._streams.items() if governor is None or k[0] == governor]
            snapshots = [
                s for k, s in self._snapshots.items() if governor is None or k[0] == governor
            ]
            states = [value for key, value in records if key[1] == STATES]
            return StoreStats(
                total_states=len(states),
                total_events=sum(len(s.rows) for s in streams),
                total_snapshots=sum(len(s) for s in snapshots),
                max_version=max(
                    [v for v, _ in states] + [s.head for s in streams if s.rows], default=0
                ),
                bytes=sum(len(raw) for _, (_, raw) in records)
                + sum(len(row[3]) for s in streams for row in s.rows)
                + sum(len(raw) for s in snapshots for raw in s.values()),
            )

