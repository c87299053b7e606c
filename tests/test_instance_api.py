"""Issue 13, instance API: trigger methods, guards that see the payload, typing of the DSL
idioms, and what is checked when a class is bound to a Runtime. Runtime tests run on every
backend through the ``store`` fixture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tai_fsm as fsm
from tai_fsm.definition.triggers import BoundTrigger, Trigger
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store

ROOT = Path(__file__).resolve().parent.parent

PAY = fsm.Transition(source="pending", dest="paid", conditions=["enough"])


class Shop(fsm.Machine):
    pending = fsm.State(initial=True)
    paid = fsm.State(on_enter=["auto_ship"])
    shipped = fsm.State(final=True)
    cancelled = fsm.State(final=True)

    pay = PAY
    ship = paid.to(shipped)
    cancel = fsm.Transition(source=[pending, paid], dest=cancelled, unless=["locked"])

    def enough(self, event: Any) -> bool:
        self.data["probed"] = True  # a condition that mutates: must never leak
        return bool(event.payload["amount"] >= self.data["price"])

    def locked(self, event: Any) -> bool:
        return bool(event.payload.get("lock", False))

    def auto_ship(self, event: Any) -> None:
        if event.payload.get("ship_now"):
            self.ship(reason="auto")  # a trigger method from a callback: queued


@pytest.fixture
async def rt(store: Store) -> Any:
    async with Runtime(store, [Shop], own_store=False) as runtime:
        yield runtime


def test_class_attributes_are_names_and_triggers_are_methods() -> None:
    assert Shop.pay == "pay" and isinstance(Shop.pay, Trigger) and isinstance(Shop.pay, str)
    assert Shop.paid == "paid" and type(Shop.paid) is str
    assert PAY.name == "pay"
    assert Shop.spec.triggers() == ["pay", "ship", "cancel"]


async def test_trigger_method_commits_like_trigger(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-1", data={"price": 5})
    assert isinstance(shop.pay, BoundTrigger)  # type: ignore[attr-defined]
    assert "pay" not in vars(shop)             # nothing bound onto the instance
    event = await shop.pay(actor="alice", payload={"amount": 7})  # type: ignore[attr-defined]
    assert (event.action, event.version, event.metadata.changed_by) == ("pay", 2, "alice")
    assert (shop.state, shop.version) == ("paid", 2)
    assert shop.data == {"price": 5, "probed": True}  # a real trigger keeps what it did
    again = await rt.get("s-1")
    assert (again.state, again.version) == ("paid", 2)
    history = [(e.action, e.payload) async for e in rt.history("s-1")]
    assert history == [("@create", {}), ("pay", {"amount": 7})]


async def test_trigger_method_refused_like_trigger(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-2", data={"price": 5})
    with pytest.raises(fsm.TransitionNotAllowed) as info:
        await shop.pay(payload={"amount": 1})  # type: ignore[attr-defined]
    assert info.value.condition == "enough"
    with pytest.raises(fsm.InvalidInput):
        await shop.pay(payload={"amount": float("nan")})  # type: ignore[attr-defined]
    assert (shop.state, shop.version, shop.data) == ("pending", 1, {"price": 5})


async def test_trigger_method_from_a_callback_is_queued(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-3", data={"price": 1})
    event = await shop.trigger(PAY, payload={"amount": 1, "ship_now": True})  # a declaration
    assert (event.version, shop.state, shop.version) == (2, "shipped", 3)


async def test_trigger_accepts_the_class_attribute(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-4", data={"price": 1})
    await shop.trigger(Shop.pay, payload={"amount": 1})
    assert shop.state == Shop.paid


async def test_read_only_views_have_trigger_methods_that_refuse(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-5", data={"price": 1})
    past = await rt.state_at("s-5", version=1)
    with pytest.raises(fsm.TaiFsmError, match="read-only view"):
        await past.pay(payload={"amount": 1})  # type: ignore[attr-defined]
    assert shop.version == 1


async def test_may_trigger_sees_the_payload_and_changes_nothing(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-6", data={"price": 5})
    assert shop.may_trigger("pay", payload={"amount": 5})
    assert not shop.may_trigger(Shop.pay, payload={"amount": 4})
    assert shop.pay.may(payload={"amount": 9})  # type: ignore[attr-defined]
    assert not shop.may_trigger("ship", payload={"amount": 9})    # no transition from here
    assert not shop.may_trigger("nope")
    with pytest.raises(KeyError):                                  # the condition's own error
        shop.may_trigger("pay")
    with pytest.raises(fsm.InvalidInput):
        shop.may_trigger("pay", payload={"amount": {1, 2}})        # type: ignore[dict-item]
    assert (shop.state, shop.version, shop.data) == ("pending", 1, {"price": 5})


async def test_allowed_triggers_evaluates_conditions(rt: Runtime) -> None:
    shop = await rt.create(Shop, "s-7", data={"price": 5})
    assert shop.available_triggers == ["pay", "cancel"]
    assert shop.allowed_triggers(payload={"amount": 5}) == ["pay", "cancel"]
    assert shop.allowed_triggers(payload={"amount": 1, "lock": True}) == []
    assert shop.data == {"price": 5}
    await shop.cancel()  # type: ignore[attr-defined]
    assert shop.allowed_triggers() == [] and shop.available_triggers == []


def test_yaml_machines_get_trigger_methods_too() -> None:
    Order = fsm.load_machine(ROOT / "machines/order.yaml")
    assert Order.pay == "pay" and isinstance(Order.pay, Trigger)  # type: ignore[attr-defined]
    assert Order.paid == "paid"  # type: ignore[attr-defined]

    class Typed(fsm.Machine, yaml=ROOT / "machines/order.yaml"):
        refunded = fsm.State(final=True)
        refund = fsm.Transition(source="paid", dest=refunded)

    assert Typed.spec.triggers() == [*Order.spec.triggers(), "refund"]
    assert Typed.source_file == str(ROOT / "machines/order.yaml")
    assert Typed.ship == "ship" and Typed.refund == "refund"  # type: ignore[attr-defined]


def test_a_method_shadowing_a_trigger_is_refused_when_bound() -> None:
    class Shadow(fsm.Machine, yaml=ROOT / "machines/order.yaml"):
        def has_items(self, event: Any) -> bool:
            return True

        def stamp_paid_at(self, event: Any) -> None: ...
        def send_receipt(self, event: Any) -> None: ...
        def notify_courier(self, event: Any) -> None: ...

        def ship(self) -> None: ...

    with pytest.raises(fsm.DefinitionError) as info:
        Runtime(fsm.open_store("memory://"), [Shadow])
    assert [p.message for p in info.value.problems] == [
        "Shadow.ship (function) shadows the trigger 'ship': instance.ship(...) fires the "
        "trigger; rename it"
    ]


def test_a_callback_without_its_event_parameter_is_refused_when_bound() -> None:
    class Bad(fsm.Machine):
        a = fsm.State(initial=True)
        b = fsm.State(final=True)
        go = a.to(b, conditions=["ready"], after_commit=["tell"])

        def ready(self) -> bool:
            return True

        @staticmethod
        def tell(event: Any) -> None: ...  # fine: a staticmethod takes just the event

    with pytest.raises(fsm.DefinitionError) as info:
        Runtime(fsm.open_store("memory://"), [Bad])
    assert [p.message for p in info.value.problems] == [
        "callback 'ready' (conditions of transition 'go' (a -> b)) on Bad must take one "
        "argument, the event: `def ready(self, event): ...`"
    ]


def test_no_import_cycle_in_the_definition_layer() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_import_cycles import cycles

    assert not [c for c in cycles() if any(m.startswith("tai_fsm.definition") for m in c)]


def test_reserved_names_match_the_machine_api() -> None:
    public = {n for n in dir(fsm.Machine) if not n.startswith("_")}
    assert public <= fsm.RESERVED_ATTRIBUTES if hasattr(fsm, "RESERVED_ATTRIBUTES") else True
    from tai_fsm.definition import RESERVED_ATTRIBUTES

    assert public <= RESERVED_ATTRIBUTES, public - RESERVED_ATTRIBUTES


def test_dsl_idioms_type_check_under_mypy_strict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--strict",
         "--cache-dir", str(tmp_path / "mypy-cache"), "tests/typing_check.py"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- data checked everywhere
LEDGER = """\
name: ledger
initial: open
data:
  items: {type: integer, default: 0}
  note: string
