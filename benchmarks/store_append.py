"""SQLite ``append_events`` commits/s next to a raw ``sqlite3`` insert+commit loop.

Both sides write the same rows with the same file settings (WAL, ``synchronous=FULL`` by
default) on a fresh file per run, sequentially, one commit at a time:

* **store** — ``await SQLiteStore.append_events(gov, stream, [event], expected_version=v,
  state=snapshot)``: one event plus its state record per commit, as the runtime commits a
  transition (validation, JSON encoding, the version check inside ``BEGIN IMMEDIATE``, the
  hop to the store's worker thread and back to the event loop all included);
* **raw** — plain ``sqlite3`` on the same schema: ``BEGIN IMMEDIATE``; insert the event row;
  upsert the state row; ``COMMIT`` with the same pre-encoded bytes (no validation, no
  encoding, no version check, no thread hop).

Runs alternate raw/store; the medians of the runs and their ratio (store / raw) are printed.
For reference, a last line shows ``append_events`` from 32 concurrent tasks on 32 streams:
writes queued while the worker is busy share one transaction (group commit).

    .venv/bin/python benchmarks/store_append.py            # 5 runs x 2000 commits
    .venv/bin/python benchmarks/store_append.py --quick    # 5 runs x 300 commits
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tai_fsm.records import ChangeMetadata, Event, StateSnapshot
from tai_fsm.stores.common import encode_event, encode_snapshot, micros
from tai_fsm.stores.sqlite import SQLiteStore

GOV, STREAM = "bench", "order-1"


def build(count: int) -> list[tuple[Event, StateSnapshot]]:
    """``count`` transitions of one order machine: (event, new state record)."""
    commits = []
    previous = StateSnapshot(id=STREAM, data={"machine": "order", "state": "s0", "data": {}})
    for n in range(1, count + 1):
        state = StateSnapshot(
            id=STREAM,
            version=n,
            data={"machine": "order", "state": f"s{n % 3}", "data": {"items": n, "note": "x" * 40}},
            metadata=ChangeMetadata(changed_by="bench", reason="step"),
        )
        event = Event(
            id=f"evt-{n:08d}",
            action="step",
            from_state=previous,
            to_state=state,
            metadata=ChangeMetadata(changed_by="bench", reason="step"),
        )
        commits.append((event, state))
        previous = state
    return commits


async def run_store(path: Path, commits: list[tuple[Event, StateSnapshot]], sync: str) -> float:
    async with SQLiteStore(path, synchronous=sync) as store:
        started = time.perf_counter()
        for version, (event, state) in enumerate(commits):
            await store.append_events(GOV, STREAM, [event], expected_version=version, state=state)
        elapsed = time.perf_counter() - started
        assert await store.stream_version(GOV, STREAM) == len(commits)
    return len(commits) / elapsed


async def run_concurrent(
    path: Path, commits: list[tuple[Event, StateSnapshot]], sync: str, tasks: int = 32
) -> float:
    async with SQLiteStore(path, synchronous=sync) as store:

        async def one(stream: str, mine: list[tuple[Event, StateSnapshot]]) -> None:
            for version, (event, state) in enumerate(mine):
                event = event.model_copy(update={"stream_id": stream})
                await store.append_events(
                    GOV, stream, [event], expected_version=version, state=state
                )

        per_task = max(1, len(commits) // tasks)
        started = time.perf_counter()
        await asyncio.gather(*(one(f"order-{n}", commits[:per_task]) for n in range(tasks)))
        elapsed = time.perf_counter() - started
        assert (await store.get_stats(GOV)).total_events == per_task * tasks
    return per_task * tasks / elapsed


def run_raw(path: Path, commits: list[tuple[Event, StateSnapshot]], sync: str) -> float:
    asyncio.run(SQLiteStore(path, synchronous=sync).close())  # same schema and file settings
    rows = [
        (
            (GOV, STREAM, n, event.id, micros(event.timestamp), encode_event(event, STREAM, n)),
            (GOV, STREAM, n, encode_snapshot(state, n, "state")),
        )
        for n, (event, state) in enumerate(commits, start=1)
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync}")
    insert = (
        "INSERT INTO events (governor, stream_id, version, event_id, ts, data) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    upsert = (
        "INSERT INTO states (governor, id, version, data) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (governor, id) DO UPDATE SET version = excluded.version, data = excluded.data"
    )
    started = time.perf_counter()
    for event_row, state_row in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, event_row)
        conn.execute(upsert, state_row)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 commits per run")
    parser.add_argument("--commits", type=int, default=None, help="commits per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--synchronous", default="FULL", choices=["NORMAL", "FULL", "EXTRA"])
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (a disk)")
    args = parser.parse_args(argv)
    count = args.commits or (300 if args.quick else 2000)
    commits = build(count)
    raw_rates: list[float] = []
    store_rates: list[float] = []
    concurrent_rates: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for run in range(args.runs):
            raw_rates.append(run_raw(Path(folder) / f"raw-{run}.db", commits, args.synchronous))
            store_rates.append(
                asyncio.run(run_store(Path(folder) / f"store-{run}.db", commits, args.synchronous))
            )
            concurrent_rates.append(
                asyncio.run(
                    run_concurrent(Path(folder) / f"group-{run}.db", commits, args.synchronous)
                )
            )
    raw, store = statistics.median(raw_rates), statistics.median(store_rates)
    print(
        f"SQLite WAL synchronous={args.synchronous}, {count} sequential commits per run "
        f"(1 event + 1 state record each), median of {args.runs} runs, "
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
    )
    print(f"{'':24}{'commits/s':>12}   runs")
    print(f"{'raw sqlite3':24}{raw:>12,.0f}   " + " ".join(f"{r:,.0f}" for r in raw_rates))
    print(
        f"{'SQLiteStore.append':24}{store:>12,.0f}   " + " ".join(f"{r:,.0f}" for r in store_rates)
    )
    print(f"ratio store/raw: {store / raw:.2f}  (target >= 0.85)")
    concurrent = statistics.median(concurrent_rates)
    print(
        f"{'32 tasks x 32 streams':24}{concurrent:>12,.0f}   "
        + " ".join(f"{r:,.0f}" for r in concurrent_rates)
        + "   (appends/s, group commit)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
