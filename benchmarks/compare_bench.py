"""tai-fsm next to the libraries a Python user would pick instead, side by side in one run.

    pip install -e .[bench]                     # eventsourcing + python-statemachine
    .venv/bin/python benchmarks/compare_bench.py                  # 5 repeats
    .venv/bin/python benchmarks/compare_bench.py --quick          # smaller, 3 repeats
    .venv/bin/python benchmarks/compare_bench.py --update-docs    # rewrite its section of
                                                                  # docs/benchmarks.md

Installs nothing itself: ``eventsourcing`` (pyeventsourcing, its own SQLite recorder) and
``statemachine`` (python-statemachine) are imported when present and left out (said so in the
output) when not. Every engine runs the same two-state machine (``a -go-> b -back-> a``).
In each repeat every engine opens on fresh files, then the engines take turns in short
chunks (50 durable triggers, one round of the concurrent load, 500 in-memory triggers), in
an order rotated every turn, so a burst of load from other jobs on this shared machine hits
them alike; a repeat's figure per engine is its transitions over its summed time. The
table shows the median of the repeats (every repeat printed beside it) and ratios of
medians.

Workloads:

* **one machine, sequential durable triggers** (SQLite file, WAL, ``synchronous=FULL`` in
  every engine): tai-fsm async (``await inst.trigger``), tai-fsm blocking
  (``tai_fsm.sync``), eventsourcing (mutate the aggregate, ``app.save(agg)``: one event per
  save), raw ``sqlite3`` one-row insert + commit (the floor: one fsync per commit);
* **100 machines x 20 rounds, every round all 100 triggered concurrently**: tai-fsm with
  one asyncio task per trigger (``gather``; the SQLite store group-commits the round),
  eventsourcing saving all 100 aggregates in one ``app.save(*aggs)`` per round, raw
  ``sqlite3`` writing 100 rows per commit;
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
# Each engine opens on a fresh folder and then performs ``step(n)``: n more transitions.
# Steps of all engines are interleaved in short chunks (see _measure), so a burst of load
# from other jobs on this shared machine hits every engine alike.
_PAYLOAD = orjson.dumps({"machine": "flip", "state": "b", "data": {}})


class Engine:
    def step(self, n: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class RawSequential(Engine):
    """One row per commit: BEGIN, INSERT, COMMIT (the fsync floor)."""

    def __init__(self, folder: Path) -> None:
        self.conn = _raw_conn(folder / "raw.db")
        self.prefix, self.i = uuid.uuid4().hex, 0

    def step(self, n: int) -> None:
        conn = self.conn
        for _ in range(n):
            self.i += 1
            conn.execute("BEGIN")
            conn.execute("INSERT INTO t VALUES (?, ?, ?)", (f"{self.prefix}-{self.i}", 0,
                                                           _PAYLOAD))
            conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class RawBatched(Engine):
    """``machines`` rows (one per stream) per commit; ``step`` counts rows."""

    def __init__(self, folder: Path, machines: int) -> None:
        self.conn = _raw_conn(folder / "raw.db")
        self.machines, self.round = machines, 0

    def step(self, n: int) -> None:
        for _ in range(n // self.machines):
            self.round += 1
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT INTO t VALUES (?, ?, ?)",
                [(f"m{m}-{self.round}", self.round, _PAYLOAD) for m in range(self.machines)],
            )
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _raw_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER, data BLOB)")
    return conn


def _es_app(path: Path) -> Any:
    return Application(env={
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
    })


class EsSequential(Engine):
    """eventsourcing: mutate one aggregate, ``app.save(agg)`` (one event per save)."""

    def __init__(self, folder: Path) -> None:
        self.app = _es_app(folder / "es.db")
        self.agg = EsFlip()
        self.app.save(self.agg)

    def step(self, n: int) -> None:
        agg, save = self.agg, self.app.save
        for _ in range(n):
            agg.go() if agg.state == "a" else agg.back()
            save(agg)

    def close(self) -> None:
        self.app.close()


class EsBatched(Engine):
    """eventsourcing: mutate ``machines`` aggregates, save them all in one call."""

    def __init__(self, folder: Path, machines: int) -> None:
        self.app = _es_app(folder / "es.db")
        self.aggs = [EsFlip() for _ in range(machines)]
        self.app.save(*self.aggs)

    def step(self, n: int) -> None:
        for _ in range(n // len(self.aggs)):
            for agg in self.aggs:
                agg.go() if agg.state == "a" else agg.back()
            self.app.save(*self.aggs)

    def close(self) -> None:
        self.app.close()


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


class TaiAsync(Engine):
    """tai-fsm's async runtime, its own event loop; ``machines`` instances, and each step
    triggers every one of them concurrently (one task per instance) when there are
    several."""

    def __init__(self, store: fsm.Store, machines: int = 1) -> None:
        self.loop = asyncio.new_event_loop()
        self.rt = fsm.Runtime(store, [Flip])
        self.flips = self.loop.run_until_complete(self._create(machines))

    async def _create(self, machines: int) -> list[Any]:
        tag = uuid.uuid4().hex[:8]
        return [await self.rt.create("flip", f"f-{tag}-{m}") for m in range(machines)]

    def step(self, n: int) -> None:
        self.loop.run_until_complete(self._step(n))

    async def _step(self, n: int) -> None:
        flips = self.flips
        if len(flips) == 1:
            flip = flips[0]
            for _ in range(n):
                await flip.trigger("go" if flip.state == "a" else "back")
            return
        for _ in range(n // len(flips)):
            await asyncio.gather(*(f.trigger("go" if f.state == "a" else "back")
                                   for f in flips))

    def close(self) -> None:
        self.loop.run_until_complete(self.rt.close())
        self.loop.close()


class TaiBlocking(Engine):
    """tai-fsm's blocking runtime (``tai_fsm.sync``) on one instance."""

    def __init__(self, url: str) -> None:
        self.rt = sync.Runtime(sync.open_store(url), [Flip])
        self.flip = self.rt.create("flip", f"f-{uuid.uuid4().hex[:8]}")

    def step(self, n: int) -> None:
        flip = self.flip
        for _ in range(n):
            flip.trigger("go" if flip.state == "a" else "back")

    def close(self) -> None:
        self.rt.close()