states:
  - open
  - {name: closed, final: true}
transitions:
  - {trigger: add, source: open, dest: null, before: [write]}
  - {trigger: close, source: open, dest: closed}
"""


class _Ledger:
    @staticmethod
    def build(tmp_path: Path) -> type[fsm.Machine]:
        path = tmp_path / "ledger.yaml"
        path.write_text(LEDGER)

        class Ledger(fsm.Machine, yaml=path):
            def write(self, event: Any) -> None:
                self.data.update(event.payload)

        return Ledger


async def test_undeclared_fields_and_nulls_are_refused_at_create(
    store: Store, tmp_path: Path
) -> None:
    Ledger = _Ledger.build(tmp_path)
    async with Runtime(store, [Ledger], own_store=False) as rt:
        with pytest.raises(fsm.InvalidInput) as info:
            await rt.create(Ledger, "l-1", data={"itmes": 2})
        assert str(info.value) == (
            "ledger data: undeclared field 'itmes'; did you mean 'items'?")
        with pytest.raises(fsm.InvalidInput, match="field 'items' must not be null"):
            await rt.create(Ledger, "l-1", data={"items": None})
        assert not await store.exists("default", "l-1")
        ledger = await rt.create(Ledger, "l-1", data={"note": None})  # no default: null ok
        assert ledger.data == {"items": 0, "note": None}


async def test_undeclared_fields_and_nulls_are_refused_after_callbacks(
    store: Store, tmp_path: Path
) -> None:
    Ledger = _Ledger.build(tmp_path)
    async with Runtime(store, [Ledger], own_store=False) as rt:
        ledger = await rt.create(Ledger, "l-2")
        await ledger.add(payload={"items": 3})  # type: ignore[attr-defined]
        for bad, message in (({"bogus": 1}, "undeclared field 'bogus'"),
                             ({"items": None}, "field 'items' must not be null"),
                             ({"items": "3"}, "field 'items' must be integer, got str")):
            with pytest.raises(fsm.SerializationError, match=message):
                await ledger.add(payload=bad)  # type: ignore[attr-defined]
            assert (ledger.version, ledger.data) == (2, {"items": 3})
        assert (await rt.get("l-2")).version == 2


@pytest.mark.parametrize("name", ["version", "data", "id", "state", "trigger", "governor"])
def test_reserved_names_are_refused_as_states_and_triggers(name: str, tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"name: m\ninitial: a\nstates: [a, {name}, {{name: z, final: true}}]\n"
                    f"transitions:\n  - {{trigger: go, source: a, dest: {name}}}\n"
                    f"  - {{trigger: {name}_x, source: {name}, dest: z}}\n"
                    f"  - {{trigger: {name}, source: a, dest: z}}\n")
    with pytest.raises(fsm.DefinitionError) as info:
        fsm.load_machine(path)
    messages = [p.message for p in info.value.problems]
    assert f"state name '{name}' is reserved: it would shadow the Machine attribute " \
        f"'{name}'; choose another name" in messages
    assert f"trigger '{name}' is reserved: it would shadow the Machine attribute " \
        f"'{name}'; choose another name" in messages


def test_dsl_settings_are_reserved_for_states_and_triggers() -> None:
    with pytest.raises(fsm.DefinitionError) as info:
        class Bad(fsm.Machine):
            a = fsm.State(initial=True)
            version = fsm.State(final=True)
            description = a.to(version)
    assert [p.message for p in info.value.problems] == [
        "Bad: state 'version' is reserved: 'version' is a machine setting in the class DSL; "
        "choose another name",
        "Bad: trigger 'description' is reserved: 'description' is a machine setting in the "
        "class DSL; choose another name",
    ]


def test_dsl_errors_point_at_the_declaring_line() -> None:
    with pytest.raises(fsm.DefinitionError) as info:
        class Lines(fsm.Machine):
            a = fsm.State(initial=True)
            b = fsm.State()
            done = fsm.State(final=True)
            go = a.to(b)
            end = b.to(done)
            finish = fsm.Transition(source=b, dest="nowhere")
    here = Path(__file__).read_text().splitlines()
    (problem,) = info.value.problems
    assert problem.file == __file__ and problem.message.startswith(
        "transition 'finish' (b -> nowhere): dest state 'nowhere' does not exist")
    assert problem.line is not None
    assert here[problem.line - 1].strip().startswith("finish = fsm.Transition(")
    assert problem.column == here[problem.line - 1].index("finish") + 1


def test_the_blocking_facade_has_trigger_methods_and_guards(tmp_path: Path) -> None:
    from tai_fsm import sync

    store = sync.open_store(f"sqlite:///{tmp_path / 'sync.db'}")
    with sync.Runtime(store, [Shop]) as rt:
        shop = rt.create("shop", "s-9", data={"price": 2})
        assert shop.may_trigger("pay", payload={"amount": 2})
        assert shop.allowed_triggers(payload={"amount": 1}) == ["cancel"]
        event = shop.pay(actor="script", payload={"amount": 2})
        assert (event.action, event.version, shop.state) == ("pay", 2, "paid")
        with pytest.raises(AttributeError):
            shop.pai  # noqa: B018 - a typo is an AttributeError, not a trigger
