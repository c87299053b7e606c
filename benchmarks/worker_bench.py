"""Workers on SQLite: commands/s through the inbox with 1, 2 and 4 worker processes, the
rate of ``Runtime.send``, and how long a killed worker's shards take to be taken over
against the lease TTL.

    .venv/bin/python benchmarks/worker_bench.py                  # the figures in the docs
    .venv/bin/python benchmarks/worker_bench.py --commands 2000 --workers 1,2 --ttls 2
    .venv/bin/python benchmarks/worker_bench.py --update-docs    # rewrite docs/benchmarks.md

* **Throughput** — ``--instances`` instances, ``--workers`` ``tai-fsm worker`` processes
  (16 shards) started and balanced first; then ``--commands`` commands are put in the inbox
  in bulk (250 per commit, so the sender is not what is measured) and the clock runs until
  the last one is applied (its outcome record written). Each command is one commit of 4
  writes (event, state record, inbox delete, outcome) plus the fence check. Checked after
  every run: each instance's counter equals the commands it was sent.
* **send** — ``Runtime.send`` from one process: one after the other, and 32 at a time.
* **Takeover** — 2 workers balanced, one is killed (SIGKILL); measured: until the survivor
  holds every shard lease, and until a command sent to an instance of the dead worker's
  shards right after the kill is applied.

This module is also the ``--machines`` module of the worker processes (``Meter``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import tai_fsm as fsm  # noqa: E402
from tai_fsm.runtime.inbox import INBOX, INBOX_DONE, Command, next_seq  # noqa: E402
from tai_fsm.stores import ops  # noqa: E402
from tai_fsm.worker.membership import read_workers  # noqa: E402
from tai_fsm.worker.shards import lease_resource, shard_of  # noqa: E402

GOV = "bench"
SHARDS = 16


class Meter(fsm.Machine):
    name = "meter"
    counting = fsm.State(initial=True)
    stopped = fsm.State(final=True)
    tick = counting.to(None, before=["inc"])
    stop = counting.to(stopped)

    def inc(self, event: Any) -> None:
        self.data["n"] = int(self.data.get("n", 0)) + 1


# ---------------------------------------------------------------------- helpers
def _start_worker(db: Path, name: str, ttl: float, log: Path,
                  *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tai_fsm.cli", "--store", f"sqlite:///{db}", "--governor",
           GOV, "--machines", "worker_bench", "worker", "--id", name, "--shards",
           str(SHARDS), "--lease-ttl", str(ttl), "--poll-interval", "0.05",
           "--concurrency", "32", "--log-level", "WARNING", *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, env=env, cwd=HERE)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _until(check: Any, seconds: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


async def _balanced(store: fsm.Store, workers: int) -> bool:
    now = datetime.now(UTC)
    live = [r for r in await read_workers(store, GOV) if r.live(now)]
    if len(live) != workers:
        return False
    counts = [len(r.owned) for r in live]
    return sum(counts) == SHARDS and max(counts) - min(counts) <= 1


async def _create(rt: fsm.Runtime, ids: list[str]) -> None:
    sem = asyncio.Semaphore(64)

    async def one(instance_id: str) -> None:
        async with sem:
            await rt.create(Meter, instance_id)

    await asyncio.gather(*(one(i) for i in ids))


async def _queue(store: fsm.Store, targets: list[str]) -> None:
    """One ``tick`` command per entry of ``targets``, put in the inbox 250 per commit."""
    batch: list[ops.Op] = []
    for instance_id in targets:
        seq = next_seq()
        command = Command(uuid.uuid4().hex, instance_id, "tick", {}, None, None, {},
                          "bench", datetime.fromtimestamp(seq / 1e9, UTC), seq)
        batch.append(ops.Put(command.command_id, command.snapshot(), 0, kind=INBOX))
        if len(batch) == 250:
            await store.commit(GOV, batch)
            batch = []
    if batch:
        await store.commit(GOV, batch)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _count(store: fsm.Store, kind: str) -> int:
    return len([i async for i in store.list_records(GOV, kind=kind)])


# ---------------------------------------------------------------------- throughput
async def _throughput(workers: int, commands: int, instances: int, folder: Path) -> float:
    db = folder / f"tp-{workers}-{uuid.uuid4().hex[:6]}.db"
    ids = [f"m-{n:05d}" for n in range(instances)]
    procs: list[subprocess.Popen[bytes]] = []
    async with fsm.Runtime(fsm.open_store(f"sqlite:///{db}"), [Meter], node_id="bench",
                           governor=GOV) as rt:
        await _create(rt, ids)
        try:
            procs = [_start_worker(db, f"w{i}", 3.0, folder / f"tp-w{i}.log")
                     for i in range(workers)]
            await _until(lambda: _balanced(rt.store, workers), 60, "balanced workers", 0.1)
            sent: dict[str, int] = {}
            started = time.perf_counter()
            targets = [ids[n % instances] for n in range(commands)]
            for instance_id in targets:
                sent[instance_id] = sent.get(instance_id, 0) + 1
            await _queue(rt.store, targets)

            async def done() -> bool:
                return await _count(rt.store, INBOX) == 0

            await _until(done, 600, "the inbox to drain", 0.05)
            elapsed = time.perf_counter() - started
        finally:
            _stop(procs)
        assert await _count(rt.store, INBOX_DONE) == commands
        states = await rt.store.batch_read_states(GOV, ids)
        for instance_id, stored in states.items():
            got = stored.snapshot.data["data"].get("n", 0)
            assert got == sent.get(instance_id, 0), (instance_id, got)
    return commands / elapsed


async def _send_rate(folder: Path, count: int) -> tuple[float, float]:
    db = folder / f"send-{uuid.uuid4().hex[:6]}.db"
    async with fsm.Runtime(fsm.open_store(f"sqlite:///{db}"), [Meter], node_id="bench",
                           governor=GOV) as rt:
        started = time.perf_counter()
        for n in range(count):
            await rt.send(f"m-{n % 100}", "tick")
        sequential = count / (time.perf_counter() - started)
        sem = asyncio.Semaphore(32)

        async def one(n: int) -> None:
            async with sem:
                await rt.send(f"m-{n % 100}", "tick")

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        concurrent = count / (time.perf_counter() - started)
    return sequential, concurrent


# ---------------------------------------------------------------------- memory
async def _rss(instances: int, bounds: list[int], folder: Path) -> list[tuple[int, float, float]]:
    """One worker applies one command to each of ``instances`` instances, once per bound
    of ``--max-resident``: ``(bound, RSS once started, peak RSS)`` in MB."""
    db = folder / f"rss-{uuid.uuid4().hex[:6]}.db"
    ids = [f"m-{n:06d}" for n in range(instances)]
    results = []
    async with fsm.Runtime(fsm.open_store(f"sqlite:///{db}"), [Meter], node_id="bench",
                           governor=GOV) as rt:
        await _create(rt, ids)
        for bound in bounds:
            proc = _start_worker(db, "mem", 10.0, folder / "rss.log", "--max-resident",
                                 str(bound))
            try:
                await _until(lambda: _balanced(rt.store, 1), 60, "the worker", 0.1)
                await asyncio.sleep(1.0)
                start_rss = peak = _rss_mb(proc.pid)
                await _queue(rt.store, ids)
                while await _count(rt.store, INBOX):
                    peak = max(peak, _rss_mb(proc.pid))
                    await asyncio.sleep(0.2)
                peak = max(peak, _rss_mb(proc.pid))
            finally:
                _stop([proc])
            results.append((bound, start_rss, peak))
    return results


# ---------------------------------------------------------------------- takeover
async def _takeover(ttl: float, folder: Path) -> tuple[float, float]:
    db = folder / f"to-{ttl:g}-{uuid.uuid4().hex[:6]}.db"
    ids = [f"m-{n:03d}" for n in range(64)]
    procs: list[subprocess.Popen[bytes]] = []
    async with fsm.Runtime(fsm.open_store(f"sqlite:///{db}"), [Meter], node_id="bench",
                           governor=GOV) as rt:
        await _create(rt, ids)
        try:
            procs = [_start_worker(db, name, ttl, folder / f"to-{name}.log")
                     for name in ("a", "b")]
            await _until(lambda: _balanced(rt.store, 2), 60, "balanced workers", 0.05)
            await asyncio.sleep(ttl / 2)  # somewhere in a renewal period
            records = {r.worker_id: r for r in await read_workers(rt.store, GOV)}
            victim_shards = set(records["a"].owned)
            target = next(i for i in ids if shard_of(i, SHARDS) in victim_shards)
            procs[0].send_signal(signal.SIGKILL)
            killed = time.perf_counter()
            procs[0].wait()
            receipt = await rt.send(target, "tick")

            async def taken() -> bool:
                found = await rt.store.batch_read_records(
                    GOV, [lease_resource(s) for s in range(SHARDS)], kind=ops.LOCKS
                )
                now = datetime.now(UTC)
                for stored in found.values():
                    lease = fsm.coordination.Lease.of(stored.snapshot.id, stored.snapshot)
                    if not (lease.held(now) and (lease.client_id or "").startswith("b.")):
                        return False
                return len(found) == SHARDS

            await _until(taken, 120, "the takeover", 0.01)
            takeover = time.perf_counter() - killed

            async def applied() -> bool:
                return (await rt.command(receipt.command_id)).status == "applied"

            await _until(applied, 120, "the command", 0.01)
            command = time.perf_counter() - killed
        finally:
            _stop(procs)
    return takeover, command


# ---------------------------------------------------------------------- report
def _report(args: argparse.Namespace, tp: dict[int, list[float]],
            send: tuple[float, float], to: dict[float, list[tuple[float, float]]],
            rss: list[tuple[int, float, float]]) -> str:
    load = os.getloadavg()[0]
    lines = [
        "<!-- worker-bench:start -->",
        "## Workers: inbox throughput and takeover",
        "",
        "Command: `.venv/bin/python benchmarks/worker_bench.py` (add `--update-docs` to "
        "rewrite this section).",
        "",
        f"SQLite file (WAL, `synchronous=FULL`), {SHARDS} shards, Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs shared by the workers and the "
        f"bench process, load average {load:.2f} at the end; median of {args.runs} runs.",
        "",
        f"**Commands/s through the inbox** ({args.commands:,} commands over "
        f"{args.instances:,} instances, queued in bulk; each applied in one commit with its "
        "acknowledgement):",
        "",
        "| workers | commands/s (median) | runs |",
        "| ---: | ---: | --- |",
    ]
    for workers, rates in tp.items():
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        lines.append(f"| {workers} | {statistics.median(rates):,.0f} | {runs} |")
    lines += [
        "",
        f"**`Runtime.send`** from one process ({args.sends:,} sends): {send[0]:,.0f}/s one "
        f"after the other, {send[1]:,.0f}/s with 32 at a time (one commit each; concurrent "
        "sends share SQLite group commits).",
        "",
        "**Takeover after `kill -9`** (2 workers, 64 instances): until the survivor holds "
        "every lease, and until a command sent right after the kill to an instance of the "
        "dead worker's shards is applied.",
        "",
        "| lease TTL | takeover (median) | command applied (median) | runs (takeover / command) |",
        "| ---: | ---: | ---: | --- |",
    ]
    for ttl, runs_ in to.items():
        take = statistics.median(r[0] for r in runs_)
        cmd = statistics.median(r[1] for r in runs_)
        detail = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in runs_)
        lines.append(f"| {ttl:g} s | {take:.2f} s | {cmd:.2f} s | {detail} |")
    if rss:
        lines += [
            "",
            f"**Memory of one worker** applying one command to each of {args.rss:,} "
            "instances (each loaded lazily: state record read, live instance built):",
            "",
            "| `--max-resident` | RSS once started | peak RSS |",
            "| ---: | ---: | ---: |",
        ]
        for bound, start_rss, peak in rss:
            lines.append(f"| {bound:,} | {start_rss:.0f} MB | {peak:.0f} MB |")
    lines += [
        "",
        "Reading the figures: the survivor takes a shard over once the dead worker's lease "
        "has expired (up to one TTL after its last renewal) and its own membership tick "
        "(every TTL/3) comes round, so takeover lies between about 2/3 TTL and 4/3 TTL. "
        "Throughput is bound by the 2 CPUs, which every worker process and the SQLite "
        "writer share: more workers add availability (shards keep moving when one dies), "
        "not commits per second, on one machine and one SQLite file.",
        "<!-- worker-bench:end -->",
    ]
    return "\n".join(lines)


def _update_docs(section: str) -> None:
    path = HERE.parent / "docs" / "benchmarks.md"
    text = path.read_text()
    pattern = re.compile(r"<!-- worker-bench:start -->.*?<!-- worker-bench:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


async def _main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="worker-bench-"))
    tp: dict[int, list[float]] = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        tp[workers] = []
        for _ in range(args.runs):
            rate = await _throughput(workers, args.commands, args.instances, folder)
            tp[workers].append(rate)
            print(f"{workers} worker(s): {rate:,.0f} commands/s", flush=True)
    send = await _send_rate(folder, args.sends)
    print(f"send: {send[0]:,.0f}/s sequential, {send[1]:,.0f}/s 32 at a time", flush=True)
    to: dict[float, list[tuple[float, float]]] = {}
    for ttl in [float(t) for t in args.ttls.split(",")]:
        to[ttl] = []
        for _ in range(args.runs):
            result = await _takeover(ttl, folder)
            to[ttl].append(result)
            print(f"ttl {ttl:g}s: takeover {result[0]:.2f}s, command applied {result[1]:.2f}s",
                  flush=True)
    rss: list[tuple[int, float, float]] = []
    if args.rss:
        rss = await _rss(args.rss, [args.rss // 10, args.rss], folder)
        for bound, start_rss, peak in rss:
            print(f"max-resident {bound}: RSS {start_rss:.0f} MB at start, peak {peak:.0f} MB",
                  flush=True)
    section = _report(args, tp, send, to, rss)
    print(section)
    if args.update_docs:
        _update_docs(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=4000)
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--ttls", default="1,2,4")
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rss", type=int, default=20_000, metavar="INSTANCES",
                        help="memory run: one command to each of this many instances, with "
                        "--max-resident INSTANCES/10 and INSTANCES (0: skip)")
    parser.add_argument("--update-docs", action="store_true")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
