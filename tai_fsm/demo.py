"""``tai-fsm demo``: drive transitions in a child process, kill it with SIGKILL mid-stream,
recover every instance from the store, prove nothing acknowledged was lost and the audit
chains are intact, then keep going on the recovered instances. Then the worker half
(:mod:`tai_fsm.demo_worker`): commands through the inbox to a ``tai-fsm worker`` child that
is killed and restarted, durable timers firing, nothing lost or doubled.

The machines are the ones shipped in the package (``tai_fsm/demo_machines/*.yaml`` with the
behaviour in :mod:`tai_fsm.demo_classes`), so the demo runs from any directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tai_fsm.definition.machine import Machine
from tai_fsm.demo_classes import DEMO_DATA, DEMO_MACHINES, MACHINES_DIR
from tai_fsm.demo_worker import run_worker_demo
from tai_fsm.errors import (
    InvalidInput,
    PostCommitHookFailed,
    TaiFsmError,
    TransitionNotAllowed,
    shown,
)
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.url import open_store

__all__ = ["new_governor", "run_demo"]

_ACK = "ACK"


async def _new_instance(rt: Runtime, serial: int, rng: random.Random, ack: bool) -> Machine:
    """Create the ``serial``-th demo instance (machines in turn)."""
    machine = DEMO_MACHINES[serial % len(DEMO_MACHINES)].spec.name
    data = dict(DEMO_DATA.get(machine, {}))
    if machine == "order":
        data["items"] = rng.randint(0, 3)  # some orders are empty and cannot be paid
    instance = await rt.create(machine, f"{machine}-{serial + 1}", data, actor="demo")
    if ack:
        print(f"{_ACK} {instance.id} {instance.version} @create", flush=True)
    return instance


async def _drive(
    rt: Runtime,
    pool: list[Machine],
    transitions: int,
    rng: random.Random,
    ack: bool,
    next_serial: int,
) -> int:
    """Fire ``transitions`` random allowed triggers over the live instances in ``pool``;
    an instance that reaches a final state is replaced by a new one. Prints an ACK line
    after each commit when ``ack``. Returns how many transitions committed."""
    committed = 0
    for _ in range(transitions):
        slot = rng.randrange(len(pool))
        instance = pool[slot]
        options = [t for t in instance.available_triggers if instance.may_trigger(t)]
        if instance.is_final or not options:
            pool[slot] = await _new_instance(rt, next_serial, rng, ack)
            next_serial += 1
            continue
        trigger = rng.choice(options)
        try:
            event = await instance.trigger(trigger, actor="demo", reason="demo traffic")
        except TransitionNotAllowed:
            continue
        except PostCommitHookFailed as exc:
            event = exc.event
        committed += 1
        if ack:
            print(f"{_ACK} {instance.id} {event.version} {trigger}", flush=True)
    return committed


async def _child(store_url: str, governor: str, count: int, transitions: int, seed: int) -> None:
    rng = random.Random(seed)
    store = open_store(store_url)
    async with Runtime(store, DEMO_MACHINES, node_id="demo-child", governor=governor) as rt:
        pool = [await _new_instance(rt, serial, rng, ack=True) for serial in range(count)]
        await _drive(rt, pool, transitions, rng, ack=True, next_serial=count)


@dataclass
class _ChildRun:
    acked: dict[str, int] = field(default_factory=dict)
    last: str = ""
    lines: int = 0
    killed: bool = False


def _run_child(store_url: str, governor: str, count: int, transitions: int,
               kill_after: int, seed: int) -> _ChildRun:
    cmd = [sys.executable, "-m", "tai_fsm.demo", "--child", store_url, governor,
           str(count), str(transitions), str(seed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    run = _ChildRun()
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if len(parts) == 4 and parts[0] == _ACK:
            run.acked[parts[1]] = int(parts[2])
            run.last = f"{parts[1]} v{parts[2]} ({parts[3]})"
            run.lines += 1
            if run.lines >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                run.killed = True
                break
    proc.wait()
    if proc.stdout:
        proc.stdout.close()
    if not run.killed and proc.returncode != 0:
        raise TaiFsmError(
            f"the demo's child process failed (exit code {proc.returncode}); its error is above"
        )
    return run


async def _recover_and_check(
    store_url: str, governor: str, run: _ChildRun, more: int, seed: int
) -> int:
    store = open_store(store_url)
    async with Runtime(store, DEMO_MACHINES, node_id="demo-parent", governor=governor) as rt:
        ids = [i async for i in rt.instance_ids()]
        started = time.perf_counter()
        replayed = 0
        from_snapshots = 0
        lost: list[str] = []
        reports = []
        for instance_id in ids:
            report = await rt.recover(instance_id)
            reports.append(report)
            replayed += report.replayed_events
            from_snapshots += 1 if report.snapshot_version else 0
            if report.instance.version < run.acked.get(instance_id, 0):
                lost.append(instance_id)
        elapsed = time.perf_counter() - started
        stats = await rt.store.get_stats(governor)
        events = stats.total_events
        print(f"recovered all {len(ids)} instances from the store in {elapsed * 1000:.1f} ms "
              f"({replayed} events replayed, {from_snapshots} from a snapshot; "
              "state set directly, no callbacks re-run)")
        missing_ack = len(lost)
        print(f"acknowledged commits before the kill: {run.lines} — "
              f"{'all present' if not lost else f'{missing_ack} MISSING: {lost}'}; "
              f"the log holds {stats.total_events} events (a commit that landed before its "
              "acknowledgement was printed is kept, never half-written)")
        print(f"last acknowledged transition: {run.last} — present")
        broken = []
        checked = 0
        verify_started = time.perf_counter()
        async for result in rt.verify_all():
            checked += result.events_checked
            if not result.ok:
                broken.append(f"{result.stream_id}: {result.problems[0]}")
        verify_ms = (time.perf_counter() - verify_started) * 1000
        status = "OK" if not broken else "FAILED"
        print(f"verify {status}: {len(ids)} hash chains, {checked} events checked in "
              f"{verify_ms:.0f} ms" + ("" if not broken else f" — {broken}"))
        pool = [report.instance for report in reports if not report.instance.is_final]
        pool = pool or [await _new_instance(rt, 10_000, random.Random(seed), ack=False)]
        committed = await _drive(
            rt, pool, more, random.Random(seed + 1), ack=False, next_serial=len(ids) + 1000
        )
        stats = await rt.store.get_stats(governor)
        print(f"kept going after recovery: {committed} more transitions committed "
              f"({stats.total_events} events, {stats.total_snapshots} snapshots in total)")
        return 1 if (lost or broken or events == 0) else 0


def _where(store_url: str) -> str:
    if store_url.startswith("sqlite:///"):
        return str(Path(store_url[len("sqlite:///"):]).resolve())
    return store_url


def _cli_command() -> str:
    """How the user can call the CLI: ``tai-fsm`` when it is on PATH, else its full path
    (e.g. inside a virtual environment that is not activated)."""
    beside = Path(sys.executable).parent / "tai-fsm"
    on_path = shutil.which("tai-fsm")
    if beside.exists() and (on_path is None or Path(on_path).resolve() != beside.resolve()):
        return str(beside)
    return "tai-fsm"


def new_governor() -> str:
    """``demo-YYYYmmdd-HHMMSS-xxxxxx``: the time says when; the random part keeps two runs
    started in the same second apart."""
    return f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _bounded(value: object, name: str, low: int, high: int) -> int:
    """Checked before anything starts: a bad number is one line, not a child's traceback."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(
            f"{name} must be an integer from {low:,} to {high:,}, got {shown(value, 40)}",
            field=name,
        )
    return value


