"""Firestore emulator: the commit of a transition vs a raw single-document ``set()``.

    .venv/bin/python benchmarks/firestore_bench.py                # starts its own emulator
    .venv/bin/python benchmarks/firestore_bench.py --count 500 --runs 5
    FIRESTORE_EMULATOR_HOST=127.0.0.1:8080 .venv/bin/python benchmarks/firestore_bench.py --reuse

In ONE run, on the same emulator and client, alternating the loads in chunks of 50 writes
so the emulator's drift (JIT, garbage collection) hits all of them alike:

* ``append_events``: sequential transitions of one machine, each ONE commit holding the new
  event (create, must-not-exist), the head check (an unchanged write of the previous event,
  must exist) and the state record (update, ``update_time`` precondition from the previous
  commit's token) — exactly what the runtime does per trigger;
* ``raw set() new doc``: sequential single-document ``set()`` calls through the plain
  ``google.cloud.firestore`` client, each creating a new document with the same fields as
  the transition's event document (the record a transition must durably write);
* ``raw set() same doc``: sequential ``set()`` calls overwriting one document with the
  machine's state record — what an application without an event log writes per transition;
* ``raw 2-doc batch``: event create + preconditioned state update through the plain
  client's public batch API, without tai-fsm: the floor for a commit that must write two
  documents;
* ``raw 3-doc batch``: the same plus the head check (an unchanged write of the previous
  event document) — the transition's exact writes without tai-fsm.
  ``append_events`` / this ratio is tai-fsm's own cost.

Prints the median (and range) of ``--runs`` runs and the ratios of medians (target >= 0.8x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tai_fsm.records import ChangeMetadata, Event, StateSnapshot
from tai_fsm.stores.firestore import FirestoreStore
from tai_fsm.stores.firestore_codec import unchanged_write
from tai_fsm.testing.emulator import FirestoreEmulator

PROJECT = "tai-fsm-bench"
GOV = "bench"


def _event(stream: str, n: int) -> Event:
    """A transition record shaped like the runtime's (machine/state/data, actor, reason)."""

    def state(version: int, name: str) -> StateSnapshot:
        data = {"machine": "order", "state": name, "data": {"items": 2, "n": version}}
        return StateSnapshot(id=stream, data=data, version=version)

    return Event(
        id=uuid.uuid4().hex,
        action="step",
        from_state=state(n - 1, "a" if n % 2 else "b"),
        to_state=state(n, "b" if n % 2 else "a"),
        metadata=ChangeMetadata(changed_by="bench", reason="benchmark"),
    )


class Machine:
    """One machine committed transition by transition, with the last commit's token."""

    def __init__(self, store: FirestoreStore) -> None:
        self.store = store
        self.stream = f"m-{uuid.uuid4().hex[:8]}"
        self.version = 0
        self.token: str | None = None

    async def step(self, count: int) -> float:
        """Seconds for ``count`` sequential transitions (events built outside the timing)."""
        events = [_event(self.stream, self.version + n) for n in range(1, count + 1)]
        start = time.perf_counter()
        for event in events:
            result = await self.store.append_events(
                GOV,
                self.stream,
                [event],
                expected_version=self.version,
                state=event.to_state,
                token=self.token,
            )
            self.version, self.token = result.version, result.token
        return time.perf_counter() - start