class _Model:
    pass


class Bare(Engine):
    """Bare ``transitions``: one model, no persistence."""

    def __init__(self) -> None:
        self.model = _Model()
        BareMachine(model=self.model, states=["a", "b"], initial="a", auto_transitions=False,
                    transitions=[["go", "a", "b"], ["back", "b", "a"]])

    def step(self, n: int) -> None:
        model = self.model
        for _ in range(n):
            model.go() if model.state == "a" else model.back()  # type: ignore[attr-defined]


class Psm(Engine):
    """python-statemachine, no persistence."""

    def __init__(self) -> None:
        self.machine = PsmFlip()

    def step(self, n: int) -> None:
        machine = self.machine
        for _ in range(n):
            machine.go() if machine.a.is_active else machine.back()


def bare_transitions(count: int) -> float:
    """Triggers/s of bare ``transitions`` (used by other scripts)."""
    engine = Bare()
    started = time.perf_counter()
    engine.step(count)
    return count / (time.perf_counter() - started)


# ---------------------------------------------------------------------- running
Opener = tuple[str, Callable[[Path], Engine]]


def _measure(
    openers: list[Opener], repeats: int, chunks: int, chunk: int, tmp: Path
) -> dict[str, list[float]]:
    """Per repeat: open every engine on a fresh folder, then ``chunks`` rounds in which
    each engine performs ``chunk`` transitions, in an order rotated every round; the
    repeat's rate is transitions / summed time, per engine."""
    results: dict[str, list[float]] = {name: [] for name, _ in openers}
    for repeat in range(repeats):
        engines: list[tuple[str, Engine]] = []
        for name, opener in openers:
            folder = tmp / f"{repeat}-{uuid.uuid4().hex[:6]}"
            folder.mkdir()
            engines.append((name, opener(folder)))
        spent = dict.fromkeys(results, 0.0)
        for engine_round in range(chunks):
            shift = (engine_round + repeat) % len(engines)
            for name, engine in engines[shift:] + engines[:shift]:
                started = time.perf_counter()
                engine.step(chunk)
                spent[name] += time.perf_counter() - started
        for name, engine in engines:
            engine.close()
            results[name].append(chunks * chunk / spent[name])
        gc.collect()
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


