"""Issue 13, machine-wide listeners and naming-convention callbacks, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

import tai_fsm as fsm
from tai_fsm.definition.listeners import convention_callbacks
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store


class Recorder:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.calls: list[str] = []

    def before_transition(self, instance: fsm.Machine, event: Any) -> None:
        self.calls.append(f"{self.tag} before {event.event.name} in {instance.state}")

    def after_transition(self, instance: fsm.Machine, event: Any) -> None:
        self.calls.append(f"{self.tag} after {event.event.name} in {instance.state}")

    async def after_commit(self, instance: fsm.Machine, event: fsm.Event) -> None:
        self.calls.append(f"{self.tag} committed {event.action} v{event.version}")

    def on_exception(self, instance: fsm.Machine, trigger: str, error: BaseException) -> None:
        self.calls.append(f"{self.tag} failed {trigger}: {type(error).__name__}")


CALLS: list[str] = []


class Door(fsm.Machine):
    closed = fsm.State(initial=True)
    open = fsm.State()
    locked = fsm.State()
    broken = fsm.State(final=True)

    open_it = closed.to(open, before=["explicit_before"])
    close = open.to(closed)
    lock = closed.to(locked, conditions=["has_key"])
    unlock = locked.to(closed)
    smash = fsm.Transition(source="*", dest=broken)

    def has_key(self, event: Any) -> bool:
        return bool(event.payload.get("key"))

    def explicit_before(self, event: Any) -> None:
        CALLS.append("explicit before")

    # naming conventions
    def before_open_it(self, event: Any) -> None:
        CALLS.append("before_open_it")

    def on_exit_closed(self, event: Any) -> None:
        CALLS.append("on_exit_closed")

    def on_enter_open(self, event: Any) -> None:
        CALLS.append("on_enter_open")
        self.data["opened"] = self.data.get("opened", 0) + 1

    def after_open_it(self, event: Any) -> None:
        CALLS.append("after_open_it")

    def after_commit_open_it(self, event: Any) -> None:
        CALLS.append(f"after_commit_open_it v{event.version}")

    def on_enter_committed_open(self, event: Any) -> None:
        CALLS.append("on_enter_committed_open")

    def before_nothing(self, event: Any) -> None:  # no trigger 'nothing': not a callback
        raise AssertionError("never called")


def test_naming_conventions_are_in_the_spec() -> None:
    t = {x.trigger: x for x in Door.spec.transitions}
    assert t["open_it"].before == ("explicit_before", "before_open_it")
    assert t["open_it"].after == ("after_open_it",)
    assert t["open_it"].after_commit == ("after_commit_open_it",)
    assert Door.spec.find_state("open").on_enter == ("on_enter_open",)     # type: ignore[union-attr]
    assert Door.spec.find_state("closed").on_exit == ("on_exit_closed",)   # type: ignore[union-attr]
    assert sorted(convention_callbacks(Door)) == [
        ("after_commit_open_it", "after_commit", "open_it"),
        ("after_open_it", "after", "open_it"),
        ("before_open_it", "before", "open_it"),
        ("on_enter_committed_open", "on_enter_committed", "open"),
        ("on_enter_open", "on_enter", "open"),
        ("on_exit_closed", "on_exit", "closed"),
    ]


def test_a_convention_method_listed_explicitly_runs_once() -> None:
    class Twice(fsm.Machine):
        a = fsm.State(initial=True, on_exit=["on_exit_a"])
        b = fsm.State(final=True)
        go = a.to(b)

        def on_exit_a(self, event: Any) -> None: ...

    assert Twice.spec.find_state("a").on_exit == ("on_exit_a",)  # type: ignore[union-attr]


async def test_listeners_and_conventions_in_order(store: Store) -> None:
    klass, runtime_wide = Recorder("class"), Recorder("rt")
    Door.add_listener(klass)
    try:
        async with Runtime(store, [Door], own_store=False, listeners=[runtime_wide]) as rt:
            door = await rt.create(Door, "d-1")
            CALLS.clear()
            await door.open_it()  # type: ignore[attr-defined]
            assert CALLS == ["explicit before", "before_open_it", "on_exit_closed",
                             "on_enter_open", "after_open_it", "after_commit_open_it v2",
                             "on_enter_committed_open"]
            assert door.data == {"opened": 1}
            assert klass.calls == ["class before open_it in closed",
                                   "class after open_it in open", "class committed open_it v2"]
            assert runtime_wide.calls == [c.replace("class", "rt") for c in klass.calls]
            await door.close()  # type: ignore[attr-defined]
            with pytest.raises(fsm.TransitionNotAllowed):
                await door.lock()  # type: ignore[attr-defined]
            assert klass.calls[-1] == "class failed lock: TransitionNotAllowed"
            late = Recorder("late")
            rt.add_listener(late)
            await door.lock(payload={"key": True})  # type: ignore[attr-defined]
            assert late.calls == ["late before lock in closed", "late after lock in locked",
                                  "late committed lock v4"]
    finally:
        Door.remove_listener(klass)
    assert Door.listeners == () and not Door._tai_listeners


async def test_pre_commit_listener_failure_restores_and_post_commit_surfaces(
    store: Store,
) -> None:
    class Strict:
        def before_transition(self, instance: fsm.Machine, event: Any) -> None:
            instance.data["touched"] = True
            if event.event.name == "smash":
                raise RuntimeError("no smashing")

    class Noisy:
        def after_commit(self, instance: fsm.Machine, event: fsm.Event) -> None:
            raise RuntimeError("mail server down")

    async with Runtime(store, [Door], own_store=False, listeners=[Strict()]) as rt:
        door = await rt.create(Door, "d-2")
        with pytest.raises(RuntimeError, match="no smashing"):
            await door.smash()  # type: ignore[attr-defined]
        assert (door.state, door.version, door.data) == ("closed", 1, {})
        rt.add_listener(Noisy())
        with pytest.raises(fsm.PostCommitHookFailed) as info:
            await door.open_it()  # type: ignore[attr-defined]
        assert info.value.event.version == 2 and door.data["touched"] is True
        assert (await rt.get("d-2")).version == 2


async def test_class_level_listeners_attribute(store: Store) -> None:
    seen = Recorder("attr")

    class Bell(fsm.Machine):
        listeners = [seen]
        idle = fsm.State(initial=True)
        rung = fsm.State(final=True)
        ring = idle.to(rung)

    async with Runtime(store, [Bell], own_store=False) as rt:
        bell = await rt.create(Bell, "b-1")
        await bell.ring()  # type: ignore[attr-defined]
    assert seen.calls == ["attr before ring in idle", "attr after ring in rung",
                          "attr committed ring v2"]


async def test_listeners_and_conventions_on_nested_states(store: Store) -> None:
    seen = Recorder("n")

    class Deploy(fsm.Machine):
        idle = fsm.State(initial=True)
        rolling = fsm.State(children={"canary": fsm.State(initial=True), "full": fsm.State()})
        done = fsm.State(final=True)
        start = idle.to(rolling)
        promote = rolling["canary"].to(rolling["full"])
        finish = rolling.to(done)

        def on_enter_rolling__canary(self, event: Any) -> None:
            self.data["canary"] = True

    assert Deploy.spec.find_state("rolling.canary").on_enter == (  # type: ignore[union-attr]
        "on_enter_rolling__canary",)
    async with Runtime(store, [Deploy], own_store=False, listeners=[seen]) as rt:
        d = await rt.create(Deploy, "n-1")
        await d.start()  # type: ignore[attr-defined]
        await d.promote()  # type: ignore[attr-defined]
    assert d.data == {"canary": True}
    assert seen.calls == ["n before start in idle", "n after start in rolling.canary",
                          "n committed start v2", "n before promote in rolling.canary",
                          "n after promote in rolling.full", "n committed promote v3"]
