"""Edge cases of the commit protocol found in review, each pinned by a test."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import tai_fsm as fsm
from tai_fsm.errors import InvalidInput, StoreUnavailable, TaiFsmError
from tai_fsm.records import StateSnapshot
from tai_fsm.runtime import commit
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.memory import MemoryStore

GOV = "edges"
HOOKS: list[str] = []


class Cart(fsm.Machine):
    class Data(BaseModel):
        extra: Any = None

    open = fsm.State(initial=True)
    closed = fsm.State(final=True)
    add = open.to(None, before=["do_add"])
    close = open.to(closed)

    def do_add(self, event: Any) -> None:
        self.data.extra["n"] += 1  # mutates a nested value in place
        if event.payload.get("explode"):
            raise RuntimeError("boom")


async def test_in_place_changes_of_a_failed_trigger_never_reach_the_next_commit(
    store: Store,
) -> None:
    async with Runtime(store, [Cart], own_store=False) as rt:
        cart = await rt.create("cart", "c", data={"extra": {"n": 0}}, governor=GOV)
        with pytest.raises(RuntimeError):
            await cart.trigger("add", payload={"explode": True})
        assert cart.data.extra == {"n": 0}
        event = await cart.trigger("add")
        assert event.from_state is not None
        assert event.from_state.data["data"]["extra"] == {"n": 0}
        assert event.to_state.data["data"]["extra"] == {"n": 1}


class Wallet(fsm.Machine):
    active = fsm.State(initial=True)
    closed = fsm.State(final=True)
    spend = active.to(None, before=["debit"], after_commit=["receipt"])
    close = active.to(closed)

    def debit(self, event: Any) -> None:
        self.data["balance"] -= event.payload.pop("amount")
        event.payload.setdefault("tags", []).append("seen")

    async def receipt(self, event: Any) -> None:
        HOOKS.append(f"receipt v{event.version}")


async def test_each_conflict_retry_runs_on_a_fresh_copy_of_the_payload(store: Store) -> None:
    async with Runtime(store, [Wallet], own_store=False) as rt:
        first = await rt.create("wallet", "w", data={"balance": 10}, governor=GOV)
        stale = await rt.get("w", governor=GOV)
        await first.trigger("spend", payload={"amount": 1})
        payload = {"amount": 2, "tags": []}
        event = await stale.trigger("spend", payload=payload)  # conflicts once, re-runs
        assert stale.data == {"balance": 7}
        assert event.payload == {"amount": 2, "tags": []}  # what the caller sent
        assert payload == {"amount": 2, "tags": []}  # the caller's dict is untouched


async def test_mutating_a_returned_event_cannot_change_the_instance(store: Store) -> None:
    async with Runtime(store, [Wallet], own_store=False) as rt:
        wallet = await rt.create("wallet", "m", data={"balance": 10}, governor=GOV)
        event = await wallet.trigger("spend", payload={"amount": 1})
        event.to_state.data["data"]["balance"] = 1_000_000
        with pytest.raises(KeyError):
            await wallet.trigger("spend", payload={})  # fails: instance restored
        assert wallet.data == {"balance": 9}


async def test_cancelled_caller_still_gets_a_consistent_instance_and_its_hooks(
    tmp_path: Path,
) -> None:
    HOOKS.clear()
    async with Runtime(fsm.open_store(f"sqlite:///{tmp_path / 'c.db'}"), [Wallet]) as rt:
        wallet = await rt.create("wallet", "w", data={"balance": 10})
        task = asyncio.create_task(wallet.trigger("spend", payload={"amount": 3}))
        await asyncio.sleep(0)  # the append is submitted
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await rt.flush()  # background post-commit hooks
        stored = await rt.get("w")
        assert (wallet.version, wallet.data) == (stored.version, stored.data)
        if stored.version == 2:  # the append landed before the cancellation took effect
            assert stored.data == {"balance": 7} and HOOKS == ["receipt v2"]
        else:
            assert stored.version == 1 and HOOKS == []


class Job(fsm.Machine):
    new = fsm.State(initial=True)
    started = fsm.State()
    done = fsm.State(final=True)
    start = new.to(started, after_commit=["kick"])
    finish = started.to(done)
    background: asyncio.Task[Any] | None = None

    async def kick(self, event: Any) -> None:
        if self.data.get("mode") == "await":
            await self.trigger("finish")  # an async hook awaits its own trigger

        else:
            async def later() -> Any:
                await asyncio.sleep(0.01)
                return await self.trigger("finish")

            type(self).background = asyncio.create_task(later())


@pytest.mark.parametrize("mode", ["await", "task"])
async def test_triggers_from_async_hooks_and_their_tasks_commit(store: Store, mode: str) -> None:
    async with Runtime(store, [Job], own_store=False) as rt:
        job = await rt.create("job", f"j-{mode}", data={"mode": mode}, governor=GOV)
        await asyncio.wait_for(job.trigger("start"), 5)
        if mode == "task":
            assert Job.background is not None
            await asyncio.wait_for(Job.background, 5)
        assert (job.state, job.version) == ("done", 3)


class Ticker(fsm.Machine):
    snapshot_every = 10
    ticking = fsm.State(initial=True)
    halted = fsm.State(final=True)
    tick = ticking.to(None, before=["bump"])
    halt = ticking.to(halted)

    def bump(self, event: Any) -> None:
        self.data["n"] = self.data.get("n", 0) + 1


async def test_verify_stays_ok_after_cleanup_and_retention_drop_the_anchor(
    store: Store,
) -> None:
    async with Runtime(store, [Ticker], own_store=False) as rt:
        ticker = await rt.create("ticker", "t", governor=GOV)
        for _ in range(19):
            await ticker.trigger("tick")
        await rt.flush()
        await store.cleanup_old_data(GOV, older_than=timedelta(0))  # cut at the head, 20
        report = await rt.verify("t", governor=GOV)
        assert report.ok and report.first_version == 20
        for _ in range(50):  # retention (5) drops the snapshot at 20 later on
            await ticker.trigger("tick")
        await rt.flush()
        report = await rt.verify("t", governor=GOV)
        assert report.ok and report.head == 70
        persister = fsm.StateMachinePersister.with_defaults(store)
        assert (await persister.validate_consistency(GOV)).is_consistent
        with pytest.raises(InvalidInput, match="version 5 is no longer in the log"):
            await rt.state_at("t", governor=GOV, version=5)


async def test_state_at_a_time_stops_at_the_first_later_event_despite_clock_skew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    store = MemoryStore()
    node_a = Runtime(store, [Ticker], node_id="a", own_store=False)
    node_b = Runtime(store, [Ticker], node_id="b", own_store=False)
    monkeypatch.setattr(commit, "utc_now", lambda: t0 + timedelta(seconds=10))
    ticker = await node_a.create("ticker", "skew")
    await ticker.trigger("tick")  # v2 at +10 s (the create used the real clock: earlier)
    monkeypatch.setattr(commit, "utc_now", lambda: t0 + timedelta(seconds=5))
    other = await node_b.get("skew")
    await other.trigger("tick")  # v3 at +5 s: node b's clock is behind
    past = await node_a.state_at("skew", at=t0 + timedelta(seconds=7))
    assert past.version == 1  # v2 (+10 s) is after +7 s: the history stops there
    assert (await node_a.state_at("skew", at=t0 + timedelta(seconds=12))).version == 3


class _FailingSnapshots(MemoryStore):
    async def save_snapshot(self, *args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("snapshot backend down")


async def test_persister_snapshot_failure_does_not_fail_a_committed_transition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _FailingSnapshots()
    persister = fsm.StateMachinePersister(store, fsm.PersistenceConfig(snapshot_interval=2))
    await persister.log_transition("g", None, StateSnapshot(id="a", data={"n": 0}), "open")
    event = await persister.log_transition("g", None, StateSnapshot(id="a", data={"n": 1}), "inc")
    assert event.version == 2 and await store.stream_version("g", "a") == 2
    assert "snapshot of g/a v2 failed" in caplog.text


RUN_YAML = """
name: dep
initial: idle
states:
  - idle
  - name: run
    initial: a
    timeout: {after: 1h, trigger: give_up}
    on_enter_committed: [run_committed]
    children: [a, b]
  - {name: done, final: true}
