"""The commit protocol (DESIGN.md §4), on every backend through the ``store`` fixture."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from rt_machines import CALLS, Account, Counter, Pipeline, Ticker

import tai_fsm as fsm
from tai_fsm.errors import (
    InvalidInput,
    PostCommitHookFailed,
    SerializationError,
    StateNotFound,
    StoreUnavailable,
    TaiFsmError,
    TransitionNotAllowed,
    VersionConflict,
)
from tai_fsm.records import AppendResult, Event, StateSnapshot
from tai_fsm.runtime.runtime import CREATE_ACTION, InstanceExists, Runtime
from tai_fsm.stores.base import Store

GOV = "bank"


@pytest.fixture
async def rt(store: Store) -> Any:
    machines = [Account, Counter, Ticker, Pipeline]
    async with Runtime(store, machines, node_id="t1", own_store=False) as r:
        yield r


async def _events(store: Store, stream: str, governor: str = GOV) -> list[Event]:
    return [e async for e in store.read_events(governor, stream)]


async def test_create_then_trigger_commits_one_event_with_the_state_record(
    rt: Runtime, store: Store
) -> None:
    acct = await rt.create("account", "a-1", data={"balance": 10}, governor=GOV, actor="ops")
    assert (acct.state, acct.version, acct.data["balance"]) == ("open", 1, 10)

    event = await acct.trigger("deposit", actor="alice", reason="salary", payload={"amount": 5})

    assert (event.version, event.action, event.stream_id) == (2, "deposit", "a-1")
    assert event.metadata.changed_by == "alice" and event.metadata.reason == "salary"
    assert event.payload == {"amount": 5}
    assert event.from_state is not None and event.from_state.data["data"]["balance"] == 10
    assert event.to_state.data == {"machine": "account", "state": "open",
                                   "data": {"balance": 15}}
    assert (acct.version, acct.data["balance"]) == (2, 15)
    stored = await store.read_state(GOV, "a-1")
    assert stored.version == 2 and stored.snapshot.data == event.to_state.data
    events = await _events(store, "a-1")
    assert [e.action for e in events] == [CREATE_ACTION, "deposit"]
    assert events[1].prev_hash == events[0].hash and events[1].hash == event.hash


async def test_failed_condition_names_it_and_writes_nothing(rt: Runtime, store: Store) -> None:
    acct = await rt.create("account", "a-2", data={"balance": 3}, governor=GOV)
    with pytest.raises(TransitionNotAllowed) as err:
        await acct.trigger("withdraw", payload={"amount": 5})
    assert err.value.condition == "unless overdrawn"
    assert "overdrawn" in str(err.value)
    with pytest.raises(TransitionNotAllowed) as err:
        await acct.trigger("deposit", payload={"amount": 0})
    assert err.value.condition == "positive_amount"
    with pytest.raises(TransitionNotAllowed, match="not allowed from state 'open'"):
        await acct.trigger("thaw")
    with pytest.raises(TransitionNotAllowed, match="unknown trigger 'fly'"):
        await acct.trigger("fly")
    assert (acct.state, acct.version, acct.data) == ("open", 1, {"balance": 3})
    assert await store.stream_version(GOV, "a-2") == 1


@pytest.mark.parametrize("where", ["before", "on_exit", "on_enter", "after"])
async def test_a_raising_callback_leaves_no_event_and_the_instance_unchanged(
    rt: Runtime, store: Store, where: str
) -> None:
    acct = await rt.create("account", f"raise-{where}", data={"fail_in": where}, governor=GOV)
    before = (acct.state, acct.version, dict(acct.data))
    with pytest.raises(RuntimeError, match=f"boom in {where}"):
        await acct.trigger("freeze", payload={"by": "risk"})
    assert (acct.state, acct.version, acct.data) == before
    assert "damage" not in acct.data
    assert await store.stream_version(GOV, f"raise-{where}") == 1
    assert (await store.read_state(GOV, f"raise-{where}")).version == 1


async def test_post_commit_hook_failure_keeps_the_event_and_surfaces(
    rt: Runtime, store: Store
) -> None:
    CALLS.clear()
    acct = await rt.create("account", "hooked", data={"fail_hook": True}, governor=GOV)
    with pytest.raises(PostCommitHookFailed, match="email service down") as err:
        await acct.trigger("close")
    assert err.value.event.version == 2 and err.value.event.action == "close"
    assert (acct.state, acct.version) == ("closed", 2)
    assert (await store.read_state(GOV, "hooked")).snapshot.data["state"] == "closed"
    # both hooks ran, after the commit, transition hook first
    assert CALLS == ["after_commit:hooked:v2", "on_enter_committed:hooked:v2"]


async def test_data_changed_in_on_enter_is_committed_and_survives_a_restart(
    store: Store,
) -> None:
    async with Runtime(store, [Account], node_id="n1", own_store=False) as rt1:
        acct = await rt1.create("account", "persist", governor=GOV)
        event = await acct.trigger("freeze", payload={"by": "compliance"})
        assert event.to_state.data["data"]["frozen_by"] == "compliance"
    async with Runtime(store, [Account], node_id="n2", own_store=False) as rt2:
        again = await rt2.get("persist", governor=GOV)
        assert (again.state, again.version) == ("frozen", 2)
        assert again.data["frozen_by"] == "compliance" and again.data["freezes"] == 1
        thawed = await again.trigger("thaw")
        assert thawed.version == 3 and thawed.prev_hash == event.hash


async def test_trigger_fired_from_a_callback_is_queued_as_its_own_event(
    rt: Runtime, store: Store
) -> None:
    acct = await rt.create("account", "queue", governor=GOV)
    event = await acct.trigger("audit")
    assert event.version == 2
    assert acct.version == 3 and acct.data["follow_ups"] == 1
    assert [e.action for e in await _events(store, "queue")] == [
        CREATE_ACTION, "audit", "follow_up"
    ]


async def test_conflict_catches_up_and_re_evaluates_on_fresh_state(
    rt: Runtime, store: Store
) -> None:
    first = await rt.create("account", "race", data={"balance": 10}, governor=GOV)
    second = await rt.get("race", governor=GOV)
    await first.trigger("deposit", payload={"amount": 5})
    # `second` is stale (v1, balance 10): its commit conflicts, it catches up and re-runs
    # the transition on the fresh v2 data (balance 15)
    event = await second.trigger("withdraw", payload={"amount": 8})
    assert event.version == 3 and second.data["balance"] == 7
    stale = await rt.get("race", governor=GOV)
    await second.trigger("withdraw", payload={"amount": 6})
    # re-evaluation can also reject: on the fresh data (balance 1) the condition fails
    with pytest.raises(TransitionNotAllowed, match="overdrawn"):
        await stale.trigger("withdraw", payload={"amount": 5})
    assert stale.version == 4 and stale.data["balance"] == 1
    versions = [e.version for e in await _events(store, "race")]
    assert versions == [1, 2, 3, 4]


async def test_conflict_retries_are_bounded(store: Store) -> None:
    async with Runtime(store, [Counter], own_store=False, max_conflict_retries=0) as rt:
        a = await rt.create("counter", "bounded", governor=GOV)
        b = await rt.get("bounded", governor=GOV)
        await a.trigger("increment")
        with pytest.raises(VersionConflict) as err:
            await b.trigger("increment")
        assert (err.value.expected, err.value.actual) == (1, 2)
        assert (b.version, b.data) == (1, {})  # restored, not half-applied


async def test_create_is_exclusive_and_get_unknown_is_not_found(rt: Runtime) -> None:
    await rt.create("counter", "only-once", governor=GOV)
    with pytest.raises(InstanceExists) as err:
        await rt.create("counter", "only-once", governor=GOV)
    assert err.value.is_permanent()
    with pytest.raises(StateNotFound):
        await rt.get("nobody", governor=GOV)
    with pytest.raises(InvalidInput, match="not hosted"):
        await rt.create("spaceship", "x", governor=GOV)
    with pytest.raises(InvalidInput, match="must not contain '/'"):
        await rt.create("counter", "a/b", governor=GOV)


async def test_unserialisable_data_from_a_callback_writes_nothing(
    rt: Runtime, store: Store
) -> None:
    acct = await rt.create("account", "weird", governor=GOV)
    acct.data["socket"] = object()
    with pytest.raises(SerializationError):
        await acct.trigger("deposit", payload={"amount": 1})
    assert "socket" not in acct.data and acct.version == 1
    assert await store.stream_version(GOV, "weird") == 1


async def test_nothing_on_an_instance_changes_state_without_a_commit(rt: Runtime) -> None:
    acct = await rt.create("account", "bare", governor=GOV)
    for name in ("to_frozen", "may_freeze", "is_open", "freeze_"):
        assert not hasattr(acct, name)
    assert Account.freeze == "freeze"  # the class attribute is just the trigger's name
    assert set(vars(acct)) == {"id", "governor", "state", "version", "data", "_binding",
                               "_tai_core"}
    assert acct.available_triggers == ["deposit", "withdraw", "freeze", "close", "audit",
                                       "follow_up"]
    assert acct.may_trigger("freeze") and not acct.may_trigger("thaw")


async def test_snapshots_every_n_keep_the_newest_k_and_recovery_uses_them(
    rt: Runtime, store: Store
) -> None:
    acct = await rt.create("account", "snaps", governor=GOV)
    for _ in range(16):
        await acct.trigger("deposit", payload={"amount": 1})
    await rt.flush()
    assert await store.snapshot_versions(GOV, "snaps") == [10, 15]  # every 5, keep 2
    report = await rt.recover("snaps", governor=GOV)
    assert (report.snapshot_version, report.replayed_events) == (15, 2)
    assert report.instance.data["balance"] == 16 and report.instance.version == 17


async def test_state_at_every_version_equals_what_was_seen(rt: Runtime, store: Store) -> None:
    count = 60 if "Firestore" in type(store).__name__ else 1000
    ctr = await rt.create("ticker", "travel", governor=GOV)
    seen = {1: dict(ctr.data)}
    times = {}
    for _ in range(count - 1):
        event = await ctr.trigger("tick")
        seen[event.version] = dict(ctr.data)
        times[event.version] = event.timestamp
    await rt.flush()
    for version, data in seen.items():
        past = await rt.state_at("travel", governor=GOV, version=version)
        assert (past.version, past.data) == (version, data)
    for version in (2, count // 2, count):
        past = await rt.state_at("travel", governor=GOV, at=times[version])
        assert past.version == version
    with pytest.raises(TaiFsmError, match="read-only"):
        await past.trigger("tick")
    with pytest.raises(InvalidInput, match="no version"):
        await rt.state_at("travel", governor=GOV, version=count + 1)


async def test_nested_states_commit_and_run_entered_hooks(rt: Runtime, store: Store) -> None:
    CALLS.clear()
    pipe = await rt.create("pipeline", "p-1", governor=GOV)
    await pipe.trigger("start")
    assert pipe.state == "running.build"
    await pipe.trigger("next_stage")
    assert pipe.state == "running.test"
    assert CALLS == ["entered_running:p-1", "entered_test:p-1"]
    await pipe.trigger("abort")
    assert pipe.state == "idle"
    assert [e.to_state.data["state"] for e in await _events(store, "p-1")] == [
        "idle", "running.build", "running.test", "idle"
    ]


async def test_timers_are_recorded_in_the_state_record(rt: Runtime, store: Store) -> None:
    acct = await rt.create("account", "timed", governor=GOV)
    event = await acct.trigger("freeze")
    timers = (await store.read_state(GOV, "timed")).snapshot.data["timers"]
    assert [(t["state"], t["trigger"]) for t in timers] == [("frozen", "thaw")]
    from datetime import datetime
    due = datetime.fromisoformat(timers[0]["due"])
    assert due - event.timestamp == timedelta(hours=1)
    await acct.trigger("thaw")
    assert "timers" not in (await store.read_state(GOV, "timed")).snapshot.data


async def test_verify_passes_on_an_untouched_history(rt: Runtime) -> None:
    ctr = await rt.create("counter", "audit-me", governor=GOV)
    for _ in range(7):
        await ctr.trigger("increment")
    report = await rt.verify("audit-me", governor=GOV)
    assert report.ok and report.events_checked == 8 and report.head == 8


class _LandsThenFails:
    """A real store whose next append lands and then reports a transient failure — what a
    lost network reply looks like to the client."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.fail_next = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("inner", "fail_next", "append_events"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    async def append_events(self, *args: Any, **kwargs: Any) -> AppendResult:
        result = await self.inner.append_events(*args, **kwargs)
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("connection reset after commit")
        return result


