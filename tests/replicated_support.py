"""Helpers for the ReplicatedStore tests: stores that can be cut off (a partition), and a
dump of everything a store holds, to compare copies."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from tai_fsm.definition import Machine, State
from tai_fsm.errors import StoreUnavailable
from tai_fsm.records import Event, StateSnapshot, VectorClock
from tai_fsm.stores.base import Store
from tai_fsm.stores.firestore import FirestoreStore
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore

T = TypeVar("T")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class Tally(Machine):
    """Counts what it is given; snapshots often, so snapshots live on both branches."""

    name = "tally"
    snapshot_every = 3
    snapshot_retention = 3

    open = State(initial=True)
    closed = State(final=True)

    add = open.to(None, before=["bump"])
    close = open.to(closed)

    def bump(self, event: Any) -> None:
        self.data["n"] = int(self.data.get("n", 0)) + int(event.payload.get("by", 1))


def event(stream_id: str, version: int, event_id: str, *, node: str = "n", at: float = 0,
          data: Any = None) -> Event:
    """A store-level event at ``version`` (no hash chain), ``at`` seconds after T0."""
    when = T0 + timedelta(seconds=at)
    clock = VectorClock(clocks={node: version})
    return Event(
        id=event_id, stream_id=stream_id, version=version, action="set",
        to_state=StateSnapshot(id=stream_id, data=data, version=version, timestamp=when,
                               causality=clock),
        payload={"by": node}, timestamp=when, causality=clock,
    )


def chained(stream_id: str, first: int, count: int, *, node: str, at: float,
            after: Event | None = None) -> list[Event]:
    """``count`` runtime-shaped events of ``stream_id`` from version ``first``, hash-chained
    (onto ``after``, the event before them, when given) — fixed ids and times, so the same
    history can be built twice."""
    from tai_fsm.runtime.hashing import compute_event_hash

    events: list[Event] = []
    previous = after
    for version in range(first, first + count):
        when = T0 + timedelta(seconds=at + version)
        clock = (previous.causality if previous else VectorClock()).increment(node)
        record = {"machine": "tally", "state": "open", "data": {"n": version, "by": node}}
        state = StateSnapshot(id=stream_id, data=record, version=version, timestamp=when,
                              causality=clock)
        event = Event(
            id=f"{stream_id}-{node}-{version}", stream_id=stream_id, version=version,
            action="add", from_state=None if previous is None else previous.to_state,
            to_state=state, payload={"node": node}, timestamp=when, causality=clock,
            prev_hash=None if previous is None else previous.hash,
        )
        event = event.model_copy(update={"hash": compute_event_hash(event)})
        events.append(event)
        previous = event
    return events


async def append(store: Store, governor: str, *events: Event) -> None:
    """Append ``events`` at their versions, with the state record, as the runtime does."""
    await store.append_events(
        governor, events[0].stream_id, list(events), expected_version=events[0].version - 1,
        state=events[-1].to_state,
    )

KINDS = ("states", "locks", "inbox")
_HOOKS = (
    "_read_records", "_list_records", "_list_governors", "_commit", "_event_rows",
    "_event_versions", "_stream_head", "_list_streams", "_save_snapshot", "_load_snapshot",
    "_snapshot_versions", "_compact", "_stats",
)


_WRITES = ("_commit", "_save_snapshot", "_compact")


def _partitionable(cls: type[Store]) -> type[Store]:
    """A subclass of ``cls`` whose every backend hook raises StoreUnavailable while
    ``down`` is True (as a network partition would); with ``writes_down``, only its writes
    (a connection lost mid-way)."""

    def wrap(name: str) -> Callable[..., Awaitable[Any]]:
        original = getattr(cls, name)

        async def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            if self.down or (self.writes_down and name in _WRITES):
                raise StoreUnavailable(f"{self.url} is cut off (test partition)")
            return await original(self, *args, **kwargs)

        return hook

    namespace: dict[str, Any] = {"down": False, "writes_down": False}
    namespace.update({name: wrap(name) for name in _HOOKS})
    return type(f"Partitionable{cls.__name__}", (cls,), namespace)


PartitionableMemory: Any = _partitionable(MemoryStore)
PartitionableSQLite: Any = _partitionable(SQLiteStore)
PartitionableFirestore: Any = _partitionable(FirestoreStore)


async def dump(store: Store, governors: list[str] | None = None) -> dict[str, Any]:
    """Everything ``store`` holds, as plain data: per governor, each stream's events, the
    records of the usual kinds, and each stream's snapshot versions and newest snapshot."""
    result: dict[str, Any] = {}
    for governor in governors if governors is not None else await store.list_governors():
        streams: dict[str, Any] = {}
        for stream_id in await store.list_streams(governor):
            events = [
                e.model_dump(mode="json", exclude={"from_state"})
                | {"from": None if e.from_state is None else e.from_state.data}
                async for e in store.read_events(governor, stream_id)
            ]
            newest = await store.load_snapshot(governor, stream_id)
            streams[stream_id] = {
                "events": events,
                "snapshots": await store.snapshot_versions(governor, stream_id),
                "newest": None if newest is None else newest.model_dump(mode="json"),
            }
        records: dict[str, Any] = {}
        for kind in KINDS:
            ids = [rid async for rid in store.list_records(governor, kind=kind)]
            found = await store.batch_read_records(governor, ids, kind=kind)
            records[kind] = {
                rid: (s.version, s.snapshot.model_dump(mode="json")) for rid, s in found.items()
            }
        result[governor] = {"streams": streams, "records": records}
    return result


def copy_sqlite(source: str, target: str) -> None:
    """Copy a (closed) SQLite store file with SQLite's own backup API."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
