"""The partition scenario on two real SQLite files: a primary and a worker's local replica.

Both sides keep taking transitions through ``fsm.Runtime`` while they cannot reach each
other (the local worker writes to its replica with ``fallback_writes=True``), then
``sync()`` runs. The result must be identical whichever side syncs first, every stream
dense and hash-chained, and the audit log must show every transition: the kept branch as
it happened, the other branch listed in a ``@resolve`` event."""

from __future__ import annotations

from pathlib import Path

from replicated_support import PartitionableSQLite, Tally, copy_sqlite, dump

import tai_fsm as fsm
from tai_fsm.consistency.divergence import RESOLVE_ACTION
from tai_fsm.stores.sqlite import SQLiteStore

GOV = "shop"


async def _add(rt: fsm.Runtime, tally_id: str, by: int, actor: str) -> None:
    tally = await rt.get(tally_id, governor=GOV)
    await tally.trigger("add", actor=actor, payload={"by": by})


async def partitioned(tmp_path: Path) -> tuple[Path, Path]:
    """Two SQLite files that were in sync, then took transitions apart. Returns their paths
    (both stores closed)."""
    primary_path, local_path = tmp_path / "primary.db", tmp_path / "local.db"
    replicated = fsm.ReplicatedStore(SQLiteStore(primary_path), SQLiteStore(local_path))
    async with fsm.Runtime(replicated, [Tally], node_id="local-worker", governor=GOV) as rt:
        for tally_id in ("t-1", "t-2", "t-3", "t-5"):
            await rt.create("tally", tally_id, data={"n": 0})
            await _add(rt, tally_id, 1, "setup")
    # The partition: one runtime on the primary, one on the local replica alone.
    cut_off = PartitionableSQLite(primary_path)
    cut_off.down = True
    local = fsm.ReplicatedStore(cut_off, SQLiteStore(local_path), fallback_writes=True)
    async with (
        fsm.Runtime(SQLiteStore(primary_path), [Tally], node_id="central",
                    governor=GOV) as central,
        fsm.Runtime(local, [Tally], node_id="local-worker", governor=GOV) as worker,
    ):
        await _add(central, "t-5", 10, "central")  # t-5: local moves last, t-1: central
        await _add(worker, "t-1", 100, "local")
        await _add(central, "t-1", 10, "central")
        await _add(worker, "t-5", 100, "local")
        await _add(worker, "t-1", 100, "local")
        await _add(central, "t-5", 10, "central")
        await _add(central, "t-1", 10, "central")
        await _add(central, "t-1", 10, "central")
        await _add(worker, "t-5", 100, "local")
        await _add(worker, "t-5", 100, "local")
        await _add(central, "t-2", 10, "central")  # only the primary moves
        await _add(worker, "t-3", 100, "local")  # only the replica moves
        await worker.create("tally", "t-4", data={"n": 7})  # exists on the replica only
    assert cut_off.down  # the worker never reached the primary
    return primary_path, local_path


async def _events(store: fsm.Store, stream_id: str) -> list[fsm.Event]:
    return [e async for e in store.read_events(GOV, stream_id)]


async def test_partition_then_sync_converges_and_keeps_every_transition(tmp_path: Path) -> None:
    primary_path, local_path = await partitioned(tmp_path)
    async with SQLiteStore(primary_path) as primary, SQLiteStore(local_path) as local:
        before = {
            (side, sid): [(e.id, e.action, e.payload) for e in await _events(store, sid)]
            for side, store in (("primary", primary), ("local", local))
            for sid in await store.list_streams(GOV)
        }
    replicated = fsm.ReplicatedStore(SQLiteStore(primary_path), SQLiteStore(local_path))
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
    primary_path, local_path = await partitioned(tmp_path)
    results = []
    for roles in (("primary", "local"), ("local", "primary")):  # which side runs sync
        copies = {}
        for name, path in (("primary", primary_path), ("local", local_path)):
            copies[name] = tmp_path / f"{'-'.join(roles)}-{name}.db"
            copy_sqlite(str(path), str(copies[name]))
        stores = [SQLiteStore(copies[name]) for name in roles]
        async with fsm.ReplicatedStore(*stores) as replicated:
            report = await replicated.sync(GOV)
            assert report.ok
            results.append(await dump(stores[0]))
            assert results[-1] == await dump(stores[1])
    assert results[0] == results[1]


async def test_syncing_from_each_side_in_turn_changes_nothing_the_second_time(
    tmp_path: Path,
) -> None:
    primary_path, local_path = await partitioned(tmp_path)
    async with fsm.ReplicatedStore(SQLiteStore(local_path), SQLiteStore(primary_path)) as local:
        assert (await local.sync(GOV)).changed
    async with fsm.ReplicatedStore(SQLiteStore(primary_path), SQLiteStore(local_path)) as central:
        report = await central.sync(GOV)
        assert report.ok and not report.changed, report.summary()
