"""Coordination: transactions/s with and without contention, lock acquire+release latency.

    .venv/bin/python benchmarks/coordination_bench.py                 # memory + sqlite, 5 runs
    .venv/bin/python benchmarks/coordination_bench.py --quick         # fewer transactions
    .venv/bin/python benchmarks/coordination_bench.py --backends sqlite,firestore
                                                      # starts its own Firestore emulator
    .venv/bin/python benchmarks/coordination_bench.py --update-docs   # rewrite its section
                                                                      # of docs/benchmarks.md

Every transaction is a transfer between two accounts through
``TransactionManager.execute_transaction``: one batched read of both accounts, two
conditional puts, ONE ``Store.commit`` (the reads become the puts' expected versions).

* ``raw commit`` — the same read + commit written by hand with ``store.batch_read_states``
  and ``store.commit`` (no transaction object, no retry helper): the floor;
* ``1 task`` — sequential transactions, no contention;
* ``8 tasks, disjoint`` — 8 concurrent tasks, each on its own two accounts (no conflicts);
* ``8 tasks, 2 hot accounts`` — 8 concurrent tasks all moving money between the same two
  accounts, each transaction yielding to the event loop once between its read and its
  write (as any real await would; the memory store never suspends by itself): commits
  conflict with the others' reads, and conflicts re-run the whole transaction with
  full-jitter backoff (cap 50 ms). Reported with attempts per committed transaction;
* ``lock acquire+release`` — median latency of one ``acquire_lock`` + ``release_lock`` pair
  (sequential, one client, one resource; each is a read and a commit).

Medians of ``--runs`` runs, each on a fresh store (SQLite: a new file, WAL, synchronous=FULL).
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
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tai_fsm.coordination import Transaction, TransactionManager
from tai_fsm.records import StateSnapshot
from tai_fsm.retry import RetryPolicy
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store

GOV = "bench"
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## Coordination: transactions and locks"
START, END = "<!-- coordination-bench:start -->", "<!-- coordination-bench:end -->"
POLICY = RetryPolicy(max_attempts=1000, cap=0.05)
NOTES = """\
Reading the figures: a transaction costs what its store calls cost — one batched read and
one commit — plus the transaction object and the retry helper: about 25 µs per transaction
(two reads, two writes) measured against a store stub that answers at once, and 30 to 90 µs
when interleaved with the raw path on the memory store (raw: 200 to 540 µs per transfer on
this loaded machine); on SQLite and Firestore it is lost in the I/O, and *1 task,
sequential* and *raw commit* agree within the noise. On the memory store the time goes to
encoding, sealing and decoding the records (checks and JSON on every read and write); on
SQLite to the commit's fsync (`synchronous=FULL`) and the hop to the store's worker thread.
*8 tasks, disjoint* is faster than one task on SQLite because commits queued while the
worker is busy share one transaction and fsync (group commit). On *2 hot accounts* every
commit invalidates the other tasks' reads: each committed transfer took the shown number of
attempts, and the throughput is what serialisable transactions on two records allow. A lock
acquire+release is two reads and two commits (the lease is written at the version read, then
marked free). The machine is shared: runs under other jobs' load spread widely; the medians
are shown with every run."""
TASKS = 8


@asynccontextmanager
async def open_store(backend: str, folder: Path) -> AsyncIterator[Store]:
    if backend == "memory":
        from tai_fsm.stores.memory import MemoryStore

        async with MemoryStore() as memory:
            yield memory
    elif backend == "sqlite":
        from tai_fsm.stores.sqlite import SQLiteStore

        async with SQLiteStore(folder / f"{uuid.uuid4().hex[:8]}.db") as sqlite_store:
            yield sqlite_store
    else:
        from tai_fsm.stores.firestore import FirestoreStore

        store = FirestoreStore(project="tai-fsm-bench", prefix=f"b{uuid.uuid4().hex[:10]}")
        try:
            yield store
        finally:
            await store.drop_all()
            await store.close()


def _account(account: str, balance: int) -> StateSnapshot:
    return StateSnapshot(id=account, data={"balance": balance})


async def _open(store: Store, accounts: list[str]) -> None:
    for account in accounts:
        await store.save_state(GOV, account, _account(account, 1_000_000))


def transfer(source: str, target: str, *, yields: bool = False) -> Callable[[Transaction], Any]:
    async def fn(tx: Transaction) -> int:
        got = await tx.batch_get_states([source, target])
        if yields:  # as any real await would (the memory store never suspends by itself)
            await asyncio.sleep(0)
        (a, av), (b, bv) = got[source], got[target]
        tx.update_state(source, _account(source, a.data["balance"] - 1), expected_version=av)
        tx.update_state(target, _account(target, b.data["balance"] + 1), expected_version=bv)
        return tx.attempt

    return fn


async def raw_transfer(store: Store, source: str, target: str) -> None:
    got = await store.batch_read_states(GOV, [source, target])
    a, b = got[source], got[target]
    await store.commit(GOV, [
        ops.Put(source, _account(source, a.snapshot.data["balance"] - 1), a.version, a.token),
        ops.Put(target, _account(target, b.snapshot.data["balance"] + 1), b.version, b.token),
    ])


async def measure(backend: str, folder: Path, count: int) -> dict[str, float]:
    """One run of every measurement on fresh stores; rates per second, latency in ms."""
    found: dict[str, float] = {}
    async with open_store(backend, folder) as store:
        await _open(store, ["r0", "r1"])
        started = time.perf_counter()
        for _ in range(count):
            await raw_transfer(store, "r0", "r1")
        found["raw"] = count / (time.perf_counter() - started)
    async with open_store(backend, folder) as store:
        tm = TransactionManager(store, policy=POLICY)
        await _open(store, ["s0", "s1"])
        fn = transfer("s0", "s1")
        started = time.perf_counter()
        for _ in range(count):
            await tm.execute_transaction(GOV, fn)
        found["sequential"] = count / (time.perf_counter() - started)
    async with open_store(backend, folder) as store:
        tm = TransactionManager(store, policy=POLICY)
        await _open(store, [f"d{n}" for n in range(2 * TASKS)])
        per_task = max(1, count // TASKS)

        async def disjoint(n: int) -> None:
            fn = transfer(f"d{2 * n}", f"d{2 * n + 1}")
            for _ in range(per_task):
                await tm.execute_transaction(GOV, fn)

        started = time.perf_counter()
        await asyncio.gather(*(disjoint(n) for n in range(TASKS)))
        found["disjoint"] = per_task * TASKS / (time.perf_counter() - started)
    async with open_store(backend, folder) as store:
        tm = TransactionManager(store, policy=POLICY)
        await _open(store, ["h0", "h1"])
        attempts: list[int] = []

        async def hot(n: int) -> None:
            fn = transfer("h0", "h1", yields=True) if n % 2 else transfer("h1", "h0", yields=True)
            for _ in range(per_task):
                attempts.append(await tm.execute_transaction(GOV, fn))

        started = time.perf_counter()
        await asyncio.gather(*(hot(n) for n in range(TASKS)))
        found["contended"] = per_task * TASKS / (time.perf_counter() - started)
        found["attempts"] = statistics.mean(attempts)
        got = await store.batch_get_states(GOV, ["h0", "h1"])
        assert sum(s.data["balance"] for s, _ in got.values()) == 2_000_000
    async with open_store(backend, folder) as store:
        tm = TransactionManager(store)
        latencies = []
        for _ in range(max(50, count // 2)):
            started = time.perf_counter()
            held = await tm.acquire_lock("resource", "client", ttl=30, wait=0)
            await tm.release_lock("resource", held.lock_token)
            latencies.append(time.perf_counter() - started)
        found["lock_ms"] = statistics.median(latencies) * 1000
    return found


def report(backend: str, runs: list[dict[str, float]], count: int) -> list[str]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    def row(name: str, key: str, unit: str, fmt: str = ",.0f") -> str:
        samples = " ".join(format(r[key], fmt) for r in runs)
        return f"| {name} | {format(med(key), fmt)} {unit} | {samples} |"

    return [
        f"**{backend}** — {count} transactions per measurement, median of {len(runs)} runs:",
        "",
        "| measurement | median | runs |",
        "| --- | ---: | --- |",
        row("raw commit (batch read + commit by hand)", "raw", "transfers/s"),
        row("1 task, sequential transactions", "sequential", "tx/s"),
        row(f"{TASKS} tasks, disjoint accounts", "disjoint", "tx/s"),
        row(f"{TASKS} tasks, 2 hot accounts (contention)", "contended", "tx/s"),
        row("  attempts per committed transaction (contention)", "attempts", "", ".2f"),
        row("lock acquire+release, median latency", "lock_ms", "ms", ".2f"),
        "",
    ]


def update_docs(lines: list[str], command: str) -> None:
    """Rewrite this benchmark's section of docs/benchmarks.md (other sections untouched)."""
    section = "\n".join([
        START, HEADING, "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} with `{command}` "
        "(add `--update-docs` to rewrite this section).",
        "", *lines, END,
    ])
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="memory,sqlite",
                        help="comma-separated: memory, sqlite, firestore")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=None,
                        help="transactions per measurement (default 800; firestore 200)")
    parser.add_argument("--quick", action="store_true", help="200 transactions, 3 runs")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs = 3 if args.quick else args.runs
    lines = [
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start.",
        "",
    ]
    emulator = None
    if "firestore" in backends and not os.environ.get("FIRESTORE_EMULATOR_HOST"):
        from tai_fsm.testing.emulator import FirestoreEmulator

        emulator = FirestoreEmulator(export=True)
        emulator.start()
        print(f"emulator pid {emulator.pid} on {emulator.host}", flush=True)
    try:
        for backend in backends:
            default = 200 if backend == "firestore" else 800
            count = args.count or (200 if args.quick else default)
            with tempfile.TemporaryDirectory() as folder:
                if backend == "firestore":  # warm the emulator's JIT first
                    asyncio.run(measure(backend, Path(folder), 50))
                results = [asyncio.run(measure(backend, Path(folder), count))
                           for _ in range(runs)]
            section = report(backend, results, count)
            print("\n".join(section), flush=True)
            lines += section
    finally:
        if emulator is not None:
            emulator.stop()
    lines.append(
        f"Load average {os.getloadavg()[0]:.2f} at the end. Contention: {TASKS} tasks re-run "
        "whole transactions on conflict (full-jitter backoff from 5 ms, cap 50 ms)."
    )
    lines += ["", NOTES]
    if args.update_docs:
        command = ".venv/bin/python benchmarks/coordination_bench.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--update-docs"
        )
        update_docs(lines, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
