"""ReplicatedStore: propagation, read-repair, stale marks, stale reads, fallback writes,
divergence found on read, resolvers that refuse or merge, stores that cannot be rewound."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from replicated_support import (
    T0,
    PartitionableMemory,
    PartitionableSQLite,
    Tally,
    append,
    dump,
    event,
)

import tai_fsm as fsm
from tai_fsm.consistency import RESOLVE_ACTION, ReplicatedStore
from tai_fsm.errors import InvalidInput, StaleRead, StoreUnavailable
from tai_fsm.records import StateSnapshot
from tai_fsm.stores.memory import MemoryStore

GOV = "g"


def snap(record_id: str, data: Any, seconds: float = 0) -> StateSnapshot:
    return StateSnapshot(id=record_id, data=data, timestamp=T0 + timedelta(seconds=seconds))


async def events_of(store: fsm.Store, stream_id: str) -> list[fsm.Event]:
    return [e async for e in store.read_events(GOV, stream_id)]


# ---------------------------------------------------------------------- writes
async def test_an_unreachable_replica_never_fails_a_write_and_is_marked_stale() -> None:
    primary, replica = MemoryStore(), PartitionableMemory()
    rs = ReplicatedStore(primary, replica)
    replica.down = True
    assert await rs.save_state(GOV, "r", snap("r", 1)) == 1
    await append(rs, GOV, event("s", 1, "e1"))
    assert rs.stale == {"replica 1": [(GOV, "@events", "s"), (GOV, "states", "r"),
                                      (GOV, "states", "s")]}
    replica.down = False
    report = await rs.sync(GOV)
    assert report.ok and report.changed and rs.stale == {}
    assert [c.store for c in report.copies] == ["replica 1"]
    assert [(r.record_id, r.from_version, r.to_version) for r in report.records] == [("r", 0, 1)]
    assert await dump(replica) == await dump(primary)


async def test_a_replica_behind_is_caught_up_by_the_next_write_to_that_key() -> None:
    primary, replica = MemoryStore(), PartitionableMemory()
    rs = ReplicatedStore(primary, replica)
    await append(rs, GOV, event("s", 1, "e1"))
    replica.down = True
    await append(rs, GOV, event("s", 2, "e2"))
    replica.down = False
    await append(rs, GOV, event("s", 3, "e3"))  # the stale key is repaired, not appended to
    assert [e.id for e in await events_of(replica, "s")] == ["e1", "e2", "e3"]
    assert rs.stale == {}
    assert await dump(replica) == await dump(primary)


async def test_without_fallback_a_write_fails_when_the_primary_is_unreachable() -> None:
    primary, replica = PartitionableMemory(), MemoryStore()
    rs = ReplicatedStore(primary, replica)
    await rs.save_state(GOV, "r", snap("r", 1))
    primary.down = True
    with pytest.raises(StoreUnavailable):
        await rs.save_state(GOV, "r", snap("r", 2))
    assert (await rs.read_state(GOV, "r")).snapshot.data == 1  # reads fall back
    assert (await replica.read_state(GOV, "r")).version == 1


async def test_fallback_writes_land_on_the_first_reachable_replica() -> None:
    primary, first, second = PartitionableMemory(), PartitionableMemory(), MemoryStore()
    rs = ReplicatedStore(primary, first, second, fallback_writes=True)
    primary.down = first.down = True
    assert await rs.save_state(GOV, "r", snap("r", "offline")) == 1
    assert (await second.read_state(GOV, "r")).snapshot.data == "offline"
    assert set(rs.stale) == {"primary", "replica 1"}
    primary.down = first.down = False
    assert (await rs.read_state(GOV, "r")).snapshot.data == "offline"  # read-repair
    for store in (primary, first):
        assert (await store.read_state(GOV, "r")).snapshot.data == "offline"
    assert rs.stale == {}


# ---------------------------------------------------------------------- read-repair
async def test_read_repairs_a_record_that_a_replica_missed(tmp_path: Path) -> None:
    primary = fsm.open_store(f"sqlite:///{tmp_path / 'p.db'}")
    replica = PartitionableSQLite(tmp_path / "r.db")
    async with ReplicatedStore(primary, replica) as rs:
        await rs.save_state(GOV, "r", snap("r", 1))
        replica.down = True
        await rs.save_state(GOV, "r", snap("r", 2))
        replica.down = False
        assert (await replica.read_state(GOV, "r")).version == 1
        stored = await rs.read_state(GOV, "r")
        assert (stored.version, stored.snapshot.data) == (2, 2)
        assert (await replica.read_state(GOV, "r")).version == 2
        assert await dump(replica) == await dump(primary)


async def test_read_repairs_a_stream_that_a_replica_missed(tmp_path: Path) -> None:
    primary, replica = fsm.open_store(f"sqlite:///{tmp_path / 'p.db'}"), PartitionableSQLite(
        tmp_path / "r.db"
    )
    async with ReplicatedStore(primary, replica) as rs:
        await append(rs, GOV, event("s", 1, "e1"))
        replica.down = True
        await append(rs, GOV, event("s", 2, "e2"), event("s", 3, "e3"))
        replica.down = False
        assert [e.id for e in await events_of(rs, "s")] == ["e1", "e2", "e3"]
        assert [e.id for e in await events_of(replica, "s")] == ["e1", "e2", "e3"]
        assert (await replica.read_state(GOV, "s")).version == 3  # the record came along
        assert await dump(replica) == await dump(primary)


async def test_a_record_written_on_both_sides_is_resolved_on_read() -> None:
    primary, replica = MemoryStore(), MemoryStore()
    for store, seconds in ((primary, 5), (replica, 9)):  # written apart, replica later
        await store.save_state(GOV, "cfg", snap("cfg", {"from": store is primary}, 0))
        await store.save_state(GOV, "cfg", snap("cfg", {"late": seconds}, seconds))
    await replica.save_state(GOV, "other", snap("other", 1))
    rs = ReplicatedStore(primary, replica)  # last-write-wins: the replica's write
    stored = await rs.read_state(GOV, "cfg")
    assert stored.snapshot.data == {"late": 9} and stored.version == 3
    for store in (primary, replica):
        again = await store.read_state(GOV, "cfg")
        assert (again.version, again.snapshot.data) == (3, {"late": 9})
    assert (await rs.batch_read_states(GOV, ["other"]))["other"].version == 1
    assert await dump(replica) == await dump(primary)


async def test_reads_primary_only_leave_repairs_to_sync() -> None:
    primary, replica = MemoryStore(), PartitionableMemory()
    rs = ReplicatedStore(primary, replica, reads="primary")
    replica.down = True
    await append(rs, GOV, event("s", 1, "e1"))
    replica.down = False
    assert [e.id for e in await events_of(rs, "s")] == ["e1"]
    assert await events_of(replica, "s") == []
    await rs.sync(GOV)
    assert [e.id for e in await events_of(replica, "s")] == ["e1"]


# ---------------------------------------------------------------------- divergence
async def test_a_diverged_stream_is_resolved_on_read_with_a_resolve_event() -> None:
    primary, replica = PartitionableMemory(), MemoryStore()
    rs = ReplicatedStore(primary, replica, fallback_writes=True)
    await append(rs, GOV, event("s", 1, "e1", at=1))
    primary.down = True
    await append(rs, GOV, event("s", 2, "offline", node="replica", at=3, data="r"))
    primary.down = False
    await append(primary, GOV, event("s", 2, "central", node="primary", at=2, data="p"))
    stored = await rs.read_state(GOV, "s")
    assert stored.snapshot.data == "r" and stored.version == 3
    events = await events_of(rs, "s")
    assert [e.id for e in events[:2]] == ["e1", "offline"]
    assert events[2].action == RESOLVE_ACTION
    assert [d["id"] for d in events[2].payload["discarded"]] == ["central"]
    assert events[2].causality.clocks == {"primary": 2, "replica": 2}
    assert await dump(replica) == await dump(primary)


async def test_a_runtime_on_the_diverged_side_is_told_to_catch_up(tmp_path: Path) -> None:
    """A worker that kept going offline tries to append on top of its own branch once the
    primary is back: the copies are reconciled first and the trigger re-runs on the
    resolved state (never appended on top of the other branch's event)."""
    primary, replica = PartitionableSQLite(tmp_path / "p.db"), PartitionableSQLite(
        tmp_path / "r.db"
    )
    rs = ReplicatedStore(primary, replica, fallback_writes=True)
    async with rs, fsm.Runtime(rs, [Tally], node_id="worker", governor=GOV,
                               own_store=False) as rt:
        tally = await rt.create("tally", "t", data={"n": 0})
        primary.down = True
        await tally.trigger("add", payload={"by": 100})
        primary.down = False
        async with fsm.Runtime(primary, [Tally], node_id="central", governor=GOV,
                               own_store=False) as central:
            await (await central.get("t")).trigger("add", payload={"by": 10})
            await (await central.get("t")).trigger("add", payload={"by": 10})
        await tally.trigger("add", payload={"by": 1})  # built on the offline branch
        assert tally.data["n"] == 21  # re-run on the resolved state: central kept (newer)
        assert not (await rt.verify("t")).problems
        actions = [e.action for e in await events_of(rs, "t")]
        assert actions == ["@create", "add", "add", RESOLVE_ACTION, "add"]
        assert await events_of(primary, "t") == await events_of(replica, "t")
        report = await rs.sync(GOV)  # copies the snapshot central took at version 3
        assert [(s.version, s.store) for s in report.snapshots] == [(3, "replica 1")]
        assert await dump(primary) == await dump(replica)


async def test_propagation_never_extends_a_diverged_replica(tmp_path: Path) -> None:
    """The replica diverged behind this store's back (another process wrote to it): a
    propagated append would chain onto the wrong event, so the copies are reconciled."""
    primary, replica = MemoryStore(), MemoryStore()
    rs = ReplicatedStore(primary, replica)
    async with fsm.Runtime(rs, [Tally], node_id="w", governor=GOV, own_store=False) as rt:
        tally = await rt.create("tally", "t", data={"n": 0})
        async with fsm.Runtime(replica, [Tally], node_id="rogue", governor=GOV,
                               own_store=False) as rogue:
            await (await rogue.get("t")).trigger("add", payload={"by": 1000})
        await tally.trigger("add", payload={"by": 1})  # v2 on the primary; v2 differs
        events = await events_of(replica, "t")
        assert [e.action for e in events] == ["@create", "add", RESOLVE_ACTION]
        assert events == await events_of(primary, "t")
        assert not (await rt.verify("t")).problems


async def test_a_strict_resolver_reports_the_conflict_and_writes_nothing() -> None:
    primary, replica = MemoryStore(), MemoryStore()
    for store in (primary, replica):
        await append(store, GOV, event("s", 1, "e1"))
    await append(primary, GOV, event("s", 2, "p2", node="p", data="p"))
    await append(replica, GOV, event("s", 2, "r2", node="r", data="r"))
    before = (await dump(primary), await dump(replica))
    rs = ReplicatedStore(primary, replica, resolver=fsm.CausalityAwareResolver())
    report = await rs.sync(GOV)
    assert [f.id for f in report.failures] == ["s"]
    assert "ConflictResolutionFailed" in report.failures[0].error
    assert (await dump(primary), await dump(replica)) == before


async def test_a_merging_resolver_makes_the_merge_the_resolved_state() -> None:
    primary, replica = MemoryStore(), MemoryStore()
    for store in (primary, replica):
        await append(store, GOV, event("s", 1, "e1", data=["a"]))
    await append(primary, GOV, event("s", 2, "p2", node="p", at=2, data=["a", "p"]))
    await append(replica, GOV, event("s", 2, "r2", node="r", at=1, data=["a", "r"]))

    def union(a: StateSnapshot, b: StateSnapshot) -> list[str]:
        return sorted(set(a.data) | set(b.data))

    rs = ReplicatedStore(primary, replica, resolver=fsm.CausalityAwareResolver(merge=union))
    report = await rs.sync(GOV)
    assert [r.choice for r in report.resolutions] == ["merged"]
    events = await events_of(rs, "s")
    assert [e.id for e in events[:2]] == ["e1", "p2"]  # last-write-wins branch kept
    assert events[-1].to_state.data == ["a", "p", "r"]
    assert (await rs.read_state(GOV, "s")).snapshot.data == ["a", "p", "r"]
    assert await dump(replica) == await dump(primary)


async def test_a_losing_copy_that_cannot_be_rewound_is_reported_and_left_alone() -> None:
    inner = MemoryStore()
    unrewindable = ReplicatedStore(inner)  # a Store without rewind_and_append
    other = MemoryStore()
    for store in (unrewindable, other):
        await append(store, GOV, event("s", 1, "e1"))
    await append(unrewindable, GOV, event("s", 2, "old", at=1))
    await append(other, GOV, event("s", 2, "new", at=2))
    report = await ReplicatedStore(other, unrewindable).sync(GOV)
    assert [f.id for f in report.failures] == ["s"] and "cannot be rewound" in (
        report.failures[0].error
    )
    assert [e.id for e in await events_of(other, "s")] == ["e1", "new"]


async def test_three_copies_diverged_three_ways_converge_in_any_role_order() -> None:
    results = []
    for order in ((0, 1, 2), (2, 0, 1), (1, 2, 0)):
        stores = [MemoryStore() for _ in range(3)]
        for store in stores:
            await append(store, GOV, event("s", 1, "e1"))
        for n, store in enumerate(stores):
            await append(store, GOV, event("s", 2, f"b{n}-1", node=f"n{n}", at=n),
                         event("s", 3, f"b{n}-2", node=f"n{n}", at=n + 0.5))
        rs = ReplicatedStore(*(stores[i] for i in order))
        report = await rs.sync(GOV)
        assert report.ok and len(report.resolutions) == 1  # settled at once
        dumps = [await dump(store) for store in stores]
        assert dumps[0] == dumps[1] == dumps[2]
        results.append(dumps[0])
        listed = {d["id"] for e in await events_of(rs, "s") if e.action == RESOLVE_ACTION
                  for d in e.payload["discarded"]}
        assert listed == {"b0-1", "b0-2", "b1-1", "b1-2"}
    assert results[0] == results[1] == results[2]


# ---------------------------------------------------------------------- stale reads
async def test_a_stale_read_raises_or_returns_what_was_seen() -> None:
    primary, replica = PartitionableMemory(), PartitionableMemory()
    for mode in ("raise", "repair"):
        rs = ReplicatedStore(primary, replica, stale_reads=mode)
        key = f"r-{mode}"
        await rs.save_state(GOV, key, snap(key, 1))
        replica.down = True
        await rs.save_state(GOV, key, snap(key, 2))
        primary.down, replica.down = True, False  # only the replica, which missed v2
        if mode == "raise":
            with pytest.raises(StaleRead) as caught:
                await rs.read_state(GOV, key)
            assert (caught.value.read_version, caught.value.newer_version) == (1, 2)
        else:
            stored = await rs.read_state(GOV, key)
            assert (stored.version, stored.snapshot.data) == (2, 2)
        primary.down = False
        assert (await rs.read_state(GOV, key)).version == 2


async def test_a_stream_read_behind_what_was_seen_raises_stale_read() -> None:
    primary, replica = PartitionableMemory(), PartitionableMemory()
    rs = ReplicatedStore(primary, replica)
    await append(rs, GOV, event("s", 1, "e1"))
    replica.down = True
    await append(rs, GOV, event("s", 2, "e2"))
    primary.down, replica.down = True, False
    with pytest.raises(StaleRead):
        await events_of(rs, "s")
    fresh = ReplicatedStore(primary, replica)  # has seen nothing: reads what is there
    assert [e.id for e in await events_of(fresh, "s")] == ["e1"]


# ---------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "kwargs",
    [{"reads": "some"}, {"stale_reads": "ignore"}, {"fallback_writes": 1},
     {"seen_limit": -1}, {"primary_retry": 3}, {"resolver": 42}],
)
def test_bad_options_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        ReplicatedStore(MemoryStore(), MemoryStore(), **kwargs)


