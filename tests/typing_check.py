"""Type-checked, not run: the DSL idioms must pass ``mypy --strict`` with no ``# type:
ignore`` (tests/test_instance_api.py runs mypy on this file, with the project's mypy
configuration, which enables ``tai_fsm.mypy_plugin``)."""

from __future__ import annotations

from typing import Any

import tai_fsm as fsm


class Order(fsm.Machine):
    pending = fsm.State(initial=True)
    paid = fsm.State()
    shipped = fsm.State(final=True)

    pay = pending.to(paid, conditions=["has_items"])
    ship = paid.to(shipped)

    def has_items(self, event: Any) -> bool:
        return bool(event.payload.get("items", 0))


class FromYaml(fsm.Machine, yaml="machines/order.yaml"):  # a YAML machine, subclassed
    def has_items(self, event: Any) -> bool:
        return bool(self.data["items"])


Loaded = fsm.load_machine("machines/order.yaml")  # a class for mypy (tai_fsm.mypy_plugin)


class FromLoaded(Loaded):
    def has_items(self, event: Any) -> bool:
        return bool(self.data["items"])


async def use(order: Order, from_yaml: FromYaml, loaded: FromLoaded) -> None:
    event: fsm.Event = await order.pay(actor="alice", payload={"items": 1})
    await order.trigger(Order.pay)                  # the declaration's name on the class
    await order.trigger("ship", reason="courier")
    now_paid: bool = order.state == Order.paid      # a state compares to its path
    name: str = Order.paid
    trigger_name: str = Order.pay
    ok: bool = order.may_trigger(Order.ship, payload={"items": 2}) and order.pay.may()
    allowed: list[str] = order.allowed_triggers(payload={"items": 1})
    await from_yaml.trigger("pay", payload={"at": "now"})
    await loaded.trigger("pay", payload={"at": "now"})
    print(event.version, now_paid, name, trigger_name, ok, allowed)
