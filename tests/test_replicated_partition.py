"""The partition scenario on real stores: a central primary (a SQLite file, or the Firestore
emulator: marked ``firestore``) and a worker's local SQLite replica.

Both sides keep taking transitions through ``fsm.Runtime`` while they cannot reach each
other (the local worker writes to its replica with ``fallback_writes=True``), then
``sync()`` runs. The result must be identical whichever side syncs first, every stream
dense and hash-chained, and the audit log must show every transition: the kept branch as
it happened, the other branch listed in a ``@resolve`` event."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from replicated_support import (
    PartitionableFirestore,
    PartitionableSQLite,
    Tally,
    append,
    chained,
    copy_sqlite,
    dump,
)

import tai_fsm as fsm
from tai_fsm.consistency.divergence import RESOLVE_ACTION
from tai_fsm.stores.firestore import FirestoreStore
from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.testing.backends import EMULATOR_PROJECT

GOV = "shop"


async def _add(rt: fsm.Runtime, tally_id: str, by: int, actor: str) -> None:
    tally = await rt.get(tally_id, governor=GOV)
    await tally.trigger("add", actor=actor, payload={"by": by})


@dataclass
class Central:
    """How to open the central store: a fresh handle, or one cut off by the partition."""

    open: Callable[[], fsm.Store]
    open_cut: Callable[[], fsm.Store]


@dataclass
class Sides:
    """Factories for central stores (several independent copies when asked) and the local
    SQLite replica paths, in one test's directory."""

    kind: str
    tmp_path: Path
    prefixes: list[str] = field(default_factory=list)

    def central(self, name: str = "central") -> Central:
        if self.kind == "sqlite":
            path = self.tmp_path / f"{name}.db"
            return Central(lambda: SQLiteStore(path), lambda: PartitionableSQLite(path))
        prefix = f"t{uuid.uuid4().hex[:12]}"
        self.prefixes.append(prefix)
        return Central(
            lambda: FirestoreStore(EMULATOR_PROJECT, prefix=prefix),
            lambda: PartitionableFirestore(EMULATOR_PROJECT, prefix=prefix),
        )

    def local(self, name: str = "local") -> Path:
        return self.tmp_path / f"{name}.db"


