"""The rewind bridge (tai_fsm.consistency.rewind) on every built-in backend: the losing copy
of a diverged stream is replaced atomically, or not at all."""

from __future__ import annotations

import pytest
from replicated_support import append, event

from tai_fsm.consistency.rewind import can_rewind, rewind_and_append
from tai_fsm.errors import InvalidInput, VersionConflict
from tai_fsm.records import StateSnapshot
from tai_fsm.stores.base import Store

GOV = "g"


async def _ids(store: Store, stream_id: str = "s") -> list[str]:
    return [e.id async for e in store.read_events(GOV, stream_id)]


async def _four(store: Store) -> None:
    for n in range(1, 5):
        await append(store, GOV, event("s", n, f"e{n}", data={"n": n}))
        if n % 2 == 0:
            await store.save_snapshot(GOV, "s", StateSnapshot(id="s", data={"n": n}, version=n))


async def test_a_suffix_is_replaced_with_its_snapshots_and_state_record(store: Store) -> None:
    assert can_rewind(store)
    await _four(store)
    new = [event("s", 3, "x3", data="x3"), event("s", 4, "x4", data="x4"),
           event("s", 5, "x5", data="x5")]
    await rewind_and_append(store, GOV, "s", after_version=2, expected_ids=["e3", "e4"],
                            events=new, state=new[-1].to_state)
    assert await _ids(store) == ["e1", "e2", "x3", "x4", "x5"]
    assert await store.stream_version(GOV, "s") == 5
    assert await store.snapshot_versions(GOV, "s") == [2]  # the one at 4 was the old branch
    stored = await store.read_state(GOV, "s")
    assert (stored.version, stored.snapshot.data) == (5, "x5")
    events = [e async for e in store.read_events(GOV, "s")]
    assert events[2].from_state == events[1].to_state  # chained onto the kept base
    shorter = [event("s", 3, "y3", data="y3")]
    await rewind_and_append(store, GOV, "s", after_version=2, expected_ids=["x3", "x4", "x5"],
                            events=shorter, state=shorter[0].to_state)
    assert await _ids(store) == ["e1", "e2", "y3"]
    assert (await store.read_state(GOV, "s")).version == 3
    assert (await store.append_events(GOV, "s", [event("s", 4, "y4")],
                                      expected_version=3)).version == 4


async def test_a_copy_that_moved_meanwhile_is_left_alone(store: Store) -> None:
    await _four(store)
    before = (await _ids(store), await store.snapshot_versions(GOV, "s"),
              (await store.read_state(GOV, "s")).version)
    new = [event("s", 3, "x3")]
    for expected in (["e3"], ["e3", "other"], ["e3", "e4", "e5"]):
        with pytest.raises(VersionConflict):
            await rewind_and_append(store, GOV, "s", after_version=2, expected_ids=expected,
                                    events=new, state=new[0].to_state)
    assert (await _ids(store), await store.snapshot_versions(GOV, "s"),
            (await store.read_state(GOV, "s")).version) == before


async def test_a_state_record_that_follows_the_stream_needs_the_new_state(store: Store) -> None:
    await _four(store)
    with pytest.raises(InvalidInput):
        await rewind_and_append(store, GOV, "s", after_version=2, expected_ids=["e3", "e4"],
                                events=[event("s", 3, "x3")], state=None)
    assert await _ids(store) == ["e1", "e2", "e3", "e4"]
    await store.append_events(GOV, "log", [event("log", 1, "l1"), event("log", 2, "l2")],
                              expected_version=0)  # no state record: none needed
    await rewind_and_append(store, GOV, "log", after_version=1, expected_ids=["l2"],
                            events=[event("log", 2, "m2")], state=None)
    assert await _ids(store, "log") == ["l1", "m2"]


async def test_history_compacted_away_cannot_be_rewound_into(store: Store) -> None:
    await _four(store)
    await store.compact_stream(GOV, "s", up_to_version=2)
    with pytest.raises(InvalidInput):
        await rewind_and_append(store, GOV, "s", after_version=1, expected_ids=["e2", "e3", "e4"],
                                events=[event("s", 2, "x2")], state=event("s", 2, "x2").to_state)
    assert await _ids(store) == ["e3", "e4"]
