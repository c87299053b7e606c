"""tai-fsm next to the libraries a Python user would pick instead, side by side in one run.

    pip install -e .[bench]                     # eventsourcing + python-statemachine
    .venv/bin/python benchmarks/compare_bench.py                  # 5 repeats
    .venv/bin/python benchmarks/compare_bench.py --quick          # smaller, 3 repeats
    .venv/bin/python benchmarks/compare_bench.py --update-docs    # rewrite its section of
                                                                  # docs/benchmarks.md

Installs nothing itself: ``eventsourcing`` (pyeventsourcing, its own SQLite recorder) and
``statemachine`` (python-statemachine) are imported when present and left out (said so in the
output) when not. Every engine runs the same two-state machine (``a -go-> b -back-> a``);
each repeat runs every engine once, in an order rotated by one per repeat, and the table
shows the median of the repeats (every run printed beside it) and ratios of medians.

Workloads:

* **one machine, sequential durable triggers** (SQLite file, WAL, ``synchronous=FULL`` in
  every engine): tai-fsm async (``await inst.trigger``), tai-fsm blocking
  (``tai_fsm.sync``), eventsourcing (mutate the aggregate, ``app.save(agg)``: one event per
  save), raw ``sqlite3`` one-row insert + commit (the floor: one fsync per commit);
* **100 machines x 20 triggers, all concurrent**: tai-fsm with one asyncio task per machine
  (the SQLite worker group-commits what queues up), eventsourcing saving all 100 aggregates
  in one ``app.save(*aggs)`` per round, raw ``sqlite3`` writing 100 rows per commit;
* **in memory, no I/O**: tai-fsm on the memory store (async and blocking), bare
  ``transitions`` (one model, no persistence), python-statemachine (no persistence).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from transitions import Machine as BareMachine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tai_fsm as fsm
from tai_fsm import sync
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate, event
except ImportError:  # pragma: no cover - optional
    Application = None  # type: ignore[assignment,misc]

try:
    from statemachine import State as PsmState
    from statemachine import StateMachine as PsmMachine
except ImportError:  # pragma: no cover - optional
    PsmMachine = None  # type: ignore[assignment,misc]

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
START, END = "<!-- compare-bench:start -->", "<!-- compare-bench:end -->"


class Flip(fsm.Machine):
    """The same two-state machine every engine runs."""

    a = fsm.State(initial=True)
    b = fsm.State()
    go = a.to(b)
    back = b.to(a)


if Application is not None:

    class EsFlip(Aggregate):
        def __init__(self) -> None:
            self.state = "a"

        @event("Went")
        def go(self) -> None:
            self.state = "b"

        @event("Came")
        def back(self) -> None:
            self.state = "a"


if PsmMachine is not None:

    class PsmFlip(PsmMachine):  # type: ignore[misc,valid-type]
        a = PsmState(initial=True)
        b = PsmState()
        go = a.to(b)
        back = b.to(a)


# ---------------------------------------------------------------------- engines
def _raw_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER, data BLOB)")
    return conn


def raw_sequential(path: Path, count: int) -> float:
    conn = _raw_conn(path)
    payload = orjson.dumps({"machine": "flip", "state": "b", "data": {}})
    prefix = uuid.uuid4().hex
    started = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (f"{prefix}-{i}", i, payload))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


def raw_batched(path: Path, machines: int, rounds: int) -> float:
    conn = _raw_conn(path)
    payload = orjson.dumps({"machine": "flip", "state": "b", "data": {}})
    started = time.perf_counter()
    for r in range(rounds):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t VALUES (?, ?, ?)",
            [(f"m{m}-{r}", r, payload) for m in range(machines)],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return machines * rounds / elapsed


def _es_app(path: Path) -> Any:
    return Application(env={
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
    })


def es_sequential(path: Path, count: int) -> float:
    app = _es_app(path)
    agg = EsFlip()
    app.save(agg)
    started = time.perf_counter()
    for _ in range(count // 2):
        agg.go()
        app.save(agg)
        agg.back()
        app.save(agg)
    elapsed = time.perf_counter() - started
    app.close()
    return count // 2 * 2 / elapsed


def es_batched(path: Path, machines: int, rounds: int) -> float:
    app = _es_app(path)
    aggs = [EsFlip() for _ in range(machines)]
    app.save(*aggs)
    started = time.perf_counter()
    for r in range(rounds):
        for agg in aggs:
            agg.go() if r % 2 == 0 else agg.back()
        app.save(*aggs)
    elapsed = time.perf_counter() - started
    app.close()
    return machines * rounds / elapsed


def es_pragmas(path: Path) -> str:
    """The synchronous / journal_mode eventsourcing's own connections run with."""
    app = _es_app(path)
    with app.recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        sync_level = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cursor.fetchone()[0]]
        cursor.execute("PRAGMA journal_mode")
        mode = cursor.fetchone()[0]
    app.close()
    return f"journal_mode={mode}, synchronous={sync_level}"