class RawSets:
    """Sequential ``DocumentReference.set()`` calls through the plain client.

    ``event``: each call creates a new document with the fields of a transition's event
    document (the same JSON record and small fields). ``state``: each call overwrites ONE
    document with the fields of the machine's state document — what an application without
    an event log would write per transition."""

    def __init__(self, store: FirestoreStore, kind: str) -> None:
        event = _event("raw", 1)
        record = event.model_dump_json() if kind == "event" else event.to_state.model_dump_json()
        self.payload: dict[str, object] = {"record": record, "size": len(record), "version": 1}
        if kind == "event":
            self.payload |= {"stream_id": "raw", "event_id": event.id}
        self.kind = kind
        self.col = store.client.collection(f"{store.prefix}raw_{kind}")
        self.written = 0

    async def step(self, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            doc = f"d{self.written:09d}" if self.kind == "event" else "machine"
            await self.col.document(doc).set(self.payload)
            self.written += 1
        return time.perf_counter() - start


class RawBatches:
    """Sequential batches through the plain client: create a new event document and update
    the state document with an ``update_time`` precondition; with ``head_check``, also an
    unchanged write of the previous event document (it must exist) — then the same writes
    as a transition's commit, with no tai-fsm code (the floor for it)."""

    def __init__(self, store: FirestoreStore, *, head_check: bool) -> None:
        event = _event("raw", 1)
        self.event = {"record": event.model_dump_json(), "size": 1, "version": 1}
        self.event |= {"stream_id": "raw", "event_id": event.id}
        self.state = {"record": event.to_state.model_dump_json(), "size": 1, "version": 1}
        self.client = store.client
        name = "batch3" if head_check else "batch"
        self.col = store.client.collection(f"{store.prefix}raw_{name}")
        self.state_ref = store.client.collection(f"{store.prefix}raw_{name}_state").document("m")
        self.head_check = head_check
        self.written = 0
        self.update_time: object = None

    async def step(self, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            batch = self.client.batch()
            batch.create(self.col.document(f"d{self.written:09d}"), self.event)
            if self.head_check and self.written:
                previous = self.col.document(f"d{self.written - 1:09d}")
                batch._add_write_pbs([unchanged_write(str(previous._document_path), True)])
            if self.update_time is None:
                batch.create(self.state_ref, self.state)
            else:
                option = self.client.write_option(last_update_time=self.update_time)
                batch.update(self.state_ref, self.state, option=option)
            results = await batch.commit()
            self.update_time = results[-1].update_time
            self.written += 1
        return time.perf_counter() - start


async def run(count: int, runs: int, warmup: int, chunk: int) -> dict[str, list[float]]:
    """Rates per run; within a run the loads alternate in chunks of ``chunk`` writes
    so that the emulator's drift (JIT, GC) hits all of them alike."""
    store = FirestoreStore(project=PROJECT, prefix=f"b{uuid.uuid4().hex[:8]}_")
    loads = {
        "append_events": Machine(store),
        "raw set() new doc": RawSets(store, "event"),
        "raw set() same doc": RawSets(store, "state"),
        "raw 2-doc batch": RawBatches(store, head_check=False),
        "raw 3-doc batch": RawBatches(store, head_check=True),
    }
    results: dict[str, list[float]] = {name: [] for name in loads}
    try:
        for _ in range(max(1, warmup // chunk)):  # Java JIT + gRPC channel warm-up
            for load in loads.values():
                await load.step(chunk)
        for _ in range(runs):
            spent = dict.fromkeys(loads, 0.0)
            for _ in range(max(1, count // chunk)):
                for name, load in loads.items():
                    spent[name] += await load.step(chunk)
            for name in loads:
                results[name].append(max(1, count // chunk) * chunk / spent[name])
    finally:
        await store.drop_all()
        for kind in ("event", "state", "batch", "batch_state", "batch3", "batch3_state"):
            raw = store.client.collection(f"{store.prefix}raw_{kind}")
            while docs := [d async for d in raw.select([]).limit(500).stream()]:
                batch = store.client.batch()
                for doc in docs:
                    batch.delete(doc.reference)
                await batch.commit()
        await store.close()
    return results


def report(results: dict[str, list[float]], count: int, runs: int) -> str:
    lines = [
        f"Firestore emulator: {count} sequential writes per load per run, loads interleaved "
        f"in chunks; median of {runs} runs",
        f"{'':<22}{'median /s':>11}{'min /s':>9}{'max /s':>9}",
    ]
    for name, values in results.items():
        lines.append(
            f"{name:<22}{statistics.median(values):>11,.0f}{min(values):>9,.0f}{max(values):>9,.0f}"
        )
    ours = statistics.median(results["append_events"])
    for name in ("raw set() new doc", "raw set() same doc", "raw 2-doc batch", "raw 3-doc batch"):
        ratio = ours / statistics.median(results[name])
        lines.append(f"ratio append_events / {name}: {ratio:.2f}x")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="writes per load per run")
    parser.add_argument("--runs", type=int, default=5, help="runs (default 5)")
    parser.add_argument("--warmup", type=int, default=2000, help="warm-up writes per load")
    parser.add_argument("--chunk", type=int, default=50, help="writes per interleaved chunk")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="use the emulator named by FIRESTORE_EMULATOR_HOST instead of starting one",
    )
    args = parser.parse_args()
    if args.reuse and os.environ.get("FIRESTORE_EMULATOR_HOST"):
        results = asyncio.run(run(args.count, args.runs, args.warmup, args.chunk))
    else:
        with FirestoreEmulator(export=True) as emulator:
            print(f"emulator pid {emulator.pid} on {emulator.host}", flush=True)
            results = asyncio.run(run(args.count, args.runs, args.warmup, args.chunk))
    print(report(results, args.count, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
