"""Queries: ``Runtime.instances(machine=, state=)`` / ``instance_ids`` on every backend, the
SQLite index (schema 3) and its migration from schema 2, and the base class's scanning
default for stores without an index."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tai_fsm.demo_classes import BatchJob, Deployment, Order
from tai_fsm.errors import InvalidInput, StoreFailure
from tai_fsm.records import StateSnapshot
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.stores.sqlite_schema import SCHEMA_VERSION
from tai_fsm.testing import contract

GOV = "shop"


async def _orders(rt: Runtime) -> None:
    for n in range(1, 8):
        await rt.create("order", f"o-{n}", {"items": n % 3}, governor=GOV)
    for n in (2, 4, 5, 7):
        await (await rt.get(f"o-{n}", governor=GOV)).trigger("pay")
    await (await rt.get("o-5", governor=GOV)).trigger("ship")
    await rt.create("batch_job", "j-1", governor=GOV)


async def test_instances_by_machine_and_state(store: Store) -> None:
    async with Runtime(store, [Order, BatchJob], own_store=False) as rt:
        await _orders(rt)
        paid = [o async for o in rt.instances(machine="order", state="paid", governor=GOV)]
        assert [o.id for o in paid] == ["o-2", "o-4", "o-7"]
        assert all(o.state == "paid" and o.governor == GOV for o in paid)
        assert [o.version for o in paid] == [2, 2, 2]
        await paid[0].trigger("ship")  # live instances: they commit
        ids = [i async for i in rt.instance_ids(machine=Order, state="paid", governor=GOV)]
        assert ids == ["o-4", "o-7"]
        shipped = [o.id async for o in rt.instances(state="shipped", governor=GOV)]
        assert shipped == ["o-2", "o-5"]
        every = [o.id async for o in rt.instances(governor=GOV, batch_size=2)]
        assert every == ["j-1", *(f"o-{n}" for n in range(1, 8))]
        orders = [o.id async for o in rt.instances(machine="order", governor=GOV, batch_size=3)]
        assert orders == [f"o-{n}" for n in range(1, 8)]


async def test_instances_skips_what_this_runtime_does_not_host(store: Store) -> None:
    async with Runtime(store, [Order, BatchJob], own_store=False) as rt:
        await _orders(rt)
    await store.save_state(GOV, "plain", StateSnapshot(id="plain", data={"n": 1}))
    async with Runtime(store, [Order], own_store=False) as rt:
        ids = [i async for i in rt.instance_ids(governor=GOV)]
        assert ids == ["j-1", *(f"o-{n}" for n in range(1, 8)), "plain"]
        assert [i async for i in rt.instance_ids(machine="batch_job", governor=GOV)] == ["j-1"]
        live = [o.id async for o in rt.instances(governor=GOV)]
        assert live == [f"o-{n}" for n in range(1, 8)]
        with pytest.raises(InvalidInput, match="not hosted"):
            [o async for o in rt.instances(machine="batch_job", governor=GOV)]


async def test_a_typo_in_a_state_is_an_error_not_an_empty_answer() -> None:
    async with Runtime(MemoryStore(), [Order, Deployment]) as rt:
        with pytest.raises(InvalidInput, match=r"machine 'order' has no state 'payd' \(its"):
            [o async for o in rt.instances(machine="order", state="payd")]
        with pytest.raises(InvalidInput, match=r"compound state; an instance is in one of its "
                           r"states: deploying\.canary, deploying\.full"):
            [i async for i in rt.instance_ids(machine="deployment", state="deploying")]
        await rt.create("deployment", "d-1", {"release": "1.2"})
        await (await rt.get("d-1")).trigger("build")
        await (await rt.get("d-1")).trigger("build_ok")
        found = [d.id async for d in rt.instances(machine=Deployment, state="deploying.canary")]
        assert found == ["d-1"]


async def test_an_instance_that_moves_on_between_query_and_read_is_left_out() -> None:
    store = MemoryStore()
    async with Runtime(store, [Order], own_store=False) as rt:
        for n in range(1, 4):
            order = await rt.create("order", f"o-{n}", {"items": 1})
            await order.trigger("pay")
        real = store.batch_read_states

        async def moved(governor: str, ids: Any) -> Any:  # o-2 ships right after the query
            if "o-2" in ids:
                await (await rt.get("o-2")).trigger("ship")
            return await real(governor, ids)

        store.batch_read_states = moved  # type: ignore[method-assign]
        assert [o.id async for o in rt.instances(machine="order", state="paid")] == [
            "o-1", "o-3"
        ]


# ---------------------------------------------------------------------- no native index
class ScanningStore(MemoryStore):
    """A store with no index of its own: the base class's default ``_find_states``."""

    async def _find_states(
        self, governor: str, machine: str | None, state: str | None, after: str, limit: int
    ) -> list[str]:
        return await Store._find_states(self, governor, machine, state, after, limit)


@pytest.mark.parametrize(
    "test", [getattr(contract, name) for name in dir(contract) if "find_states" in name],
)
async def test_the_default_scan_passes_the_query_contract(test: Any) -> None:
    store = ScanningStore()
    if "rejects" in test.__name__:
        await test(store, {"limit": 0}, "limit")
    else:
        await test(store)


async def test_the_default_scan_pages_beyond_one_batch() -> None:
    store = ScanningStore()
    for n in range(2_500):
        state = "paid" if n % 1000 == 999 else "pending"
        data = {"machine": "order", "state": state, "data": {}}
        await store.save_state(GOV, f"o-{n:05d}", StateSnapshot(id="x", data=data))
    assert await store.find_states(GOV, state="paid") == ["o-00999", "o-01999"]
    assert len(await store.find_states(GOV, machine="order", limit=2_400)) == 2_400


