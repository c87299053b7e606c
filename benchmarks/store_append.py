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
Two reference lines follow: the store with records that carry their own JSON (as the
runtime's hot path builds them, so the store does not encode), and ``append_events`` from
32 concurrent tasks on 32 streams (writes queued while the worker is busy share one
transaction: group commit).

    .venv/bin/python benchmarks/store_append.py            # 5 runs x 2000 commits
    .venv/bin/python benchmarks/store_append.py --quick    # 5 runs x 300 commits
    .venv/bin/python benchmarks/store_append.py --update-docs   # also rewrite its section
                                                                # of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tai_fsm.records import ChangeMetadata, Event, StateSnapshot
from tai_fsm.stores.common import micros
from tai_fsm.stores.recordcodec import encode_event, encode_record
from tai_fsm.stores.sqlite import SQLiteStore

GOV, STREAM = "bench", "order-1"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## Store: SQLite append_events vs raw sqlite3"
START, END = "<!-- store-append:start -->", "<!-- store-append:end -->"
NOTES = """\
What the rows measure: *raw sqlite3* writes the same two rows per commit (event + state
record, pre-encoded bytes) with `BEGIN IMMEDIATE` / `COMMIT` on the calling thread;
*SQLiteStore.append* is `await store.append_events(..., expected_version=v, state=...)`,
including id/record checks, JSON encoding, the version check inside the transaction and the
round trip to the store's worker thread; *records with JSON* is the same call with records
that carry their encoding (what the runtime's hot path passes); *32 tasks x 32 streams* is
concurrent appends, which the worker group-commits (one transaction and fsync for every
write queued while it was busy).

Reading the figures: inside the worker the transaction costs what the raw loop's does; the
gap is per call, and it is paid again for every sequential commit. Instrumented on this
machine (2 vCPUs, loaded by other jobs): checks and JSON encoding on the event loop
≈ 35-45 µs when hot, 70-100 µs inside the benchmark loop; handing the job to the worker
≈ 20 µs; waking the event loop and resuming the awaiting task ≈ 55-65 µs. The wake-ups cost
more after a commit than in the no-op call above, because both CPUs go idle during the
fsync. Records that carry their JSON (the runtime's path) save the encoding. The 0.85x
target is **not met** for one sequential caller; blocking I/O must stay off the event loop,
so the two wake-ups stay. Concurrent callers are not bound by the per-call gap: their writes
are group-committed."""


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


def pre_encoded(commits: list[tuple[Event, StateSnapshot]]) -> list[tuple[Event, StateSnapshot]]:
    """The same records carrying their own JSON, as the runtime's hot path builds them
    (``records._EncodedRecord``): the store then skips encoding."""
    out = []
    for n, (event, state) in enumerate(commits, start=1):
        event = event.model_copy(update={"stream_id": STREAM, "version": n})
        event._tai_json = encode_event(event, STREAM, n, None)
        state = state.model_copy()
        state._tai_json = encode_record(state, STREAM, n, "state")
        out.append((event, state))
    return out


async def run_store(path: Path, commits: list[tuple[Event, StateSnapshot]], sync: str) -> float:
    async with SQLiteStore(path, synchronous=sync) as store:
        started = time.perf_counter()
        for version, (event, state) in enumerate(commits):
            await store.append_events(GOV, STREAM, [event], expected_version=version, state=state)
        elapsed = time.perf_counter() - started
        assert await store.stream_version(GOV, STREAM) == len(commits)
    return len(commits) / elapsed


async def round_trip_us(path: Path, calls: int = 2000) -> float:
    """Microseconds of the cheapest call (``stream_version`` of an empty stream): the hop to
    the worker thread and back plus one index lookup."""
    async with SQLiteStore(path) as store:
        started = time.perf_counter()
        for _ in range(calls):
            await store.stream_version(GOV, "empty")
        return (time.perf_counter() - started) / calls * 1e6


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
            (
                GOV, STREAM, n, event.id, micros(event.timestamp),
                encode_event(event, STREAM, n, None),
            ),
            (GOV, "states", STREAM, n, encode_record(state, STREAM, n, "state")),
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
        "INSERT INTO records (governor, kind, id, version, data) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (governor, kind, id) DO UPDATE SET version = excluded.version, "
        "data = excluded.data"
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


def report(args: argparse.Namespace, count: int, rates: dict[str, list[float]]) -> list[str]:
    raw, store = statistics.median(rates["raw"]), statistics.median(rates["store"])
    encoded = statistics.median(rates["encoded"])
    concurrent = statistics.median(rates["group"])

    def row(name: str, median: float, samples: list[float], note: str = "") -> str:
        runs = " ".join(f"{r:,.0f}" for r in samples)
        return f"{name:24}{median:>12,.0f}   {runs}{note}"

    return [
        f"SQLite WAL synchronous={args.synchronous}, {count} sequential commits per run "
        f"(1 event + 1 state record each), median of {args.runs} runs",
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end",
        f"{'':24}{'commits/s':>12}   runs",
        row("raw sqlite3", raw, rates["raw"]),
        row("SQLiteStore.append", store, rates["store"]),
        f"ratio store/raw: {store / raw:.2f}  (target >= 0.85)",
        row("  records with JSON", encoded, rates["encoded"], f"   ratio {encoded / raw:.2f}"),
        row("32 tasks x 32 streams", concurrent, rates["group"], "   (appends/s, group commit)"),
        f"per commit: raw {1e6 / raw:.0f} us, store {1e6 / store:.0f} us "
        f"(+{1e6 / store - 1e6 / raw:.0f} us); one no-op call through the worker thread "
        f"{statistics.median(rates['hop']):.0f} us",
    ]


def update_docs(lines: list[str], command: str) -> None:
    """Rewrite this benchmark's section of docs/benchmarks.md (other sections untouched)."""
    section = "\n".join(
        [
            START,
            HEADING,
            "",
            f"Command: `{command}` (add `--update-docs` to rewrite this section).",
            "",
            "```",
            *lines,
            "```",
            "",
            NOTES,
            END,
        ]
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 commits per run")
    parser.add_argument("--commits", type=int, default=None, help="commits per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--synchronous", default="FULL", choices=["NORMAL", "FULL", "EXTRA"])
    parser.add_argument("--dir", type=Path, default=None, help="folder for the files (a disk)")
    parser.add_argument(
        "--update-docs", action="store_true", help=f"write the figures into {DOC.name}"
    )
    args = parser.parse_args(argv)
    count = args.commits or (300 if args.quick else 2000)
    commits = build(count)
    encoded = pre_encoded(commits)
    rates: dict[str, list[float]] = {
        "raw": [],
        "store": [],
        "encoded": [],
        "group": [],
        "hop": [],
    }
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        for run in range(args.runs):
            base = Path(folder)
            rates["raw"].append(run_raw(base / f"raw-{run}.db", commits, args.synchronous))
            rates["store"].append(
                asyncio.run(run_store(base / f"store-{run}.db", commits, args.synchronous))
            )
            rates["encoded"].append(
                asyncio.run(run_store(base / f"encoded-{run}.db", encoded, args.synchronous))
            )
            rates["group"].append(
                asyncio.run(run_concurrent(base / f"group-{run}.db", commits, args.synchronous))
            )
            rates["hop"].append(asyncio.run(round_trip_us(base / f"hop-{run}.db")))
    lines = report(args, count, rates)
    print("\n".join(lines))
    if args.update_docs:
        shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--update-docs"]
        update_docs(lines, " ".join([".venv/bin/python benchmarks/store_append.py", *shown]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
