"""Runtime and engine benchmarks, each side by side with its baseline in one run.

    .venv/bin/python benchmarks/runtime_bench.py                 # everything (a few minutes)
    .venv/bin/python benchmarks/runtime_bench.py --quick         # smaller sizes
    .venv/bin/python benchmarks/runtime_bench.py --only durable,memory
    .venv/bin/python benchmarks/runtime_bench.py --update-docs   # rewrite docs/benchmarks.md

Sections (targets from the issues; medians of --runs runs, ratios of medians):
  durable    durable transitions/s, one machine, SQLite WAL+FULL  vs  raw sqlite3
             insert+commit loop on the same file settings              (target >= 0.8x)
  memory     the runtime on the memory store  vs  bare `transitions` firing the same
             trigger                                                    (target >= 0.25x)
  recovery   one machine with 1,000,000 events: snapshot every 1,000 + replay (<= 10 ms);
             no snapshot: replay rate                                   (>= 200,000 events/s)
  instances  bytes per live instance over 100k instances (<= 2 KB beyond data), creation
             rate at 1k vs 100k instances (>= 0.8x); `transitions`' add_model for reference
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from transitions import Machine as BareMachine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tai_fsm as fsm
from tai_fsm.records import ChangeMetadata, Event, StateSnapshot, StoredState, utc_now
from tai_fsm.runtime.hashing import compute_event_hash
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- runtime-bench:start -->", "<!-- runtime-bench:end -->"


class Flip(fsm.Machine):
    """Two states, two triggers, no callbacks: the smallest honest machine."""

    a = fsm.State(initial=True)
    b = fsm.State()
    go = a.to(b)
    back = b.to(a)


class Tick(fsm.Machine):
    """An internal transition that changes data, snapshotting every 1,000 events."""

    snapshot_every = 1000
    ticking = fsm.State(initial=True)
    stopped = fsm.State(final=True)
    tick = ticking.to(None, before=["bump"])
    stop = ticking.to(stopped)

    def bump(self, event: Any) -> None:
        self.data["n"] = self.data.get("n", 0) + 1


def _median_rate(samples: list[float]) -> float:
    return statistics.median(samples)


def _row(name: str, value: str) -> str:
    return f"| {name} | {value} |"


# ---------------------------------------------------------------------- durable
def raw_sqlite_commits(path: Path, count: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER, data BLOB)")
    payload = orjson.dumps({"machine": "flip", "state": "b", "data": {}})
    started = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (f"k{i}-{uuid.uuid4().hex}", i, payload))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


async def runtime_commits(store: fsm.Store, count: int) -> float:
    async with fsm.Runtime(store, [Flip]) as rt:
        flip = await rt.create("flip", f"f-{uuid.uuid4().hex[:8]}")
        await flip.trigger("go")
        await flip.trigger("back")
        started = time.perf_counter()
        for _ in range(count // 2):
            await flip.trigger("go")
            await flip.trigger("back")
        return (count // 2 * 2) / (time.perf_counter() - started)


def bench_durable(runs: int, count: int, tmp: Path) -> list[str]:
    raw, ours = [], []
    for run in range(runs):
        raw.append(raw_sqlite_commits(tmp / f"raw{run}.db", count))
        store = SQLiteStore(tmp / f"rt{run}.db", synchronous="FULL")
        ours.append(asyncio.run(runtime_commits(store, count)))
    r, o = _median_rate(raw), _median_rate(ours)
    return [
        _row("raw sqlite3 insert+commit (WAL, FULL)", f"{r:,.0f} commits/s"),
        _row("tai-fsm durable transitions (SQLite WAL, FULL)", f"{o:,.0f} transitions/s"),
        _row("**ratio** (target >= 0.8x)", f"**{o / r:.2f}x**"),
    ]


# ---------------------------------------------------------------------- memory
class _BareModel:
    pass


def bare_transitions(count: int) -> float:
    model = _BareModel()
    BareMachine(model=model, states=["a", "b"], initial="a", auto_transitions=False,
                transitions=[["go", "a", "b"], ["back", "b", "a"]])
    go, back = model.go, model.back  # type: ignore[attr-defined]
    started = time.perf_counter()
    for _ in range(count // 2):
        go()
        back()
    return (count // 2 * 2) / (time.perf_counter() - started)


def bench_memory(runs: int, count: int) -> list[str]:
    bare, ours = [], []
    for _ in range(runs):
        bare.append(bare_transitions(count))
        ours.append(asyncio.run(runtime_commits(MemoryStore(), count)))
    b, o = _median_rate(bare), _median_rate(ours)
    return [
        _row("bare `transitions` (same machine, no persistence)", f"{b:,.0f} triggers/s"),
        _row("tai-fsm runtime on the memory store", f"{o:,.0f} transitions/s"),
        _row("**ratio** (target >= 0.25x)", f"**{o / b:.2f}x**"),
    ]


# ---------------------------------------------------------------------- recovery
def _event(stream: str, version: int, prev: str | None, n: int, now: Any) -> Event:
    data = {"machine": "tick", "state": "ticking", "data": {"n": n}}
    doc: dict[str, Any] = {
        "id": uuid.uuid4().hex, "stream_id": stream, "version": version,
        "action": "tick" if version > 1 else "@create",
        "from_state": None,
        "to_state": {"id": stream, "data": data, "version": version, "timestamp": now,
                     "metadata": {"changed_by": "system", "reason": "", "parent_version": None,
                                  "context": {}},
                     "causality": {"clocks": {"bench": version}}},
        "payload": {}, "timestamp": now, "causality": {"clocks": {"bench": version}},
        "metadata": {"changed_by": "bench", "reason": "", "parent_version": version - 1,
                     "context": {}},
        "prev_hash": prev, "hash": None,
    }
    doc["hash"] = compute_event_hash(doc)
    return Event.model_validate(doc)


async def _build_history(store: fsm.Store, stream: str, total: int, snapshot_every: int | None,
                         batch: int = 1000) -> None:
    prev: str | None = None
    version = 0
    now = utc_now()
    while version < total:
        events = []
        for _ in range(min(batch, total - version)):
            version += 1
            event = _event(stream, version, prev, version - 1, now)
            prev = event.hash
            events.append(event)
        last = events[-1]
        record = last.to_state.model_copy(update={"metadata": ChangeMetadata(
            context={"event_id": last.id, "event_hash": last.hash})})
        await store.append_events("default", stream, events, expected_version=version - len(events),
                                  state=record)
        if snapshot_every and version % snapshot_every == 0:
            await store.save_snapshot("default", stream, record, keep=5)


async def _recover(store: fsm.Store, stream: str) -> tuple[float, int]:
    async with fsm.Runtime(store, [Tick], own_store=False) as rt:
        started = time.perf_counter()
        report = await rt.recover(stream)
        return time.perf_counter() - started, report.replayed_events


def bench_recovery(runs: int, total: int, tmp: Path) -> list[str]:
    db = tmp / "recovery.db"

    async def build() -> None:
        async with SQLiteStore(db, synchronous="NORMAL") as store:
            # one short of a multiple of 1,000: the worst case, 999 events after the snapshot
            await _build_history(store, "with-snapshots", total - 1, snapshot_every=1000)
            await _build_history(store, "no-snapshots", total, snapshot_every=None)

    started = time.perf_counter()
    asyncio.run(build())
    built = time.perf_counter() - started

    async def measure(stream: str) -> tuple[float, int]:
        async with SQLiteStore(db) as store:
            return await _recover(store, stream)

    snap = [asyncio.run(measure("with-snapshots")) for _ in range(runs)]
    full = [asyncio.run(measure("no-snapshots")) for _ in range(max(1, runs // 2))]
    snap_ms = statistics.median(t for t, _ in snap) * 1000
    full_s = statistics.median(t for t, _ in full)
    replayed = full[0][1]
    return [
        _row(f"history built ({2 * total:,} events, 2 streams)", f"{built:.1f} s"),
        _row(f"recover {total - 1:,}-event machine, snapshot every 1,000 (target <= 10 ms)",
             f"**{snap_ms:.1f} ms** ({snap[0][1]} events replayed)"),
        _row(f"recover {total:,}-event machine, no snapshot (target >= 200,000 events/s)",
             f"{full_s:.2f} s = **{replayed / full_s:,.0f} events/s**"),
    ]


# ---------------------------------------------------------------------- instances
def bench_instances(total: int) -> list[str]:
    async def run() -> list[str]:
        async with fsm.Runtime(MemoryStore(), [Flip]) as rt:
            committer = rt._committer("flip")
            record = StateSnapshot(id="x", data={"machine": "flip", "state": "a", "data": {}},
                                   version=1)
            stored = [StoredState(snapshot=record.model_copy(update={"id": f"i{i}"}),
                                  version=1) for i in range(total)]
            # memory: tracemalloc over all instances
            keep: list[Any] = []
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            keep.extend(committer.new_instance("default", s) for s in stored)
            used = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            per_instance = used / total
            keep.clear()
            gc.collect()
            # creation rate (tracemalloc off): median of 1k-batches near the start vs the end
            step = 1000
            rates: list[float] = []
            for start in range(0, total, step):
                t0 = time.perf_counter()
                for i in range(start, start + step):
                    keep.append(committer.new_instance("default", stored[i]))
                rates.append(step / (time.perf_counter() - t0))
            first_rate = statistics.median(rates[:5])
            last_rate = statistics.median(rates[-5:])
            # transitions' own way: one shared Machine, add_model per instance
            models: list[Any] = [_BareModel() for _ in range(total)]
            bare = BareMachine(model=None, states=["a", "b"], initial="a",
                               auto_transitions=False,
                               transitions=[["go", "a", "b"], ["back", "b", "a"]])
            t0 = time.perf_counter()
            bare.add_model(models[:step])
            bare_first = step / (time.perf_counter() - t0)
            bare.add_model(models[step:total - step])
            t0 = time.perf_counter()
            bare.add_model(models[total - step:])
            bare_last = step / (time.perf_counter() - t0)
            return [
                _row(f"live instance memory over {total:,} instances (target <= 2 KB)",
                     f"**{per_instance:,.0f} bytes/instance** (incl. empty data dict)"),
                _row("instance creation rate, first 5k (median of 1k batches)",
                     f"{first_rate:,.0f}/s"),
                _row(f"instance creation rate, last 5k up to {total:,} (target >= 0.8x)",
                     f"{last_rate:,.0f}/s = **{last_rate / first_rate:.2f}x**"),
                _row("`transitions` add_model, first 1k vs last 1k (reference)",
                     f"{bare_first:,.0f}/s vs {bare_last:,.0f}/s = {bare_last / bare_first:.2f}x"),
            ]

    return asyncio.run(run())


# ---------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="durable,memory,recovery,instances")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    only = set(args.only.split(","))
    commits = 2000 if args.quick else 5000
    history = 100_000 if args.quick else 1_000_000
    instances = 20_000 if args.quick else 100_000
    sections: list[tuple[str, Callable[[], list[str]]]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sections = [
            ("durable", lambda: bench_durable(args.runs, commits, tmp)),
            ("memory", lambda: bench_memory(args.runs, commits * 4)),
            ("recovery", lambda: bench_recovery(args.runs, history, tmp)),
            ("instances", lambda: bench_instances(instances)),
        ]
        results: dict[str, list[str]] = {}
        for name, run in sections:
            if name not in only:
                continue
            print(f"== {name}", file=sys.stderr, flush=True)
            results[name] = run()
            for row in results[name]:
                print(row, flush=True)
    if args.update_docs:
        command = "`.venv/bin/python benchmarks/runtime_bench.py" + \
            (" --quick" if args.quick else "") + f" --runs {args.runs} --only {{}}`"
        _update_docs(results, command, args.runs)
    return 0


def _update_docs(results: dict[str, list[str]], command: str, runs: int) -> None:
    """Rewrite, in docs/benchmarks.md, the block of each section that ran (the others keep
    their last figures)."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START not in text:
        text = text.rstrip() + "\n\n## Runtime and engine\n\n" + START + "\n" + END + "\n"
    stamp = time.strftime("%Y-%m-%d")
    for name, rows in results.items():
        begin, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        block = "\n".join([
            begin, f"`{name}`, measured {stamp} with {command.format(name)}, medians of "
            f"{runs} runs:", "", "| measurement | result |", "| --- | --- |", *rows, end,
        ])
        if begin in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.replace(END, block + "\n\n" + END)
    DOC.write_text(text)
    print(f"updated {DOC}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