def test_stores_must_be_distinct_stores() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidInput):
        ReplicatedStore(store, store)
    with pytest.raises(InvalidInput):
        ReplicatedStore(store, "memory://")  # type: ignore[arg-type]


async def test_sync_checks_its_arguments() -> None:
    rs = ReplicatedStore(MemoryStore(), MemoryStore())
    with pytest.raises(InvalidInput):
        await rs.sync("bad/governor")
    with pytest.raises(InvalidInput):
        await rs.sync(GOV, kinds="states")
    assert (await rs.sync(GOV)).ok


async def test_a_copy_whose_clock_another_has_seen_past_never_wins() -> None:
    """Last-write-wins compares wall clocks; a stale copy with a skewed, later timestamp
    must still lose to the copy whose vector clock has seen it."""
    primary, replica = MemoryStore(), MemoryStore()
    old = snap("r", "old", seconds=50).model_copy(
        update={"causality": fsm.VectorClock(clocks={"a": 1})}
    )
    new = snap("r", "new", seconds=10).model_copy(
        update={"causality": fsm.VectorClock(clocks={"a": 2})}
    )
    await primary.save_state(GOV, "r", old)
    await primary.save_state(GOV, "r", new)
    await replica.save_state(GOV, "r", old)
    stored = await ReplicatedStore(primary, replica).read_state(GOV, "r")
    assert (stored.version, stored.snapshot.data) == (2, "new")
    assert (await replica.read_state(GOV, "r")).snapshot.data == "new"


