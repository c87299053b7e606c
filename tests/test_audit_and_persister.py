"""Audit (hash chain, tampering, compaction) and the seed-compatible persister."""

from __future__ import annotations

import math
import sqlite3
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from rt_machines import Ticker

import tai_fsm as fsm
from tai_fsm.errors import IntegrityError, InvalidInput, StateNotFound, VersionConflict
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


async def test_seed_scenario_save_state_then_three_transitions(store: Store) -> None:
    """Issue 8, part 5, as the seed writes it: the record exists (v1) before its stream."""
    persister = fsm.StateMachinePersister.with_defaults(store)
    init = ChangeMetadata(changed_by="system", reason="init")
    initial = StateSnapshot(id="counter", data={"count": 0}, metadata=init)
    assert await store.save_state("g", "counter", initial, init) == 1
    current = initial
    for count in (1, 2, 3):
        new = StateSnapshot(id="counter", data={"count": count})
        event = await persister.log_transition(
            "g", current, new, "increment", ChangeMetadata(changed_by="alice", reason="click")
        )
        assert (event.version, event.to_state.data) == (count, {"count": count})
        assert event.from_state is not None
        assert event.from_state.data == {"count": count - 1}
        current = new
    events = await store.get_all_events("g")
    assert [e.to_state.data["count"] for e in events] == [1, 2, 3]
    assert (await store.replay_events(events)).data == {"count": 3}
    loaded, was_recovery = await persister.load_state("g", "counter")
    assert (loaded.data, was_recovery) == ({"count": 3}, False)
    snapshot, record_version = await store.get_state("g", "counter")
    assert (snapshot.data, record_version) == ({"count": 3}, 4)  # record and stream count apart
    assert snapshot.metadata.context["event_id"] == events[-1].id
    report = await persister.validate_consistency("g")
    assert report.is_consistent, report.problems
    assert (await verify_stream(store, "g", "counter")).ok
    # a stale caller still conflicts, and writes nothing
    with pytest.raises(VersionConflict):
        await persister.log_transition(
            "g", events[0].to_state, StateSnapshot(id="counter", data={"count": 9}), "set"
        )
    assert await store.stream_version("g", "counter") == 3


async def test_seed_scenario_from_state_as_read_from_get_state(store: Store) -> None:
    persister = fsm.StateMachinePersister.with_defaults(store)
    await store.save_state("g", "c2", StateSnapshot(id="c2", data={"count": 0}))
    snapshot, version = await store.get_state("g", "c2")
    event = await persister.log_transition(
        "g", snapshot.model_copy(update={"version": version}),
        StateSnapshot(id="c2", data={"count": 1}), "increment",
    )
    event = await persister.log_transition(
        "g", event.to_state, StateSnapshot(id="c2", data={"count": 2}), "increment"
    )
    assert event.version == 2
    assert (await persister.load_state("g", "c2"))[0].data == {"count": 2}


async def test_log_transition_on_a_stream_that_log_event_started(store: Store) -> None:
    persister = fsm.StateMachinePersister.with_defaults(store)
    opened = fsm.Event(id="evt1", action="open",
                       to_state=StateSnapshot(id="acct", data={"balance": 0}))
    await store.log_event("g", opened)
    event = await persister.log_transition(
        "g", None, StateSnapshot(id="acct", data={"balance": 5}), "deposit",
        payload={"amount": 5},
    )
    assert event.version == 2 and event.prev_hash is None
    assert event.from_state is not None and event.from_state.data == {"balance": 0}
    event = await persister.log_transition(
        "g", event.to_state, StateSnapshot(id="acct", data={"balance": 7}), "deposit"
    )
    assert event.version == 3
    loaded, was_recovery = await persister.load_state("g", "acct")
    assert (loaded.data, was_recovery) == ({"balance": 7}, False)
    assert (await persister.validate_consistency("g")).is_consistent
    assert [e.version for e in await store.get_all_events("g")] == [1, 2, 3]


async def test_persister_checks_its_arguments_before_writing(store: Store) -> None:
    persister = fsm.StateMachinePersister.with_defaults(store)
    good = StateSnapshot(id="p", data={"n": 0})
    bad_calls: list[tuple[dict[str, object], str]] = [
        ({"to_state": StateSnapshot(id="p", data={"n": math.nan})}, "to_state.data"),
        ({"to_state": StateSnapshot(id="p", data={"t": (1, 2)})}, "to_state.data"),
        ({"to_state": {"id": "p"}}, "to_state"),
        ({"to_state": StateSnapshot(id="a/b")}, "to_state.id"),
        ({"action": 5}, "action"),
        ({"action": ""}, "action"),
        ({"payload": [1, 2]}, "payload"),
        ({"metadata": ChangeMetadata(changed_by="x" * 5000)}, "metadata.changed_by"),
        ({"metadata": ChangeMetadata(context={"at": uuid.uuid4()})}, "metadata.context"),
        ({"metadata": "alice"}, "metadata"),
        ({"from_state": StateSnapshot(id="other")}, "from_state"),
        ({"governor": "a/b"}, "governor"),
    ]
    for override, field in bad_calls:
        call: dict[str, object] = {"governor": "g", "from_state": None, "to_state": good,
                                   "action": "set", "metadata": None, **override}
        payload = call.pop("payload", None)
        with pytest.raises(InvalidInput) as err:
            await persister.log_transition(**call, payload=payload)  # type: ignore[arg-type]
        assert err.value.field == field, (override, err.value)
    assert await store.list_streams("g") == []