async def _tai_sequential(store: fsm.Store, count: int) -> float:
    async with fsm.Runtime(store, [Flip]) as rt:
        flip = await rt.create("flip", f"f-{uuid.uuid4().hex[:8]}")
        await flip.trigger("go")
        await flip.trigger("back")
        started = time.perf_counter()
        for _ in range(count // 2):
            await flip.trigger("go")
            await flip.trigger("back")
        elapsed = time.perf_counter() - started
    return count // 2 * 2 / elapsed


def tai_async_sequential(path: Path, count: int) -> float:
    return asyncio.run(_tai_sequential(SQLiteStore(path), count))


def _blocking_sequential(store: Any, count: int) -> float:
    with sync.Runtime(store, [Flip]) as rt:
        flip = rt.create("flip", f"f-{uuid.uuid4().hex[:8]}")
        flip.trigger("go")
        flip.trigger("back")
        started = time.perf_counter()
        for _ in range(count // 2):
            flip.trigger("go")
            flip.trigger("back")
        elapsed = time.perf_counter() - started
    return count // 2 * 2 / elapsed


def tai_blocking_sequential(path: Path, count: int) -> float:
    return _blocking_sequential(sync.open_store(f"sqlite:///{path}"), count)


async def _tai_concurrent(store: fsm.Store, machines: int, rounds: int) -> float:
    async with fsm.Runtime(store, [Flip]) as rt:
        flips = await asyncio.gather(*(rt.create("flip", f"m{m}") for m in range(machines)))

        async def drive(flip: Any) -> None:
            for r in range(rounds):
                await flip.trigger("go" if r % 2 == 0 else "back")

        started = time.perf_counter()
        await asyncio.gather(*(drive(flip) for flip in flips))
        elapsed = time.perf_counter() - started
    return machines * rounds / elapsed


def tai_concurrent(path: Path, machines: int, rounds: int) -> float:
    return asyncio.run(_tai_concurrent(SQLiteStore(path), machines, rounds))


def tai_memory_async(count: int) -> float:
    return asyncio.run(_tai_sequential(MemoryStore(), count))


def tai_memory_blocking(count: int) -> float:
    return _blocking_sequential(sync.open_store("memory://"), count)


class _Model:
    pass


def bare_transitions(count: int) -> float:
    model = _Model()
    BareMachine(model=model, states=["a", "b"], initial="a", auto_transitions=False,
                transitions=[["go", "a", "b"], ["back", "b", "a"]])
    go, back = model.go, model.back  # type: ignore[attr-defined]
    started = time.perf_counter()
    for _ in range(count // 2):
        go()
        back()
    return count // 2 * 2 / (time.perf_counter() - started)


def psm(count: int) -> float:
    machine = PsmFlip()
    go, back = machine.go, machine.back
    started = time.perf_counter()
    for _ in range(count // 2):
        go()
        back()
    return count // 2 * 2 / (time.perf_counter() - started)


# ---------------------------------------------------------------------- running
Engine = tuple[str, Callable[[Path], float]]


def _measure(engines: list[Engine], repeats: int, tmp: Path) -> dict[str, list[float]]:
    """Every engine once per repeat, the order rotated by one each repeat."""
    results: dict[str, list[float]] = {name: [] for name, _ in engines}
    for repeat in range(repeats):
        shift = repeat % len(engines)
        for name, run in engines[shift:] + engines[:shift]:
            gc.collect()
            folder = tmp / f"{repeat}-{uuid.uuid4().hex[:6]}"
            folder.mkdir()
            results[name].append(run(folder))
    return results


def _table(title: str, unit: str, results: dict[str, list[float]]) -> list[str]:
    lines = [f"**{title}**", "", f"| engine | median {unit} | runs |", "| --- | ---: | --- |"]
    for name, runs in results.items():
        shown = " ".join(f"{r:,.0f}" for r in runs)
        lines.append(f"| {name} | {statistics.median(runs):,.0f} | {shown} |")
    return [*lines, ""]


def _ratio(results: dict[str, list[float]], ours: str, theirs: str) -> float | None:
    if ours not in results or theirs not in results:
        return None
    return statistics.median(results[ours]) / statistics.median(results[theirs])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000, help="sequential triggers per run")
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--memory-count", type=int, default=20000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="sequential,concurrent,memory")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.count, args.memory_count = 3, 600, 6000
    only = set(args.only.split(","))
    has_es, has_psm = Application is not None, PsmMachine is not None
    lines: list[str] = []
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="tai-compare-") as tmp_name:
        tmp = Path(tmp_name)
        settings = "eventsourcing not installed"
        if has_es:
            (tmp / "p").mkdir()
            settings = "eventsourcing's own connection: " + es_pragmas(tmp / "p" / "es.db")
        count, machines, rounds = args.count, args.machines, args.rounds
        sections: list[tuple[str, str, list[Engine], list[tuple[str, str, str]]]] = []
        if "sequential" in only:
            engines: list[Engine] = [
                ("raw sqlite3, 1 row insert+commit (floor)",
                 lambda d: raw_sequential(d / "raw.db", count)),
                ("tai-fsm async", lambda d: tai_async_sequential(d / "tai.db", count)),
                ("tai-fsm blocking (`tai_fsm.sync`)",
                 lambda d: tai_blocking_sequential(d / "tai.db", count)),
            ]
            if has_es:
                engines.append(("eventsourcing, 1 event per save",
                                lambda d: es_sequential(d / "es.db", count)))
            sections.append((
                f"One machine, {count:,} sequential durable triggers (SQLite WAL, FULL)",
                "triggers/s", engines,
                [("tai-fsm async", "eventsourcing, 1 event per save", "1.2"),
                 ("tai-fsm blocking (`tai_fsm.sync`)", "eventsourcing, 1 event per save", "1.2"),
                 ("tai-fsm async", "raw sqlite3, 1 row insert+commit (floor)", ""),
                 ("tai-fsm blocking (`tai_fsm.sync`)",
                  "raw sqlite3, 1 row insert+commit (floor)", "")],
            ))
        if "concurrent" in only:
            engines = [
                (f"raw sqlite3, {machines} rows per commit",
                 lambda d: raw_batched(d / "raw.db", machines, rounds)),
                (f"tai-fsm async, {machines} concurrent tasks (group commit)",
                 lambda d: tai_concurrent(d / "tai.db", machines, rounds)),
            ]
            if has_es:
                engines.append((f"eventsourcing, {machines} aggregates per save",
                                lambda d: es_batched(d / "es.db", machines, rounds)))
            sections.append((
                f"{machines} machines x {rounds} triggers, all concurrent (SQLite WAL, FULL)",
                "transitions/s", engines,
                [(f"tai-fsm async, {machines} concurrent tasks (group commit)",
                  f"eventsourcing, {machines} aggregates per save", "1.2"),
                 (f"tai-fsm async, {machines} concurrent tasks (group commit)",
                  f"raw sqlite3, {machines} rows per commit", "")],
            ))
        if "memory" in only:
            mc = args.memory_count
            engines = [
                ("bare `transitions` (no persistence)", lambda d: bare_transitions(mc)),
                ("tai-fsm async, memory store", lambda d: tai_memory_async(mc)),
                ("tai-fsm blocking, memory store", lambda d: tai_memory_blocking(mc)),
            ]
            if has_psm:
                engines.append(("python-statemachine (no persistence)", lambda d: psm(mc)))
            sections.append((
                f"In memory, {mc:,} triggers on one machine", "triggers/s", engines,
                [("tai-fsm async, memory store", "bare `transitions` (no persistence)", "0.25"),
                 ("tai-fsm async, memory store", "python-statemachine (no persistence)", "2"),
                 ("tai-fsm blocking, memory store", "bare `transitions` (no persistence)",
                  "0.25"),
                 ("tai-fsm blocking, memory store", "python-statemachine (no persistence)", "2")],
            ))
        for title, unit, engines, ratios in sections:
            results = _measure(engines, args.repeats, tmp)
            first = len(lines)
            lines.extend(_table(title, unit, results))
            for ours, theirs, target in ratios:
                ratio = _ratio(results, ours, theirs)
                if ratio is None:
                    continue
                goal = f" (target >= {target}x: {'met' if ratio >= float(target) else 'NOT met'})" \
                    if target else ""
                lines.append(f"- {ours} / {theirs}: **{ratio:.2f}x**{goal}")
            if "memory" in title.lower():
                tai = statistics.median(results["tai-fsm async, memory store"])
                lines.append(f"- tai-fsm async on the memory store: {1e6 / tai:.1f} µs per "
                             "transition (target <= 40 µs)")
            lines.append("")
            print("\n".join(lines[first:]), flush=True)
    versions = [f"Python {platform.python_version()}", f"SQLite {sqlite3.sqlite_version}"]
    for module in ("transitions", "eventsourcing", "statemachine"):
        try:
            from importlib.metadata import version

            dist = {"statemachine": "python-statemachine"}.get(module, module)
            versions.append(f"{module} {version(dist)}")
        except Exception:
            versions.append(f"{module} absent")
    shown_args = " ".join(a for a in sys.argv[1:] if a != "--update-docs")
    command = "`.venv/bin/python benchmarks/compare_bench.py" + (
        f" {shown_args}`" if shown_args else "`"
    )
    header = [
        f"Measured {time.strftime('%Y-%m-%d')} with {command}, medians of {args.repeats} "
        "repeats (engine order rotated per repeat).",
        "",
        f"{', '.join(versions)}; {os.cpu_count()} CPUs, load average {load_start:.2f} at the "
        f"start, {os.getloadavg()[0]:.2f} at the end. {settings}.",
        "",
    ]
    text = "\n".join(header + lines).rstrip() + "\n"
    print("\n".join(header))
    if args.update_docs:
        doc = DOC.read_text()
        block = f"{START}\n{text}{END}"
        if START in doc and END in doc:
            before, rest = doc.split(START, 1)
            doc = before + block + rest.split(END, 1)[1]
        else:
            doc = doc.rstrip() + "\n\n## Compared with eventsourcing, transitions and " \
                "python-statemachine\n\n" + block + "\n"
        DOC.write_text(doc)
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()