async def test_an_interrupted_sync_is_finished_by_the_next_one() -> None:
    """The losing copy is rewritten first (atomically); if the winner then cannot take its
    @resolve event, the winner is merely behind, and the next sync copies it over."""
    winner, loser = PartitionableMemory(), MemoryStore()
    for store in (winner, loser):
        await append(store, GOV, event("s", 1, "e1"))
    await append(winner, GOV, event("s", 2, "w", node="w", at=9))
    await append(loser, GOV, event("s", 2, "l", node="l", at=1))
    winner.writes_down = True
    first = await ReplicatedStore(winner, loser).sync(GOV)
    assert [f.id for f in first.failures] == ["s"]
    assert [e.action for e in await events_of(loser, "s")] == ["set", "set", RESOLVE_ACTION]
    assert [e.id for e in await events_of(winner, "s")] == ["e1", "w"]
    winner.writes_down = False
    second = await ReplicatedStore(loser, winner).sync(GOV)
    assert second.ok and not second.resolutions
    assert [(c.store, c.from_version, c.to_version) for c in second.copies] == [
        ("replica 1", 2, 3)
    ]
    assert await dump(winner) == await dump(loser)


async def test_a_long_losing_branch_is_listed_over_several_resolve_events() -> None:
    primary, replica = MemoryStore(), MemoryStore()
    for store in (primary, replica):
        await append(store, GOV, event("s", 1, "e1"))
    big = "x" * 200_000
    await append(primary, GOV, event("s", 2, "p2", node="p", at=9, data="kept"))
    for n in range(2, 7):  # 5 events of ~200 KB: more than one @resolve can list
        await append(replica, GOV, event("s", n, f"r{n}", node="r", at=n / 10, data=big))
    report = await ReplicatedStore(primary, replica).sync(GOV)
    assert report.ok
    events = await events_of(primary, "s")
    resolves = [e for e in events if e.action == RESOLVE_ACTION]
    assert len(resolves) > 1 and events[-len(resolves):] == resolves
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    assert [r.payload["part"] for r in resolves] == list(range(1, len(resolves) + 1))
    listed = [d["id"] for r in resolves for d in r.payload["discarded"]]
    assert listed == ["r2", "r3", "r4", "r5", "r6"]
    assert all(r.to_state.data == "kept" for r in resolves)
    assert await dump(primary) == await dump(replica)