RAW_SEQ, ASYNC, BLOCKING, ES_SEQ = (
    "raw sqlite3, 1 row insert+commit (floor)",
    "tai-fsm async",
    "tai-fsm blocking (`tai_fsm.sync`)",
    "eventsourcing, 1 event per save",
)
BARE, MEM_ASYNC, MEM_BLOCKING, PSM = (
    "bare `transitions` (no persistence)",
    "tai-fsm async, memory store",
    "tai-fsm blocking, memory store",
    "python-statemachine (no persistence)",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000,
                        help="sequential durable triggers per engine and repeat")
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--memory-count", type=int, default=20000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="sequential,concurrent,memory")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.count, args.rounds, args.memory_count = 3, 600, 10, 6000
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
        machines = args.machines
        con_tai = f"tai-fsm async, {machines} concurrent tasks (group commit)"
        con_es = f"eventsourcing, {machines} aggregates per save"
        con_raw = f"raw sqlite3, {machines} rows per commit"
        # (title, unit, engines, chunks, chunk, ratios: (ours, theirs, target))
        sections: list[tuple[str, str, list[Opener], int, int, list[tuple[str, str, str]]]] = []
        if "sequential" in only:
            openers: list[Opener] = [
                (RAW_SEQ, RawSequential),
                (ASYNC, lambda d: TaiAsync(SQLiteStore(d / "tai.db"))),
                (BLOCKING, lambda d: TaiBlocking(f"sqlite:///{d / 'tai.db'}")),
            ]
            if has_es:
                openers.append((ES_SEQ, EsSequential))
            sections.append((
                f"One machine, {args.count:,} sequential durable triggers per engine "
                "(SQLite WAL, FULL)", "triggers/s", openers, args.count // 50, 50,
                [(ASYNC, ES_SEQ, "1.2"), (BLOCKING, ES_SEQ, "1.2"),
                 (ASYNC, RAW_SEQ, ""), (BLOCKING, RAW_SEQ, "")],
            ))
        if "concurrent" in only:
            openers = [
                (con_raw, lambda d: RawBatched(d, machines)),
                (con_tai, lambda d: TaiAsync(SQLiteStore(d / "tai.db"), machines)),
            ]
            if has_es:
                openers.append((con_es, lambda d: EsBatched(d, machines)))
            sections.append((
                f"{machines} machines x {args.rounds} rounds, every round all {machines} "
                "triggered concurrently (SQLite WAL, FULL)", "transitions/s", openers,
                args.rounds, machines,
                [(con_tai, con_es, "1.2"), (con_tai, con_raw, "")],
            ))
        if "memory" in only:
            openers = [
                (BARE, lambda d: Bare()),
                (MEM_ASYNC, lambda d: TaiAsync(MemoryStore())),
                (MEM_BLOCKING, lambda d: TaiBlocking("memory://")),
            ]
            if has_psm:
                openers.append((PSM, lambda d: Psm()))
            sections.append((
                f"In memory, {args.memory_count:,} triggers per engine on one machine",
                "triggers/s", openers, args.memory_count // 500, 500,
                [(MEM_ASYNC, BARE, "0.25"), (MEM_ASYNC, PSM, "2"),
                 (MEM_BLOCKING, BARE, "0.25"), (MEM_BLOCKING, PSM, "2")],
            ))
        for title, unit, openers, chunks, chunk, ratios in sections:
            results = _measure(openers, args.repeats, chunks, chunk, tmp)
            first = len(lines)
            lines.extend(_table(title, unit, results))
            for ours, theirs, target in ratios:
                ratio = _ratio(results, ours, theirs)
                if ratio is None:
                    continue
                goal = ""
                if target:
                    verdict = "met" if ratio >= float(target) else "NOT met"
                    goal = f" (target >= {target}x: {verdict})"
                lines.append(f"- {ours} / {theirs}: **{ratio:.2f}x**{goal}")
            if MEM_ASYNC in results:
                for name in (MEM_ASYNC, MEM_BLOCKING, BARE):
                    per = 1e6 / statistics.median(results[name])
                    lines.append(f"- {name}: {per:.1f} µs per transition"
                                 + (" (target <= 40 µs)" if name == MEM_ASYNC else ""))
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
        "repeats; within a repeat the engines take turns in short chunks (order rotated "
        "every turn), so load from other jobs hits them alike.",
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
