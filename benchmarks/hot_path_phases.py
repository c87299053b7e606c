"""Where one transition's CPU goes, phase by phase, next to a bare ``transitions`` trigger.

    .venv/bin/python benchmarks/hot_path_phases.py [--count 4000] [--runs 5]

Runs the commit protocol's pieces by hand on the memory store (the two-state ``Flip``
machine, no callbacks), timing each with the process CPU clock (so other jobs on this
shared machine inflate the figures less than wall time would), then the whole
``await instance.trigger(...)`` and a bare ``transitions`` trigger, interleaved per run.
Medians of ``--runs``; µs per transition. The phases:

* ``arguments`` — checking the trigger's arguments (``runtime.arguments``);
* ``fire`` — ``transitions`` running the transition through the adapter;
* ``data`` — checking the data the callbacks left is JSON as it is (``encode_data``);
* ``build`` — the event and state record: clock, hash chain (SHA-256 over sorted JSON),
  the stored row (one encoding + CRC seal), the record's JSON, seven records built
  without validation;
* ``prepare`` — the store's argument checks and stored rows (``planning.prepare_append``);
* ``commit`` — the memory store's atomic scope: versions read, plan, rows kept;
* ``adopt`` — the instance adopts the commit (version, token, hash, snapshot schedule);
* ``trigger`` — the whole call, protocol driver and ``asyncio`` included.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compare_bench import Bare, Flip

import tai_fsm as fsm
from tai_fsm.runtime import arguments
from tai_fsm.runtime.codec import encode_data
from tai_fsm.runtime.commit import core_of
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.ops import Append
from tai_fsm.stores.planning import prepare_append

PHASES = ("arguments", "fire", "data", "build", "prepare", "commit", "adopt")


async def phases(count: int) -> dict[str, float]:
    async with fsm.Runtime(MemoryStore(), [Flip]) as rt:
        flip = await rt.create("flip", "f")
        committer = flip._binding  # type: ignore[attr-defined]
        core, host = core_of(flip), committer.host
        spent = dict.fromkeys((*PHASES, "sum", "trigger"), 0)
        clock = time.process_time_ns
        for i in range(count):
            t0 = clock()
            args = arguments.trigger_args("go" if i % 2 == 0 else "back", None, None, None, None)
            t1 = clock()
            outcome = committer.compiled.fire(flip, args.name, {})
            t2 = clock()
            data = encode_data(committer.machine_cls, flip.data)[1]
            t3 = clock()
            event, record, record_bytes = committer._build(flip, core, outcome, data, args, {})
            t4 = clock()
            prepared = prepare_append(Append(
                flip.id, [event], core.version, record, core.token, event.from_state
            ))
            t5 = clock()
            await host.store._commit(flip.governor, prepared)
            t6 = clock()
            core.load_committed(record, record_bytes, event.version, None)
            flip.version = event.version
            host.after_commit(flip.governor, record, committer.compiled.spec)
            t7 = clock()
            for name, start, end in zip(PHASES, (t0, t1, t2, t3, t4, t5, t6),
                                        (t1, t2, t3, t4, t5, t6, t7), strict=True):
                spent[name] += end - start
            spent["sum"] += t7 - t0
        started = clock()
        for i in range(count):
            await flip.trigger("go" if i % 2 == 0 else "back")
        spent["trigger"] = clock() - started
    return {name: total / count / 1000 for name, total in spent.items()}


def bare(count: int) -> float:
    engine = Bare()
    started = time.process_time_ns()
    engine.step(count)
    return (time.process_time_ns() - started) / count / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for name, value in asyncio.run(phases(args.count)).items():
            runs.setdefault(name, []).append(value)
        runs.setdefault("bare `transitions` trigger", []).append(bare(args.count * 5))
    print(f"µs of CPU per transition, medians of {args.runs} runs x {args.count:,} "
          "(memory store, two-state machine)")
    print("| phase | µs | runs |")
    print("| --- | ---: | --- |")
    for name, values in runs.items():
        shown = " ".join(f"{v:.1f}" for v in values)
        label = "sum of the phases" if name == "sum" else name
        label = "whole `await trigger()`" if name == "trigger" else label
        print(f"| {label} | {statistics.median(values):.1f} | {shown} |")


if __name__ == "__main__":
    main()
