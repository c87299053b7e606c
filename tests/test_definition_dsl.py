"""The class DSL: declarations, decorators, data models, extension, errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

import tai_fsm.definition as fsm
from tai_fsm.definition import FieldSpec, StateSpec, TimeoutSpec, TransitionSpec
from tai_fsm.definition.dsl import fields_from_model
from tai_fsm.errors import DefinitionError


class Light(fsm.Machine):
    name = "light"
    version = 2
    snapshot_every = 7
    snapshot_retention = 2
    description = "a light"

    class Data(BaseModel):
        flips: int = 0

    off = fsm.State(initial=True, tags=["dark"])
    on = fsm.State(timeout=fsm.Timeout(90, "flip"), on_exit="leave_on")
    broken = fsm.State(final=True)

    flip = off.to(on, before=["count"]) | on.to(off, conditions=["count"])
    smash = fsm.Transition(source="*", dest=broken, after_commit=["report"])
    touch = on.to(None)

    @fsm.on_enter(on)
    def lit(self, event: Any) -> None: ...

    @fsm.on_enter_committed("on", "off")
    def announce(self, event: Any) -> None: ...

    @fsm.after_commit(flip)
    def flipped(self, event: Any) -> None: ...

    @fsm.before("smash")
    @staticmethod
    def brace(event: Any) -> None: ...

    def count(self, event: Any) -> bool:
        return True

    def leave_on(self, event: Any) -> None: ...

    def report(self, event: Any) -> None: ...


def test_spec_from_class() -> None:
    spec = Light.spec
    assert (spec.name, spec.version, spec.snapshot_every, spec.snapshot_retention) == (
        "light", 2, 7, 2,
    )  # fmt: skip
    assert spec.description == "a light"
    assert spec.initial == "off"
    assert spec.states == (
        StateSpec(name="off", tags=("dark",), on_enter_committed=("announce",)),
        StateSpec(
            name="on",
            timeout=TimeoutSpec(after=timedelta(seconds=90), trigger="flip"),
            on_exit=("leave_on",),
            on_enter=("lit",),
            on_enter_committed=("announce",),
        ),
        StateSpec(name="broken", final=True),
    )
    assert spec.transitions == (
        TransitionSpec(
            trigger="flip", source=("off",), dest="on", before=("count",),
            after_commit=("flipped",),
        ),
        TransitionSpec(
            trigger="flip", source=("on",), dest="off", conditions=("count",),
            after_commit=("flipped",),
        ),
        TransitionSpec(
            trigger="smash", source=("*",), dest="broken", before=("brace",),
            after_commit=("report",),
        ),
        TransitionSpec(trigger="touch", source=("on",), dest=None),
    )  # fmt: skip
    assert spec.data_fields == (FieldSpec(name="flips", type="integer", default=0),)
    assert Light.data_model is Light.Data
    assert fsm.check_callbacks(spec, Light) == []


def test_declarations_are_replaced_by_names() -> None:
    """DESIGN §4.8: nothing left on the class can change state; names stay usable."""
    assert Light.flip == "flip" and Light.smash == "smash" and Light.touch == "touch"
    assert Light.off == "off" and Light.on == "on"
    for setting in ("name", "version", "snapshot_every", "snapshot_retention", "description"):
        assert setting not in vars(Light)
    assert not callable(Light.__dict__["flip"])


def test_nested_states_and_string_paths() -> None:
    class Deploy(fsm.Machine):
        idle = fsm.State(initial=True)
        work = fsm.State(
            children={
                "canary": fsm.State(initial=True),
                "full": fsm.State(children={"a": fsm.State(initial=True), "b": fsm.State()}),
            }
        )
        done = fsm.State(final=True)

        start = idle.to(work)
        widen = work["canary"].to(work["full"])
        step = fsm.Transition(source="work.full.a", dest="work.full.b")
        finish = work.to(done)

    spec = Deploy.spec
    assert spec.name == "deploy"
    assert spec.state_names() == [
        "idle", "work", "work.canary", "work.full", "work.full.a", "work.full.b", "done",
    ]  # fmt: skip
    assert spec.find_state("work") is not None
    assert spec.find_state("work").initial == "canary"  # type: ignore[union-attr]
    assert spec.transitions[1].source == ("work.canary",)
    assert spec.transitions[1].dest == "work.full"
    assert Deploy.work == "work"


def test_data_model_mapping() -> None:
    class Payload(BaseModel):
        flag: bool = False
        count: int = 1
        ratio: float = 0.5
        label: str = Field("x", description="a label")
        items: list[int] = Field(default_factory=list)
        meta: dict[str, Any] = Field(default_factory=dict)
        maybe: str | None = None
        either: int | str = 0
        kind: Literal["a", "b"] = "a"
        needed: int
        anything: Any = None

    assert fields_from_model(Payload) == (
        FieldSpec(name="flag", type="boolean", default=False),
        FieldSpec(name="count", type="integer", default=1),
        FieldSpec(name="ratio", type="number", default=0.5),
        FieldSpec(name="label", type="string", default="x", description="a label"),
        FieldSpec(name="items", type="array", default=[]),
        FieldSpec(name="meta", type="object", default={}),
        FieldSpec(name="maybe", type="string"),
        FieldSpec(name="either", type="any", default=0),
        FieldSpec(name="kind", type="string", default="a"),
        FieldSpec(name="needed", type="integer", required=True),
        FieldSpec(name="anything", type="any"),
    )


def test_data_model_attribute() -> None:
    class Counter(BaseModel):
        n: int = 0

    class Tally(fsm.Machine):
        data_model = Counter
        counting = fsm.State(initial=True)
        stopped = fsm.State(final=True)
        stop = counting.to(stopped)

    assert Tally.data_model is Counter
    assert Tally.spec.data_fields == (FieldSpec(name="n", type="integer", default=0),)


def test_extending_a_yaml_machine(tmp_path: Path) -> None:
    path = tmp_path / "door.yaml"
    path.write_text(
        "name: door\ninitial: closed\nstates: [closed, open]\n"
        "transitions:\n"
        "  - {trigger: push, source: closed, dest: open}\n"
        "  - {trigger: pull, source: open, dest: closed}\n"
    )
    Base = fsm.load_machine(path)

    class Door(Base):  # type: ignore[valid-type, misc]
        def noop(self, event: Any) -> None: ...

    assert Door.spec is Base.spec  # behaviour only: the YAML spec is inherited unchanged

    class LoudDoor(Base):  # type: ignore[valid-type, misc]
        @fsm.on_enter("open")
        def creak(self, event: Any) -> None: ...

        @fsm.after_commit("push")
        def log_push(self, event: Any) -> None: ...

    assert LoudDoor.spec.find_state("open") == StateSpec(name="open", on_enter=("creak",))
    assert LoudDoor.spec.transitions[0].after_commit == ("log_push",)
    assert Base.spec.transitions[0].after_commit == ()  # the base is untouched
    assert fsm.check_callbacks(LoudDoor.spec, LoudDoor) == []

    class LockedDoor(Base):  # type: ignore[valid-type, misc]
        locked = fsm.State()
        lock = fsm.Transition(source="closed", dest=locked)
        unlock = locked.to("closed")

    assert LockedDoor.spec.state_names() == ["closed", "open", "locked"]
    assert LockedDoor.spec.triggers() == ["push", "pull", "lock", "unlock"]
    assert LockedDoor.spec.name == "door"


def _error(build: Any) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        build()
    return [p.message for p in info.value.problems]


def test_dsl_errors() -> None:
    def no_initial() -> None:
        class NoInitial(fsm.Machine):
            a = fsm.State()

    assert _error(no_initial) == ["NoInitial: no initial state; mark one State(initial=True)"]

    def two_initial() -> None:
        class TwoInitial(fsm.Machine):
            a = fsm.State(initial=True)
            b = fsm.State(initial=True)

    assert _error(two_initial) == ["TwoInitial: several initial states (a, b); mark exactly one"]

    foreign = fsm.State()

    def foreign_state() -> None:
        class Foreign(fsm.Machine):
            a = fsm.State(initial=True)
            go = a.to(foreign)

    assert _error(foreign_state) == [
        "Foreign: transition 'go' refers to a State that is not declared on this class; "
        "declare it as a class attribute or refer to it by name"
    ]

    def bad_hook() -> None:
        class BadHook(fsm.Machine):
            a = fsm.State(initial=True, final=True)

            @fsm.on_enter("nowhere")
            def f(self, event: Any) -> None: ...

    assert _error(bad_hook) == ["BadHook: @on_enter target 'nowhere' is not a state of this class"]

    def reserved() -> None:
        class Reserved(fsm.Machine):
            a = fsm.State(initial=True)
            b = fsm.State(final=True)
            trigger = a.to(b)

    assert _error(reserved) == [
        "trigger 'trigger' is reserved: it would shadow the Machine attribute 'trigger'; "
        "choose another name"
    ]

    def bad_setting() -> None:
        class BadSetting(fsm.Machine):
            version = "two"
            a = fsm.State(initial=True, final=True)

    assert _error(bad_setting) == [
        "BadSetting: invalid version: Input should be a valid integer, unable to parse string "
        "as an integer"
    ]

    with pytest.raises(DefinitionError, match="Timeout: invalid duration 'soon'"):
        fsm.Timeout("soon", "x")
    with pytest.raises(DefinitionError) as info:
        fsm.State(on_enter=fsm.State())  # type: ignore[arg-type]
    assert str(info.value).startswith(
        "callbacks must be a method name, a function, or a list of those; got <State"
    )
    with pytest.raises(DefinitionError, match="callback 3 must be a method name or a function"):
        fsm.State(on_exit=["ok", 3])  # type: ignore[list-item]


def test_functions_can_name_callbacks() -> None:
    def check(self: Any, event: Any) -> bool:
        return True

    assert fsm.State(on_enter=check).on_enter == ("check",)
    assert fsm.State().to("x", conditions=[check, "other"]).conditions == ("check", "other")


def test_dsl_errors_point_at_the_class() -> None:
    with pytest.raises(DefinitionError) as info:

        class Broken(fsm.Machine):
            a = fsm.State(initial=True)
            b = fsm.State()
            go = a.to(b)

    problem = info.value.problems[0]
    assert problem.file == __file__
    assert problem.line is not None and problem.line > 1
    assert problem.message == (
        "state 'b' is not final and has no transition out of it; add a transition or mark it final"
    )


def test_a_class_without_declarations_collects_nothing() -> None:
    class Mixin(fsm.Machine):
        def helper(self) -> int:
            return 1

    assert "spec" not in vars(Mixin)


def test_check_callbacks_messages() -> None:
    class Partial(fsm.Machine):
        a = fsm.State(initial=True, on_enter=["missing"])
        b = fsm.State(final=True)
        go = a.to(b, conditions=["flag"], after=["b"])
        flag = True  # not a method

    assert [p.message for p in fsm.check_callbacks(Partial.spec, Partial)] == [
        "callback 'missing' (on_enter of state 'a') is not defined on Partial; "
        "add a method `def missing(self, event): ...`",
        "callback 'flag' (conditions of transition 'go' (a -> b)) on Partial is a bool, "
        "not a method",
        "callback 'b' (after of transition 'go' (a -> b)) on Partial is a str, not a method",
    ]