@pytest.fixture(params=["sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
async def sides(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sides]:
    if request.param == "firestore":
        request.getfixturevalue("firestore_emulator")
    made = Sides(request.param, tmp_path)
    yield made
    for prefix in made.prefixes:
        async with FirestoreStore(EMULATOR_PROJECT, prefix=prefix) as store:
            await store.drop_all()


async def partitioned(central: Central, local_path: Path) -> None:
    """A central store and a local SQLite file that were in sync, then took transitions
    apart (every store closed afterwards)."""
    replicated = fsm.ReplicatedStore(central.open(), SQLiteStore(local_path))
    async with fsm.Runtime(replicated, [Tally], node_id="local-worker", governor=GOV) as rt:
        for tally_id in ("t-1", "t-2", "t-3", "t-5"):
            await rt.create("tally", tally_id, data={"n": 0})
            await _add(rt, tally_id, 1, "setup")
    # The partition: one runtime on the central store, one on the local replica alone.
    cut_off = central.open_cut()
    cut_off.down = True  # type: ignore[attr-defined]
    local = fsm.ReplicatedStore(cut_off, SQLiteStore(local_path), fallback_writes=True)
    async with (
        fsm.Runtime(central.open(), [Tally], node_id="central", governor=GOV) as central_rt,
        fsm.Runtime(local, [Tally], node_id="local-worker", governor=GOV) as worker,
    ):
        await _add(central_rt, "t-5", 10, "central")  # t-5: local moves last, t-1: central
        await _add(worker, "t-1", 100, "local")
        await _add(central_rt, "t-1", 10, "central")
        await _add(worker, "t-5", 100, "local")
        await _add(worker, "t-1", 100, "local")
        await _add(central_rt, "t-5", 10, "central")
        await _add(central_rt, "t-1", 10, "central")
        await _add(central_rt, "t-1", 10, "central")
        await _add(worker, "t-5", 100, "local")
        await _add(worker, "t-5", 100, "local")
        await _add(central_rt, "t-2", 10, "central")  # only the central store moves
        await _add(worker, "t-3", 100, "local")  # only the replica moves
        await worker.create("tally", "t-4", data={"n": 7})  # exists on the replica only
    assert cut_off.down  # type: ignore[attr-defined]  # the worker never reached it


async def _events(store: fsm.Store, stream_id: str) -> list[fsm.Event]:
    return [e async for e in store.read_events(GOV, stream_id)]


async def test_partition_then_sync_converges_and_keeps_every_transition(sides: Sides) -> None:
    central, local_path = sides.central(), sides.local()
    await partitioned(central, local_path)
    async with central.open() as primary, SQLiteStore(local_path) as local:
        before = {
            (side, sid): [(e.id, e.action, e.payload) for e in await _events(store, sid)]
            for side, store in (("primary", primary), ("local", local))
            for sid in await store.list_streams(GOV)
        }
    replicated = fsm.ReplicatedStore(central.open(), SQLiteStore(local_path))
    async with replicated:
        report = await replicated.sync(GOV)
        assert report.ok, report.failures
        assert sorted(r.stream_id for r in report.resolutions) == ["t-1", "t-5"]
        assert report.changed
        again = await replicated.sync(GOV)
        assert again.ok and not again.changed, again.summary()
        assert await dump(replicated.primary) == await dump(replicated.replicas[0])

        for stream_id in ("t-1", "t-2", "t-3", "t-4", "t-5"):
            events = await _events(replicated, stream_id)
            assert [e.version for e in events] == list(range(1, len(events) + 1))  # dense
            listed = {
                item["id"] for e in events if e.action == RESOLVE_ACTION
                for item in e.payload["discarded"]
            }
            kept = {e.id for e in events}
            for side in ("primary", "local"):  # every transition is kept or listed
                for event_id, _, _ in before.get((side, stream_id), []):
                    assert event_id in kept or event_id in listed, (stream_id, event_id)

        async with fsm.Runtime(replicated, [Tally], node_id="after", governor=GOV,
                               own_store=False) as rt:
            for stream_id in ("t-1", "t-2", "t-3", "t-4", "t-5"):
                report_ = await rt.verify(stream_id, governor=GOV)
                assert not report_.problems, (stream_id, report_.problems)
                recovered = await rt.recover(stream_id, governor=GOV)
                assert recovered.instance.version == (await rt.get(stream_id)).version
            # t-1: the central branch moved last, so last-write-wins kept it ...
            t1 = await rt.get("t-1")
            assert t1.data["n"] == 1 + 10 + 10 + 10
            resolve = (await _events(replicated, "t-1"))[-1]
            assert resolve.action == RESOLVE_ACTION and resolve.version == 6
            assert resolve.payload["choice"] == "kept"
            assert resolve.payload["fork_version"] == 2
            assert "LastWriteWinsResolver" in resolve.payload["resolver"]
            # ... and the local branch is listed in the @resolve event, transition by transition
            discarded = resolve.payload["discarded"]
            assert [
                (d["version"], d["action"], d["payload"], d["changed_by"]) for d in discarded
            ] == [(3, "add", {"by": 100}, "local"), (4, "add", {"by": 100}, "local")]
            assert [d["to_state"]["data"]["data"]["n"] for d in discarded] == [101, 201]
            # t-5: the local branch moved last: it was kept, the central one listed
            t5 = await rt.get("t-5")
            assert t5.data["n"] == 1 + 100 + 100 + 100
            resolve5 = (await _events(replicated, "t-5"))[-1]
            assert [d["changed_by"] for d in resolve5.payload["discarded"]] == ["central"] * 2
            # the resolved instances keep working, chained to the @resolve event
            await t1.trigger("add", payload={"by": 5})
            assert (await rt.get("t-1")).data["n"] == 36
            assert not (await rt.verify("t-1")).problems
            assert (await rt.get("t-2")).data["n"] == 11
            assert (await rt.get("t-3")).data["n"] == 101
            assert (await rt.get("t-4")).data["n"] == 7


async def test_the_result_is_the_same_whichever_side_syncs_first(tmp_path: Path) -> None:
    sides = Sides("sqlite", tmp_path)
    await partitioned(sides.central(), sides.local())
    results = []
    for roles in (("central", "local"), ("local", "central")):  # which side runs sync
        copies = {}
        for name in ("central", "local"):
            copies[name] = tmp_path / f"{'-'.join(roles)}-{name}.db"
            copy_sqlite(str(tmp_path / f"{name}.db"), str(copies[name]))
        stores = [SQLiteStore(copies[name]) for name in roles]
        async with fsm.ReplicatedStore(*stores) as replicated:
            report = await replicated.sync(GOV)
            assert report.ok
            results.append(await dump(stores[0]))
            assert results[-1] == await dump(stores[1])
    assert results[0] == results[1]


async def test_syncing_from_each_side_in_turn_changes_nothing_the_second_time(
    sides: Sides,
) -> None:
    central, local_path = sides.central(), sides.local()
    await partitioned(central, local_path)
    async with fsm.ReplicatedStore(SQLiteStore(local_path), central.open()) as local:
        assert (await local.sync(GOV)).changed
    async with fsm.ReplicatedStore(central.open(), SQLiteStore(local_path)) as both:
        report = await both.sync(GOV)
        assert report.ok and not report.changed, report.summary()


async def _diverge_deterministically(central: fsm.Store, local: fsm.Store) -> None:
    """The same partition, built from fixed, hash-chained events (so it can be built twice
    and the two results compared): a shared prefix, then both sides append."""
    for store in (central, local):
        prefix = chained("d-1", 1, 2, node="setup", at=0)
        await append(store, GOV, *prefix)
        await append(store, GOV, *chained("d-2", 1, 1, node="setup", at=0))
    tail = (await _events(central, "d-1"))[-1]
    await append(central, GOV, *chained("d-1", 3, 3, node="central", at=10, after=tail))
    await append(local, GOV, *chained("d-1", 3, 2, node="local", at=20, after=tail))
    head = (await _events(local, "d-2"))[-1]
    await append(local, GOV, *chained("d-2", 2, 4, node="local", at=5, after=head))


async def test_every_role_order_gives_the_same_stores(sides: Sides) -> None:
    """Built twice, synced once with the central store as primary and once with the local
    replica as primary: the same stores come out, identical on both sides."""
    results = []
    for turn, central_first in enumerate((True, False)):
        central = sides.central(f"central-{turn}").open()
        local = SQLiteStore(sides.local(f"local-{turn}"))
        await _diverge_deterministically(central, local)
        order = (central, local) if central_first else (local, central)
        async with fsm.ReplicatedStore(*order) as replicated:
            report = await replicated.sync(GOV)
            assert report.ok and [r.stream_id for r in report.resolutions] == ["d-1"]
            results.append(await dump(central))
            assert results[-1] == await dump(local)
            events = await _events(replicated, "d-1")
            assert [e.payload.get("node") for e in events[:-1]] == ["setup"] * 2 + ["local"] * 2
            assert [d["id"] for d in events[-1].payload["discarded"]] == [
                "d-1-central-3", "d-1-central-4", "d-1-central-5"
            ]
            async with fsm.Runtime(replicated, [Tally], governor=GOV, own_store=False) as rt:
                for stream_id in ("d-1", "d-2"):
                    assert not (await rt.verify(stream_id)).problems
    assert results[0] == results[1]