async def test_a_retried_append_that_already_landed_is_not_duplicated(store: Store) -> None:
    flaky = _LandsThenFails(store)
    async with Runtime(flaky, [Counter], own_store=False) as rt:  # type: ignore[arg-type]
        ctr = await rt.create("counter", "flaky", governor=GOV)
        flaky.fail_next = 1
        event = await ctr.trigger("increment")
        assert event.version == 2 and ctr.version == 2
    events = await _events(store, "flaky")
    assert [e.version for e in events] == [1, 2]
    assert events[1].id == event.id


async def test_sync_facade_runs_the_same_calls_blocking(tmp_path: Any) -> None:
    from tai_fsm import sync

    store = sync.open_store(f"sqlite:///{tmp_path / 'sync.db'}")
    with sync.Runtime(store, [Counter], node_id="script") as rt:
        ctr = rt.create("counter", "c-1")
        event = ctr.trigger("increment", actor="script")
        assert (event.version, ctr.version, ctr.data) == (2, 2, {"n": 1})
        again = rt.get("c-1")
        assert again.state == "counting" and again.version == 2
        assert [e.action for e in rt.history("c-1")] == [CREATE_ACTION, "increment"]
        assert rt.state_at("c-1", version=1).data == {}


async def test_public_api_names(store: Store) -> None:
    assert fsm.Runtime is Runtime
    assert fsm.StateSnapshot is StateSnapshot
    persister = fsm.StateMachinePersister.with_defaults(store)
    assert persister.config == fsm.PersistenceConfig()


