"""What is checked when a machine class is bound to a ``Runtime`` (``CompiledMachine``),
before any instance exists — so a class that would fail on its first trigger fails here:

* every callback name resolves to a method (:func:`~tai_fsm.definition.validate.
  check_callbacks`);
* every callback takes exactly one argument besides ``self``, the ``event``
  (``def has_items(self, event)``; a ``staticmethod`` takes just ``event``); a durable
  post-commit hook also the keyword ``idempotency_key`` (:mod:`.durable`);
* no method of the class shadows a trigger: ``instance.pay`` must stay the trigger method
  (:mod:`tai_fsm.definition.triggers`).
"""

from __future__ import annotations

import inspect

from tai_fsm.definition.durable import is_durable
from tai_fsm.definition.locations import SourceMap
from tai_fsm.definition.spec import MachineSpec
from tai_fsm.definition.triggers import Trigger
from tai_fsm.definition.validate import callback_references, check_callbacks
from tai_fsm.errors import DefinitionProblem

__all__ = ["check_class", "takes_one_argument"]


def takes_one_argument(cls: type, name: str) -> bool | None:
    """True if ``cls.<name>`` can be called as a callback, ``method(event)``; False if its
    signature refuses that; None when it cannot be told (not a plain function, a
    staticmethod or a classmethod, or no signature available)."""
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    if isinstance(raw, staticmethod | classmethod):
        args: tuple[None, ...] = (None,)
    elif inspect.isfunction(raw):
        args = (None, None)  # self, event
    else:
        return None
    try:
        signature = inspect.signature(getattr(cls, name))
    except (TypeError, ValueError):
        return None
    extra = {"idempotency_key": ""} if is_durable(cls, name) else {}  # durable hooks
    try:
        signature.bind(*args, **extra)
    except TypeError:
        return False
    return True


def check_class(spec: MachineSpec, cls: type) -> list[DefinitionProblem]:
    """Every problem binding ``spec`` to ``cls`` (see the module docstring)."""
    source = getattr(cls, "_tai_source_map", None)
    if not isinstance(source, SourceMap):
        source = SourceMap()
    problems = check_callbacks(spec, cls)
    seen: set[str] = set()
    for name, role, key in callback_references(spec):
        if name in seen or not inspect.isroutine(getattr(cls, name, None)):
            continue
        if takes_one_argument(cls, name) is False:
            seen.add(name)
            problems.append(source.problem(
                f"callback '{name}' ({role}) on {cls.__name__} must take one argument, the "
                f"event: `def {name}(self, event): ...`",
                key,
            ))
    first: dict[str, int] = {}
    for index, transition in enumerate(spec.transitions):
        first.setdefault(transition.trigger, index)
    for trigger, index in first.items():
        try:
            attr = inspect.getattr_static(cls, trigger)
        except AttributeError:
            continue  # a class built by hand: nothing shadows the trigger
        if not isinstance(attr, Trigger):
            problems.append(source.problem(
                f"{cls.__name__}.{trigger} ({type(attr).__name__}) shadows the trigger "
                f"'{trigger}': instance.{trigger}(...) fires the trigger; rename it",
                ("transition", index, "trigger"),
            ))
    return problems
