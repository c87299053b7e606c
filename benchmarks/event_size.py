"""Bytes per event on SQLite: what one transition costs on disk.

Two workloads, each N commits of one event + its state record on one stream, with events
shaped like the runtime's (metadata, vector clock, hash chain, ``from_state`` = the previous
``to_state``):

* **small** — an instance record of about 120 bytes of data;
* **10 KB, one field changed** — a 10 KB record of which one field changes per transition.

For each: the encoded bytes the store holds per event (``get_stats().bytes``) and the SQLite
file's growth per event after a WAL checkpoint (pages, B-tree overhead and free space
included). The script also runs against an older checkout (it falls back when
``append_events`` has no ``prior=``), which is how the "before" column in
docs/benchmarks.md was produced.

    .venv/bin/python benchmarks/event_size.py             # 1000 events per workload
    .venv/bin/python benchmarks/event_size.py --events 200
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from tai_fsm.records import ChangeMetadata, Event, StateSnapshot, VectorClock
from tai_fsm.stores.sqlite import SQLiteStore

GOV, STREAM = "bench", "order-1"


def workloads() -> dict[str, dict[str, Any]]:
    small = {"items": 2, "customer": "c-1042", "total": 99.5, "notes": "leave at the door"}
    big = {f"field_{n:03d}": "v" * 90 for n in range(100)}
    big["counter"] = 0
    return {"small": small, "10 KB, one field changed": big}


def record(data: dict[str, Any], n: int, state: str) -> dict[str, Any]:
    return {"machine": "order", "state": state, "data": data}


def make_event(n: int, previous: StateSnapshot | None, data: dict[str, Any]) -> Event:
    to_state = StateSnapshot(
        id=STREAM, data=record(data, n, "paid" if n % 2 else "pending"), version=n,
        causality=VectorClock(clocks={"w1": n}),
    )
    prev_hash = hashlib.sha256(str(n - 1).encode()).hexdigest() if n > 1 else None
    return Event(
        id=f"{n:032x}",
        stream_id=STREAM,
        version=n,
        action="pay" if n % 2 else "reopen",
        from_state=previous,
        to_state=to_state,
        payload={"at": "2026-11-28T09:00Z"},
        causality=VectorClock(clocks={"w1": n}),
        metadata=ChangeMetadata(
            changed_by="alice", reason="checkout", parent_version=n - 1,
            context={"definition_version": 1, "node": "w1"},
        ),
        prev_hash=prev_hash,
        hash=hashlib.sha256(str(n).encode()).hexdigest(),
    )


def file_size(path: Path) -> int:
    return os.path.getsize(path)


async def measure(path: Path, base: dict[str, Any], events: int) -> tuple[float, float]:
    async with SQLiteStore(path) as store:
        await store.save_state(GOV, "warm", StateSnapshot(id="warm"))  # schema and pages exist
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_before = file_size(path)
        bytes_before = (await store.get_stats(GOV)).bytes
        previous: StateSnapshot | None = None
        data = dict(base)
        for n in range(1, events + 1):
            if "counter" in data:
                data = {**data, "counter": n}
            event = make_event(n, previous, data)
            kwargs: dict[str, Any] = {"expected_version": n - 1, "state": event.to_state}
            try:
                await store.append_events(GOV, STREAM, [event], prior=previous, **kwargs)
            except TypeError:  # an older tai-fsm without deltas
                await store.append_events(GOV, STREAM, [event], **kwargs)
            previous = event.to_state
        stored = (await store.get_stats(GOV)).bytes - bytes_before
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    on_disk = file_size(path) - size_before
    return stored / events, on_disk / events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    print(f"{args.events} commits per workload (1 event + its state record each), SQLite WAL")
    print(f"{'workload':28}{'stored B/event':>16}{'file B/event':>14}")
    with tempfile.TemporaryDirectory() as folder:
        for name, base in workloads().items():
            path = Path(folder) / f"{len(name)}.db"
            stored, on_disk = asyncio.run(measure(path, base, args.events))
            print(f"{name:28}{stored:>16,.0f}{on_disk:>14,.0f}")


if __name__ == "__main__":
    main()