class _SnapshotsFailOnce:
    """A real store whose first ``save_snapshot`` raises (a passing outage)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.failures = 1

    def __getattribute__(self, name: str) -> Any:
        if name in ("inner", "failures", "save_snapshot"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    async def save_snapshot(self, *args: Any, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("snapshot write timed out")
        await self.inner.save_snapshot(*args, **kwargs)


async def test_a_failed_snapshot_is_logged_and_retried_not_lost(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = _SnapshotsFailOnce(store)
    async with Runtime(flaky, [Account], own_store=False) as rt:  # type: ignore[arg-type]
        acct = await rt.create("account", "snap-retry", governor=GOV)
        for _ in range(4):  # v5: snapshot due, and it fails
            await acct.trigger("deposit", payload={"amount": 1})
        await rt.flush()
        assert "snapshot of bank/snap-retry v5 failed" in caplog.text
        assert await store.snapshot_versions(GOV, "snap-retry") == [5]  # retried by flush
        for _ in range(5):
            await acct.trigger("deposit", payload={"amount": 1})
    assert await store.snapshot_versions(GOV, "snap-retry") == [5, 10]


class Wildcard(fsm.Machine):
    a = fsm.State(initial=True)
    b = fsm.State()
    done = fsm.State(final=True)
    go = a.to(b)
    back = b.to(a)
    finish = fsm.Transition(source="*", dest=done)


async def test_wildcard_source_means_every_non_final_state(store: Store) -> None:
    async with Runtime(store, [Wildcard], own_store=False) as rt:
        w = await rt.create("wildcard", "w", governor=GOV)
        assert w.available_triggers == ["go", "finish"]
        await w.trigger("go")
        await w.trigger("finish")
        assert w.state == "done" and w.available_triggers == []
        with pytest.raises(TransitionNotAllowed, match="final state 'done'"):
            await w.trigger("finish")


class Typed(fsm.Machine):
    from pydantic import BaseModel as _Base

    class Data(_Base):
        n: int = 0

    on = fsm.State(initial=True)
    off = fsm.State(final=True)
    poke = on.to(None, before=["corrupt"])
    stop = on.to(off)

    def corrupt(self, event: Any) -> None:
        self.data.n = event.payload["value"]


async def test_data_model_is_revalidated_before_commit(store: Store) -> None:
    async with Runtime(store, [Typed], own_store=False) as rt:
        t = await rt.create("typed", "t", governor=GOV)
        await t.trigger("poke", payload={"value": 5})
        assert t.data.n == 5
        with pytest.raises(SerializationError, match="no longer matches Data"):
            await t.trigger("poke", payload={"value": "oops"})
        assert t.data.n == 5 and t.version == 2
        assert (await rt.get("t", governor=GOV)).data.n == 5


async def test_async_pre_commit_callbacks_are_rejected_at_bind_time() -> None:
    class AsyncGuard(fsm.Machine):
        a = fsm.State(initial=True)
        b = fsm.State(final=True)
        go = a.to(b, conditions=["ready"], after_commit=["notify"])

        async def ready(self, event: Any) -> bool:
            return True

        async def notify(self, event: Any) -> None:
            return None

    with pytest.raises(fsm.DefinitionError, match=r"'ready' .* is async; callbacks that run"):
        Runtime(fsm.open_store("memory://"), [AsyncGuard])
