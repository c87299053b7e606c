"""Crash safety and multi-process safety on a real SQLite file (DESIGN.md §4.7): a process
killed with SIGKILL at random points leaves either the old or the new version — never a gap,
a duplicate, or a state record that disagrees with the log — and the last acknowledged
transition is always present. Two processes on one instance lose no update."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rt_machines import Counter

from tai_fsm.runtime.history import rebuild, verify_stream
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.sqlite import SQLiteStore

TESTS = Path(__file__).parent
CHILD = TESTS / "crash_child.py"


def _spawn(db: Path, instance: str, triggers: int, node: str) -> subprocess.Popen[str]:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(db), instance, str(triggers), node],
        stdout=subprocess.PIPE, text=True, env=env,
    )


async def _check_log(db: Path, instance: str, min_version: int) -> int:
    """Assert the invariants; return the head version."""
    async with SQLiteStore(db) as store:
        events = [e async for e in store.read_events("default", instance)]
        versions = [e.version for e in events]
        assert versions == list(range(1, len(events) + 1)), "gap or duplicate in the log"
        assert len({e.id for e in events}) == len(events), "duplicate event id"
        stored = await store.read_state("default", instance)
        assert stored.version == len(events), "state record disagrees with the log head"
        assert stored.snapshot.data == events[-1].to_state.data
        rebuilt = await rebuild(store, "default", instance)
        assert rebuilt.record.data == stored.snapshot.data
        assert len(events) >= min_version, "an acknowledged transition was lost"
        assert events[-1].to_state.data["data"].get("n", 0) == len(events) - 1
        report = await verify_stream(store, "default", instance)
        assert report.ok, report.problems
        return len(events)


@pytest.mark.slow
async def test_sigkill_at_random_points_never_loses_or_duplicates(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    rng = random.Random(20261128)
    acknowledged = 0
    for cycle in range(20):
        child = _spawn(db, "ctr", 10_000, f"crash{cycle}")
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        kill_after = rng.randint(0, 40)
        for _ in range(kill_after):
            line = child.stdout.readline().split()
            acknowledged = int(line[1])
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        head = await _check_log(db, "ctr", acknowledged)
        assert head >= acknowledged
    async with Runtime(SQLiteStore(db), [Counter]) as rt:  # and it keeps working
        counter = await rt.get("ctr")
        event = await counter.trigger("increment")
        assert event.version == head + 1


@pytest.mark.slow
async def test_two_processes_on_one_instance_lose_no_update(tmp_path: Path) -> None:
    db = tmp_path / "two.db"
    async with Runtime(SQLiteStore(db), [Counter]) as rt:
        await rt.create("counter", "shared")
    per_process = 40
    children = [_spawn(db, "shared", per_process, f"node{i}") for i in range(2)]
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        assert out.count("ACK") == per_process
    head = await _check_log(db, "shared", 1 + 2 * per_process)
    assert head == 1 + 2 * per_process
    async with SQLiteStore(db) as store:
        actors = [e.metadata.changed_by async for e in store.read_events("default", "shared")]
    assert actors.count("node0") == per_process and actors.count("node1") == per_process
