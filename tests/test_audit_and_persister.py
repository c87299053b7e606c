"""Audit (hash chain, tampering, compaction) and the seed-compatible persister."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from rt_machines import Ticker

import tai_fsm as fsm
from tai_fsm.errors import IntegrityError, StateNotFound, VersionConflict
from tai_fsm.records import ChangeMetadata, StateSnapshot
from tai_fsm.runtime.history import verify_stream
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.sqlite import SQLiteStore


async def _ticks(store: Store, instance: str, count: int) -> None:
    async with Runtime(store, [Ticker], own_store=False) as rt:
        ticker = await rt.create("ticker", instance)
        for _ in range(count - 1):
            await ticker.trigger("tick")


@pytest.mark.parametrize("field", ["payload", "to_state", "metadata", "timestamp"])
async def test_tampering_with_one_event_fails_verify_at_exactly_that_version(
    tmp_path: Path, field: str
) -> None:
    db = tmp_path / "audit.db"
    async with SQLiteStore(db) as store:
        await _ticks(store, "t", 30)
        assert (await verify_stream(store, "default", "t")).ok
    with sqlite3.connect(db) as conn:
        (raw,) = conn.execute(
            "SELECT data FROM events WHERE stream_id='t' AND version=17"
        ).fetchone()
        doc = orjson.loads(raw)
        if field == "payload":
            doc["payload"] = {"amount": 1_000_000}
        elif field == "to_state":
            doc["to_state"]["data"]["data"]["n"] = 99
        elif field == "metadata":
            doc["metadata"]["changed_by"] = "mallory"
        else:
            doc["timestamp"] = "2020-01-01T00:00:00Z"
        conn.execute(
            "UPDATE events SET data=? WHERE stream_id='t' AND version=17", (orjson.dumps(doc),)
        )
    async with SQLiteStore(db) as store:
        report = await verify_stream(store, "default", "t")
        assert not report.ok and report.broken_version == 17
        assert "version 17" in report.problems[0]
        with pytest.raises(IntegrityError) as err:
            report.raise_if_broken()
        assert (err.value.stream_id, err.value.version) == ("t", 17)


async def test_deleting_an_event_is_reported_as_a_gap(tmp_path: Path) -> None:
    db = tmp_path / "gap.db"
    async with SQLiteStore(db) as store:
        await _ticks(store, "g", 12)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE stream_id='g' AND version=5")
    async with SQLiteStore(db) as store:
        report = await verify_stream(store, "default", "g")
        assert report.broken_version == 5 and "version 5 is missing" in report.problems[0]


async def test_cleanup_compacts_yet_verify_recovery_and_state_at_still_work(
    store: Store,
) -> None:
    await _ticks(store, "old", 35)  # snapshots at 10, 20, 30 (every 10)
    async with Runtime(store, [Ticker], own_store=False) as rt:
        await rt.flush()
        result = await store.cleanup_old_data("default", older_than=timedelta(0))
        assert result.deleted_events == 30 and result.recovered_bytes > 0
        report = await rt.verify("old")
        assert report.ok and report.first_version == 31 and report.head == 35
        recovered = await rt.recover("old")
        assert recovered.instance.version == 35 and recovered.instance.data == {"n": 34}
        past = await rt.state_at("old", version=32)
        assert past.data == {"n": 31}


async def test_persister_logs_loads_and_validates(store: Store) -> None:
    persister = fsm.StateMachinePersister(store, fsm.PersistenceConfig(snapshot_interval=2))
    first = StateSnapshot(id="counter", data={"count": 0},
                          metadata=ChangeMetadata(changed_by="system", reason="init"))
    e1 = await persister.log_transition("g", None, first, "init")
    assert e1.version == 1 and e1.prev_hash is None
    state = first
    for count in (1, 2, 3):
        new = StateSnapshot(id="counter", data={"count": count})
        event = await persister.log_transition(
            "g", state.model_copy(update={"version": count}), new, "increment",
            ChangeMetadata(changed_by="alice", reason="click"),
        )
        assert event.version == count + 1
        state = event.to_state
    loaded, was_recovery = await persister.load_state("g", "counter")
    assert (loaded.data, loaded.version, was_recovery) == ({"count": 3}, 4, False)
    assert await store.snapshot_versions("g", "counter") == [2, 4]
    # a stale from_state is an optimistic-concurrency conflict
    with pytest.raises(VersionConflict):
        await persister.log_transition(
            "g", state.model_copy(update={"version": 2}), StateSnapshot(id="counter", data={}),
            "increment",
        )
    report = await persister.validate_consistency("g")
    assert report.is_consistent and report.streams_checked == 1 and report.events_checked == 4
    # the state record lost: load_state rebuilds from snapshot + replay
    await store.delete_state("g", "counter")
    loaded, was_recovery = await persister.load_state("g", "counter")
    assert (loaded.data, loaded.version, was_recovery) == ({"count": 3}, 4, True)
    no_replay = fsm.StateMachinePersister(store, fsm.PersistenceConfig(auto_replay=False))
    with pytest.raises(StateNotFound):
        await no_replay.load_state("g", "counter")
