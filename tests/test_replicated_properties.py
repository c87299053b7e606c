"""Properties of divergence resolution (hypothesis): whatever the branches and whichever side
syncs, copies converge to the same dense history that keeps or lists every event."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replicated_support import T0, append, dump, event

from tai_fsm.consistency import LastWriteWinsResolver, ReplicatedStore
from tai_fsm.consistency.divergence import RESOLVE_ACTION, covered_ids, resolve_branches
from tai_fsm.records import Event, StateSnapshot
from tai_fsm.stores.memory import MemoryStore

GOV = "g"

# A side's writes after the shared prefix: batches of 1-3 events, each batch a time slot.
_batches = st.lists(st.integers(1, 3), max_size=3)
_script = st.fixed_dictionaries({
    "prefix": st.integers(0, 3),
    "a": _batches,
    "b": _batches,
    "order": st.lists(st.booleans(), min_size=6, max_size=6),  # who writes in each slot
    "records": st.lists(st.tuples(st.booleans(), st.integers(0, 3)), max_size=4),
})


def _branches(script: dict[str, Any]) -> dict[str, list[list[Event]]]:
    """Each side's batches of events after the prefix, timestamps interleaved by ``order``."""
    slots = iter(range(1, 100))
    out: dict[str, list[list[Event]]] = {"a": [], "b": []}
    version = {"a": script["prefix"], "b": script["prefix"]}
    pending = {"a": list(script["a"]), "b": list(script["b"])}
    turns = [("a" if flag else "b") for flag in script["order"]] + ["a"] * 3 + ["b"] * 3
    for side in turns:
        if not pending[side]:
            continue
        size, at = pending[side].pop(0), next(slots)
        batch = []
        for _ in range(size):
            version[side] += 1
            n = version[side]
            batch.append(event("s", n, f"{side}{n}", node=side, at=at + n / 100,
                               data={"side": side, "n": n}))
        out[side].append(batch)
    return out


async def _build(script: dict[str, Any]) -> tuple[MemoryStore, MemoryStore]:
    a, b = MemoryStore(), MemoryStore()
    for n in range(1, script["prefix"] + 1):
        shared = event("s", n, f"p{n}", at=n / 1000, data={"n": n})
        await append(a, GOV, shared)
        await append(b, GOV, shared)
    branches = _branches(script)
    for store, side in ((a, "a"), (b, "b")):
        for batch in branches[side]:
            await append(store, GOV, *batch)
    for n, (on_a, value) in enumerate(script["records"]):
        store = a if on_a else b
        record = StateSnapshot(id="cfg", data={"v": value, "n": n},
                               timestamp=T0 + timedelta(seconds=n))
        await store.save_state(GOV, "cfg", record)
    return a, b


async def _ids(store: MemoryStore) -> list[str]:
    return [e.id async for e in store.read_events(GOV, "s")]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(script=_script)
async def test_sync_converges_to_one_history_whichever_side_syncs(script: dict[str, Any]) -> None:
    results = []
    written: set[str] = set()
    for first in ("a", "b"):
        a, b = await _build(script)
        written = set(await _ids(a)) | set(await _ids(b))
        stores = (a, b) if first == "a" else (b, a)
        report = await ReplicatedStore(*stores).sync(GOV)
        assert report.ok, report.failures
        assert not (await ReplicatedStore(*stores).sync(GOV)).changed  # idempotent
        assert await dump(a) == await dump(b)
        results.append(await dump(a))
        events = [e async for e in a.read_events(GOV, "s")]
        assert [e.version for e in events] == list(range(1, len(events) + 1))
        assert written <= covered_ids(events)  # every event kept or listed
        resolves = [e for e in events if e.action == RESOLVE_ACTION]
        assert len(resolves) <= 1 and (not resolves or resolves[0] is events[-1])
    assert results[0] == results[1]


_branch_lists = st.lists(st.integers(0, 4), min_size=1, max_size=4).map(
    lambda lengths: [
        [event("s", n, f"x{k}-{n}", node=f"x{k}", at=(n * 7 + k * 3) % 10, data=[k, n])
         for n in range(1, length + 1)]
        for k, length in enumerate(lengths)
    ]
)


@settings(max_examples=100, deadline=None)
@given(branches=_branch_lists, data=st.data())
def test_resolution_ignores_branch_order_and_covers_every_event(
    branches: list[list[Event]], data: st.DataObject
) -> None:
    resolver = LastWriteWinsResolver()
    resolved = resolve_branches("s", 0, branches, resolver)
    shuffled = data.draw(st.permutations(branches))
    assert resolve_branches("s", 0, shuffled, resolver).events == resolved.events
    events = resolved.events
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert {e.id for branch in branches for e in branch} <= covered_ids(events)
    if events:  # starts with one branch, whole
        kept = [e for e in events if e.action != RESOLVE_ACTION]
        assert kept in [b for b in branches if b]
    for branch in branches:  # a resolved history absorbs its branches: nothing new
        assert resolve_branches("s", 0, [events, branch], resolver).events == events
