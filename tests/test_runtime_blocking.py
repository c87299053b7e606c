"""The blocking runtime (``tai_fsm.sync`` over SQLite and memory): the one commit protocol,
driven on the caller's thread — callbacks there, commits on its own connection, the same
instances and rules as the async runtime."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from rt_machines import CALLS, Account, Counter, Pipeline

import tai_fsm as fsm
from tai_fsm import sync
from tai_fsm.errors import PostCommitHookFailed, TransitionNotAllowed
from tai_fsm.runtime.runtime import CREATE_ACTION
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite_blocking import BlockingSQLiteStore


class Local(fsm.Machine):
    """Records the thread its callbacks run on (what Flask/Django thread-locals need)."""

    name = "local"
    idle = fsm.State(initial=True)
    busy = fsm.State()
    start = idle.to(busy, before=["where"], after_commit=["hook_where"])
    stop = busy.to(idle)

    def where(self, event: Any) -> None:
        self.data["callback_thread"] = threading.current_thread().name

    def hook_where(self, event: Any) -> None:
        CALLS.append(f"hook:{threading.current_thread().name}")


@pytest.fixture(params=["sqlite", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'b.db'}" if request.param == "sqlite" else "memory://"


def test_open_store_gives_stores_that_run_on_the_calling_thread(tmp_path: Path) -> None:
    store = sync.open_store(f"sqlite:///{tmp_path / 'x.db'}?synchronous=FULL")
    assert isinstance(store.store, BlockingSQLiteStore) and store.direct
    assert store.pragmas()["synchronous"] == "FULL"
    store.close()
    memory = sync.open_store("memory://")
    assert isinstance(memory.store, MemoryStore) and memory.direct
    memory.close()


def test_instances_are_the_machine_class_and_trigger_returns_the_event(url: str) -> None:
    with sync.Runtime(sync.open_store(url), [Counter, Account], governor="g") as rt:
        assert rt.blocking
        ctr = rt.create("counter", "c-1")
        assert isinstance(ctr, Counter)
        event = ctr.trigger("increment", actor="script")
        assert isinstance(event, fsm.Event)
        assert (event.version, ctr.version, ctr.data, ctr.state) == (2, 2, {"n": 1}, "counting")
        assert (ctr.governor, ctr.spec.name, ctr.is_final) == ("g", "counter", False)
        assert ctr.available_triggers == ["increment", "stop"]
        assert ctr.may_trigger("stop")
        again = rt.get("c-1")
        assert isinstance(again, Counter) and again.version == 2
        assert [e.action for e in rt.history("c-1")] == [CREATE_ACTION, "increment"]
        assert rt.state_at("c-1", version=1).data == {}
        assert list(rt.instance_ids()) == ["c-1"]
        [listed] = rt.instances(machine="counter", state="counting")
        assert isinstance(listed, Counter) and listed.version == 2
        assert rt.verify("c-1").ok and [r.ok for r in rt.verify_all()] == [True]
        ctr.trigger("stop")
        assert ctr.is_final
        with pytest.raises(TransitionNotAllowed):
            ctr.trigger("increment")
        assert rt.recover("c-1").instance.version == 3


def test_callbacks_and_hooks_run_on_the_callers_thread(tmp_path: Path) -> None:
    CALLS.clear()
    rt = sync.Runtime(sync.open_store(f"sqlite:///{tmp_path / 't.db'}"), [Local])
    seen: dict[str, Any] = {}

    def request() -> None:  # a web request on a server thread
        inst = rt.create("local", "l-1")
        inst.trigger("start")
        seen.update(inst.data)

    worker = threading.Thread(target=request, name="request-7")
    worker.start()
    worker.join()
    rt.close()
    assert seen == {"callback_thread": "request-7"}
    assert CALLS == ["hook:request-7"]


def test_a_failing_callback_leaves_the_instance_and_store_as_they_were(url: str) -> None:
    with sync.Runtime(sync.open_store(url), [Account]) as rt:
        acct = rt.create("account", "a-1", data={"balance": 5})
        acct.data["fail_in"] = "before"
        with pytest.raises(RuntimeError, match="boom in before"):
            acct.trigger("deposit", payload={"amount": 3})
        assert (acct.version, acct.data) == (1, {"balance": 5})
        assert rt.get("a-1").version == 1


def test_queued_triggers_hooks_and_snapshots_work_blocking(url: str) -> None:
    CALLS.clear()
    with sync.Runtime(sync.open_store(url), [Account, Pipeline]) as rt:
        acct = rt.create("account", "a-2", data={"balance": 1})
        acct.trigger("audit")  # its `after` callback queues follow_up
        assert acct.version == 3 and acct.data["follow_ups"] == 1
        for _ in range(3):
            acct.trigger("deposit", payload={"amount": 1})
        # snapshot_every=5: written right after the commit that reached version 5
        versions = sync.SyncStore(rt.store).snapshot_versions("default", "a-2")
        assert versions == [5]
        acct.data["fail_hook"] = True
        with pytest.raises(PostCommitHookFailed) as failed:
            acct.trigger("close")  # after_commit raises; the async on_enter_committed runs
        assert failed.value.event.version == acct.version == 7
        assert CALLS == ["after_commit:a-2:v7", "on_enter_committed:a-2:v7"]
        pipe = rt.create("pipeline", "p-1")
        pipe.trigger("start")
        pipe.trigger("next_stage")
        assert pipe.state == "running.test"


def test_two_runtimes_on_one_file_conflict_and_catch_up(tmp_path: Path) -> None:
    path = f"sqlite:///{tmp_path / 'c.db'}"
    with sync.Runtime(sync.open_store(path), [Counter]) as one, \
            sync.Runtime(sync.open_store(path), [Counter]) as two:
        first = one.create("counter", "c")
        second = two.get("c")
        first.trigger("increment")
        event = second.trigger("increment")  # stale: caught up, re-run, committed
        assert event.version == 3 and second.data == {"n": 2}


def test_threads_share_one_blocking_runtime(tmp_path: Path) -> None:
    with sync.Runtime(sync.open_store(f"sqlite:///{tmp_path / 'm.db'}"), [Counter]) as rt:
        shared = rt.create("counter", "shared")

        def work() -> None:
            for _ in range(10):
                shared.trigger("increment")

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert shared.version == 41 and shared.data == {"n": 40}
        assert rt.get("shared").version == 41 and rt.verify("shared").ok


class _LoopOnly(MemoryStore):
    """A store whose calls go through the event loop (as Firestore's do)."""

    completes_synchronously = False


def test_stores_that_need_an_event_loop_keep_the_facade() -> None:
    with sync.Runtime(_LoopOnly(), [Counter]) as rt:
        assert not rt.blocking
        ctr = rt.create("counter", "f-1")
        assert isinstance(ctr, sync.Instance) and isinstance(ctr.machine, Counter)
        assert ctr.trigger("increment").version == 2