# ---------------------------------------------------------------------- SQLite index
def _sql(path: Path, statement: str, *args: Any) -> list[Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def test_sqlite_queries_use_the_index(tmp_path: Path) -> None:
    from tai_fsm.stores.sqlite_ops import find_states

    path = tmp_path / "q.db"
    SQLiteStore(path)  # creates schema 3 (the store closes with its finalizer)
    conn = sqlite3.connect(path)
    plans = []
    for machine, state in (("order", None), (None, "paid"), ("order", "paid")):

        class Explain:
            def execute(self, sql: str, args: Any) -> Any:
                plans.append(conn.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall())
                return conn.execute(sql, args)

        find_states(GOV, machine, state, "", 10, Explain())  # type: ignore[arg-type]
    conn.close()
    details = [" ".join(str(step[-1]) for step in plan) for plan in plans]
    assert "records_by_machine " in details[0] + " "
    assert "records_by_state" in details[1]
    assert "records_by_machine_state" in details[2]
    assert not any("TEMP B-TREE" in d for d in details), details  # no sort: id order


async def _schema_2_file(path: Path) -> None:
    """A store as tai-fsm schema 2 left it: the same rows, no index columns."""
    async with Runtime(SQLiteStore(path), [Order, BatchJob]) as rt:
        await _orders(rt)
        await rt.store.save_state(GOV, "plain", StateSnapshot(id="plain", data=[1, 2]))
    for name in ("records_by_machine", "records_by_state", "records_by_machine_state"):
        _sql(path, f"DROP INDEX {name}")
    _sql(path, "ALTER TABLE records DROP COLUMN machine")
    _sql(path, "ALTER TABLE records DROP COLUMN state")
    _sql(path, "DELETE FROM schema_version")
    _sql(path, "INSERT INTO schema_version (version) VALUES (2)")


async def test_a_schema_2_file_is_migrated_in_place_and_queries_work(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    await _schema_2_file(path)
    _sql(path, "UPDATE records SET data = CAST('not json' AS BLOB) WHERE id = 'o-1'")
    async with SQLiteStore(path) as store:
        assert (await store.pragmas())["schema_version"] == SCHEMA_VERSION == 3
        assert await store.find_states(GOV, machine="order", state="paid") == [
            "o-2", "o-4", "o-7"
        ]
        assert await store.find_states(GOV, machine="batch_job") == ["j-1"]
        # a damaged row is never matched (verify reports it); it is still listed
        assert "o-1" not in await store.find_states(GOV, machine="order")
        assert "o-1" in await store.find_states(GOV)
    rows = _sql(path, "SELECT id, machine, state FROM records WHERE id IN ('o-5', 'plain')")
    assert sorted(rows) == [("o-5", "order", "shipped"), ("plain", None, None)]
    assert _sql(path, "SELECT version FROM schema_version") == [(2,), (3,)]
    async with SQLiteStore(path) as again:  # opening a migrated file changes nothing
        assert (await again.pragmas())["schema_version"] == 3


async def test_a_schema_2_file_opened_read_only_is_queried_by_scanning(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    await _schema_2_file(path)
    async with SQLiteStore(path, read_only=True) as store:
        assert store.schema_version == 2
        assert await store.find_states(GOV, state="paid") == ["o-2", "o-4", "o-7"]
    assert _sql(path, "SELECT MAX(version) FROM schema_version") == [(2,)]  # untouched


async def test_schema_1_is_still_refused_and_a_missing_file_is_not_created(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    await _schema_2_file(path)
    _sql(path, "UPDATE schema_version SET version = 1")
    with pytest.raises(InvalidInput, match="pre-release"):
        SQLiteStore(path)
    with pytest.raises(StoreFailure, match="no store at"):
        SQLiteStore(tmp_path / "sub" / "none.db", create=False)
    assert not (tmp_path / "sub").exists()


# ---------------------------------------------------------------------- Firestore reindex
@pytest.mark.firestore
async def test_firestore_reindex_fills_the_fields_of_older_documents(
    firestore_emulator: str, tmp_path: Path
) -> None:
    from google.cloud.firestore import DELETE_FIELD

    from tai_fsm.stores.firestore import FirestoreStore
    from tai_fsm.testing.backends import open_backend

    async with open_backend("firestore", tmp_path) as store:
        assert isinstance(store, FirestoreStore)
        async with Runtime(store, [Order], own_store=False) as rt:
            for n in range(1, 4):
                await rt.create("order", f"o-{n}", {"items": 1}, governor=GOV)
            await (await rt.get("o-2", governor=GOV)).trigger("pay")
        states = store.client.collection(f"{store.prefix}governors").document(GOV)
        for n in (1, 2):  # as tai-fsm wrote them before queries existed
            await states.collection("states").document(f"o-{n}").update(
                {"machine": DELETE_FIELD, "state": DELETE_FIELD}
            )
        assert await store.find_states(GOV, machine="order") == ["o-3"]
        async with Runtime(store, [Order], own_store=False) as rt:
            held = await rt.get("o-1", governor=GOV)  # its token goes stale below
            assert await store.reindex(GOV) == 2
            await held.trigger("pay")  # the stale token costs one re-read, nothing else
        assert await store.find_states(GOV, machine="order") == ["o-1", "o-2", "o-3"]
        assert await store.find_states(GOV, machine="order", state="paid") == ["o-1", "o-2"]
        assert await store.reindex() == 0  # every governor; nothing left to do