def run_demo(args: argparse.Namespace) -> int:
    """The ``tai-fsm demo`` command (see module docstring). Exit 0 when recovery lost
    nothing and every chain verifies."""
    store_url: str = args.store
    count = _bounded(args.instances, "--instances", 1, 10_000)
    transitions = _bounded(args.transitions, "--transitions", 10, 1_000_000)
    governor = new_governor()
    seed = random.randrange(1 << 30)
    kill_after = count + random.randint(transitions // 2, (3 * transitions) // 4)
    names = ", ".join(cls.spec.name for cls in DEMO_MACHINES)
    print(f"tai-fsm demo — machines: {names}")
    print(f"store: {_where(store_url)}   governor: {governor}")
    print(f"a child process keeps {count} instances busy with {transitions} random "
          f"transitions (finished ones are replaced by new instances) and is killed with "
          f"SIGKILL after {kill_after} acknowledged commits")
    run = _run_child(store_url, governor, count, transitions, kill_after, seed)
    print(f"child killed (kill -9) after {run.lines} acknowledged commits"
          if run.killed else f"child finished after {run.lines} commits before the kill point")
    code = asyncio.run(_recover_and_check(store_url, governor, run, transitions // 4, seed))
    workers_governor = f"{governor}-workers"
    parcels = min(30, max(6, count))
    code = max(code, run_worker_demo(store_url, workers_governor, parcels))
    example = next(iter(run.acked), "order-1")
    store_flag = f"--store {store_url} "
    if store_url.startswith("sqlite:///"):  # absolute, so it works from any directory
        store_flag = f"--store sqlite:///{_where(store_url)} "
    print("\nexplore what was left behind:")
    cli = _cli_command()
    print(f"  {cli} {store_flag}--governor {governor} show {example}")
    print(f"  {cli} {store_flag}--governor {governor} history {example}")
    print(f"  {cli} {store_flag}--governor {governor} verify")
    machine_file = MACHINES_DIR / f"{example.rsplit('-', 1)[0]}.yaml"
    print(f"  {cli} {store_flag}--governor {governor} diagram {machine_file} "
          f"--instance {example}")
    print(f"  {cli} {store_flag}--governor {governor} --machines tai_fsm.demo_classes "
          f"send {example} <trigger>")
    print(f"  {cli} {store_flag}--governor {workers_governor} show parcel-1")
    print(f"  {cli} {store_flag}--governor {workers_governor} workers")
    print(f"  {cli} {store_flag}--governor {workers_governor} timers")
    print(f"  {cli} {store_flag}--governor {workers_governor} send parcel-2 scan --queue")
    print(f"  {cli} {store_flag}--governor {workers_governor} --machines tai_fsm.demo_worker "
          "worker")
    return code


def _main(argv: list[str]) -> int:
    if len(argv) == 6 and argv[0] == "--child":
        _, url, governor, count, transitions, seed = argv
        asyncio.run(_child(url, governor, int(count), int(transitions), int(seed)))
        return 0
    print("usage: tai-fsm demo  (this module's --child mode is internal)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