transitions:
  - {trigger: go, source: idle, dest: run}
  - {trigger: next, source: run.a, dest: run.b}
  - {trigger: restart, source: run.b, dest: run}
  - {trigger: give_up, source: run, dest: done}
"""


async def test_a_transition_to_an_ancestor_re_enters_it(tmp_path: Path) -> None:
    path = tmp_path / "dep.yaml"
    path.write_text(RUN_YAML)

    class Dep(fsm.load_machine(path)):  # type: ignore[misc]
        def run_committed(self, event: Any) -> None:
            HOOKS.append(f"run entered by {event.action}")

    HOOKS.clear()
    async with Runtime(MemoryStore(), [Dep]) as rt:
        dep = await rt.create("dep", "x")
        first = await dep.trigger("go")
        await dep.trigger("next")
        again = await dep.trigger("restart")
        assert dep.state == "run.a"
        assert HOOKS == ["run entered by go", "run entered by restart"]
        due = [t["due"] for t in (first.to_state.data["timers"], again.to_state.data["timers"])
               for t in t]
        assert due[1] > due[0]  # the timer restarted


async def test_a_closed_runtime_refuses_triggers() -> None:
    rt = Runtime(MemoryStore(), [Ticker])
    ticker = await rt.create("ticker", "t")
    await rt.close()
    with pytest.raises(TaiFsmError, match="is closed"):
        await ticker.trigger("tick")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sync_facade_works_in_a_forked_child() -> None:
    from tai_fsm import sync

    sync.open_store("memory://").close()
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's loop thread
        signal.alarm(10)
        try:
            with sync.Runtime(sync.open_store("memory://"), [Ticker]) as rt:
                rt.create("ticker", "child").trigger("tick")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
