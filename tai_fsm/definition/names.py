"""The names a machine class carries for its definition: each trigger as a
:class:`~tai_fsm.definition.triggers.Trigger` (``Order.pay == "pay"``; ``await order.pay()``
on an instance) and each top-level state as its name (``Order.paid == "paid"``).

The class DSL sets them as it builds a class; :func:`install_names` sets them on a class
whose spec comes from a YAML file (``load_machine``, ``class Order(fsm.Machine,
yaml=...)``). A name the class already defines itself (a method, say) is left alone:
``check_class`` reports a method that shadows a trigger when the class is given to a
``Runtime``.
"""

from __future__ import annotations

from tai_fsm.definition.spec import MachineSpec
from tai_fsm.definition.triggers import Trigger

__all__ = ["install_names"]


def install_names(cls: type, spec: MachineSpec) -> None:
    """Set a ``Trigger`` for each trigger and the name of each top-level state on ``cls``
    (skipping names ``cls`` already has, own or inherited)."""
    for state in spec.states:
        if not hasattr(cls, state.name):
            setattr(cls, state.name, state.name)
    for trigger in spec.triggers():
        if not hasattr(cls, trigger):
            setattr(cls, trigger, Trigger(trigger))
