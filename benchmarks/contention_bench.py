"""Contention: N processes send M triggers each to ONE instance on one SQLite file (issue 15
§3: with the defaults, 32 processes x 50 sends must leave <= 1% of sends failing).

    .venv/bin/python benchmarks/contention_bench.py                      # 32 x 50, defaults
    .venv/bin/python benchmarks/contention_bench.py --processes 64 --sends 25
    .venv/bin/python benchmarks/contention_bench.py --conflict-retries 5  # the old default

Every send that fails raises ``VersionConflict`` after the runtime gave up; the line shows
how many attempts it made and over how long. Afterwards the instance's version must equal
1 + the number of successful sends (nothing lost, nothing doubled).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tai_fsm as fsm


class Hot(fsm.Machine):
    counting = fsm.State(initial=True)
    stopped = fsm.State(final=True)
    bump = counting.to(None, before=["inc"])
    stop = counting.to(stopped)

    def inc(self, event: Any) -> None:
        self.data["n"] = int(self.data.get("n", 0)) + 1


def _options(retries: int | None) -> dict[str, Any]:
    return {} if retries is None else {"max_conflict_retries": retries}


def _worker(db: str, sends: int, retries: int | None, out: Any) -> None:
    async def run() -> tuple[int, int, list[tuple[int, float]]]:
        ok = failed = 0
        gave_up: list[tuple[int, float]] = []
        store = fsm.open_store(f"sqlite:///{db}")
        async with fsm.Runtime(store, [Hot], node_id=f"p{os.getpid()}",
                               **_options(retries)) as rt:
            hot = await rt.get("hot")
            for _ in range(sends):
                try:
                    await hot.trigger("bump")
                    ok += 1
                except fsm.VersionConflict as exc:
                    failed += 1
                    gave_up.append((exc.attempts, exc.elapsed))
        return ok, failed, gave_up

    out.put(asyncio.run(run()))


async def _create(db: str) -> None:
    async with fsm.Runtime(fsm.open_store(f"sqlite:///{db}"), [Hot]) as rt:
        await rt.create("hot", "hot")


async def _version(db: str) -> int:
    async with fsm.Runtime(fsm.open_store(f"sqlite:///{db}"), [Hot]) as rt:
        return (await rt.get("hot")).version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=32)
    parser.add_argument("--sends", type=int, default=50)
    parser.add_argument("--conflict-retries", type=int, default=None,
                        help="Runtime(max_conflict_retries=...); default: the runtime's")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "hot.db")
        asyncio.run(_create(db))
        queue: Any = mp.Queue()
        procs = [mp.Process(target=_worker, args=(db, args.sends, args.conflict_retries, queue))
                 for _ in range(args.processes)]
        started = time.perf_counter()
        for proc in procs:
            proc.start()
        results = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        elapsed = time.perf_counter() - started
        ok = sum(r[0] for r in results)
        failed = sum(r[1] for r in results)
        gave_up = [g for r in results for g in r[2]]
        version = asyncio.run(_version(db))
    total = args.processes * args.sends
    retries = args.conflict_retries if args.conflict_retries is not None else (
        fsm.Runtime(fsm.open_store("memory://"), [Hot]).max_conflict_retries
    )
    print(f"{args.processes} processes x {args.sends} sends on one instance, "
          f"max_conflict_retries={retries}: {failed} of {total} failed "
          f"({100 * failed / total:.1f}%) in {elapsed:.1f} s")
    if gave_up:
        worst = max(gave_up, key=lambda g: g[1])
        print(f"  a failed send gave up after {worst[0]} attempts over {worst[1]:.2f} s")
    consistent = version == 1 + ok
    print(f"  final version {version} = 1 + {ok} successful sends: "
          f"{'yes' if consistent else 'NO'}")
    return 0 if consistent else 1


if __name__ == "__main__":
    raise SystemExit(main())