def test_an_event_too_large_to_list_whole_is_listed_with_a_digest_of_its_data() -> None:
    from tai_fsm.consistency.divergence import describe_event

    huge = event("s", 2, "huge", data="y" * 600_000)
    listed = describe_event(huge)
    assert listed["id"] == "huge" and listed["payload"] == {"by": "n"}
    assert "data" not in listed["to_state"]
    assert listed["to_state"]["data_omitted"].endswith("too large to list")
    assert len(listed["to_state"]["data_sha256"]) == 64
    assert describe_event(event("s", 2, "small", data="y"))["to_state"]["data"] == "y"


async def test_a_resolution_next_to_a_large_state_stays_under_the_record_limit() -> None:
    primary, replica = MemoryStore(), MemoryStore()
    for store in (primary, replica):
        await append(store, GOV, event("s", 1, "e1"))
    await append(primary, GOV, event("s", 2, "p2", node="p", at=9, data="k" * 900_000))
    await append(replica, GOV, event("s", 2, "r2", node="r", at=1, data="l" * 100_000))
    report = await ReplicatedStore(primary, replica).sync(GOV)
    assert report.ok, report.failures
    resolve = (await events_of(replica, "s"))[-1]
    (listed,) = resolve.payload["discarded"]
    assert listed["id"] == "r2" and "data_sha256" in listed["to_state"]
    assert resolve.to_state.data == "k" * 900_000
