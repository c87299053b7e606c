"""Soak test: writer processes on one SQLite file, SIGKILLed at random, then every
acknowledged transition is checked.

    .venv/bin/python benchmarks/soak.py --kills 1000            # the long run (docs/reliability.md)
    .venv/bin/python benchmarks/soak.py --kills 20 --writers 3  # a short one (the test suite)

``--writers`` processes each drive ``--instances`` counter instances (shared by all writers,
so they contend) through ``fsm.Runtime`` on one SQLite file (WAL, synchronous=FULL) and
print one ``ACK instance version event_id`` line per acknowledged transition — printed only
after ``trigger`` returned. The parent SIGKILLs a random writer after a random number of its
acknowledgements and starts a new one in its place, until ``--kills`` kills were made.

Afterwards, for every instance: versions are dense (1..head, no gap, no duplicate), every
acknowledged (version, event id) is in the log, no event id appears twice, the state record
equals the newest event's state and the snapshot + replay rebuild, the counter equals the
number of increments in the log, and the hash chain verifies. Exit status 0 when all hold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tai_fsm as fsm
from tai_fsm.runtime.history import rebuild, verify_stream

GOVERNOR = "soak"


class Counter(fsm.Machine):
    name = "counter"
    snapshot_every = 25
    counting = fsm.State(initial=True)
    done = fsm.State(final=True)
    increment = counting.to(None, before=["bump"])
    stop = counting.to(done)

    def bump(self, event: Any) -> None:
        self.data["n"] = self.data.get("n", 0) + 1


# ---------------------------------------------------------------------- the writer child
async def _write(db: str, name: str, instances: int, seed: int) -> None:
    rng = random.Random(seed)
    store = fsm.open_store(f"sqlite:///{db}")
    async with fsm.Runtime(store, [Counter], node_id=name, governor=GOVERNOR) as rt:
        live: dict[str, fsm.Machine] = {}
        print("READY", flush=True)
        while True:
            instance_id = f"c{rng.randrange(instances)}"
            instance = live.get(instance_id)
            try:
                if instance is None:
                    try:
                        instance = await rt.get(instance_id)
                    except fsm.StateNotFound:
                        try:
                            instance = await rt.create("counter", instance_id)
                            print(f"ACK {instance_id} 1 create", flush=True)
                        except fsm.VersionConflict:
                            instance = await rt.get(instance_id)
                    live[instance_id] = instance
                event = await instance.trigger("increment", actor=name)
            except fsm.TaiFsmError as exc:  # refused (e.g. conflicts kept winning): not acked
                if not exc.is_transient():
                    raise
                print(f"REFUSED {instance_id} {type(exc).__name__}", flush=True)
                continue
            print(f"ACK {instance_id} {event.version} {event.id}", flush=True)


# ---------------------------------------------------------------------- the parent
@dataclass
class Ack:
    instance: str
    version: int
    event_id: str


@dataclass
class Outcome:
    kills: int = 0
    acknowledged: int = 0
    refused: int = 0
    seconds: float = 0.0
    instances: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Writer:
    def __init__(self, script: Path, db: Path, name: str, instances: int, seed: int) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--child", str(db), name, str(instances), str(seed)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)


def run(
    kills: int, writers: int, instances: int, seed: int, db: Path, max_seconds: float
) -> Outcome:
    """Run the soak (see module docstring) and check every acknowledged transition."""
    rng = random.Random(seed)
    script = Path(__file__).resolve()
    outcome = Outcome()
    acks: list[Ack] = []
    started = time.monotonic()
    serial = 0

    def spawn() -> _Writer:
        nonlocal serial
        serial += 1
        return _Writer(script, db, f"w{serial}", instances, rng.randrange(2**32))

    pool = [spawn() for _ in range(writers)]
    budgets = {id(w): rng.randint(0, 60) for w in pool}
    while outcome.kills < kills and time.monotonic() - started < max_seconds:
        for index, writer in enumerate(pool):
            try:
                line = writer.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line is None:  # the writer ended by itself: a crash we did not cause
                err = writer.process.stderr.read() if writer.process.stderr else ""
                outcome.problems.append(f"writer {writer.name} exited: {err.strip()[-500:]}")
                pool[index] = spawn()
                budgets[id(pool[index])] = rng.randint(0, 60)
                continue
            parts = line.split()
            if parts[0] == "ACK":
                acks.append(Ack(parts[1], int(parts[2]), parts[3]))
                budgets[id(writer)] -= 1
            elif parts[0] == "REFUSED":
                outcome.refused += 1
            if budgets[id(writer)] <= 0:
                writer.process.send_signal(signal.SIGKILL)
                writer.process.wait()
                writer.reader.join(timeout=5)
                while True:  # acknowledgements printed before the kill still count
                    try:
                        late = writer.lines.get_nowait()
                    except queue.Empty:
                        break
                    if late and late.startswith("ACK"):
                        _, inst, version, event_id = late.split()
                        acks.append(Ack(inst, int(version), event_id))
                outcome.kills += 1
                pool[index] = spawn()
                budgets[id(pool[index])] = rng.randint(0, 60)
    for writer in pool:
        writer.process.send_signal(signal.SIGKILL)
        writer.process.wait()
    outcome.seconds = time.monotonic() - started
    outcome.acknowledged = len(acks)
    asyncio.run(_check(db, acks, outcome))
    return outcome


async def _check(db: Path, acks: list[Ack], outcome: Outcome) -> None:
    by_instance: dict[str, dict[int, str]] = {}
    for ack in acks:
        by_instance.setdefault(ack.instance, {})[ack.version] = ack.event_id
    async with fsm.open_store(f"sqlite:///{db}", create=False) as store:
        instance_ids = [i async for i in store.list_states(GOVERNOR)]
        outcome.instances = len(instance_ids)
        for instance_id in sorted(set(instance_ids) | set(by_instance)):
            problems = outcome.problems
            events = [e async for e in store.read_events(GOVERNOR, instance_id)]
            outcome.events += len(events)
            versions = [e.version for e in events]
            if versions != list(range(1, len(events) + 1)):
                problems.append(f"{instance_id}: versions are not dense: {versions[:20]}...")
            if len({e.id for e in events}) != len(events):
                problems.append(f"{instance_id}: an event id appears twice")
            stored_ids = {e.version: e.id for e in events}
            for version, event_id in by_instance.get(instance_id, {}).items():
                if version not in stored_ids:
                    problems.append(f"{instance_id}: acknowledged version {version} is lost")
                elif event_id != "create" and stored_ids[version] != event_id:
                    problems.append(f"{instance_id}: version {version} holds another event")
            if not events:
                continue
            state = await store.read_state(GOVERNOR, instance_id)
            if state.version != len(events) or state.snapshot.data != events[-1].to_state.data:
                problems.append(f"{instance_id}: the state record disagrees with the log")
            rebuilt = await rebuild(store, GOVERNOR, instance_id)
            if rebuilt.record.data != state.snapshot.data:
                problems.append(f"{instance_id}: snapshot + replay disagrees with the record")
            if events[-1].to_state.data["data"].get("n", 0) != len(events) - 1:
                problems.append(f"{instance_id}: the counter does not match the log")
            report = await verify_stream(store, GOVERNOR, instance_id)
            if not report.ok:
                problems.append(f"{instance_id}: hash chain: {report.problems}")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] == "--child":
        db, name, instances, seed = args_in[1:5]
        asyncio.run(_write(db, name, int(instances), int(seed)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--db", type=Path, default=None, help="default: a temporary file")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(args_in)
    with tempfile.TemporaryDirectory() as folder:
        db = args.db or Path(folder) / "soak.db"
        outcome = run(args.kills, args.writers, args.instances, args.seed, db, args.max_seconds)
        print(
            f"{outcome.kills} SIGKILLs over {outcome.seconds:.0f}s, {args.writers} writers on "
            f"{outcome.instances} instances: {outcome.acknowledged:,} acknowledged transitions, "
            f"{outcome.events:,} events in the log, {outcome.refused} refused (not acked), "
            f"{len(outcome.problems)} problems"
        )
        for problem in outcome.problems[:50]:
            print("  " + problem)
        if os.environ.get("SOAK_KEEP_DB") and args.db is None:
            print(f"database: {db}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())
