"""Guards evaluated without firing: ``may_trigger(name, payload=...)`` and
``allowed_triggers(payload=...)``.

Conditions run exactly as in a real trigger — same order, ``event.payload`` is the payload
given (``{}`` when none), ``self`` reads like the instance — but on a *probe*: a detached
copy of the instance (state and a deep copy of ``data``) that is not bound to the runtime.
Whatever a condition does to ``self.data`` stays on the probe, the instance is untouched,
and a condition that tries ``self.trigger(...)`` gets an error (conditions must be pure,
DESIGN.md §4.1). The payload goes through the same argument check as a trigger's.
"""

from __future__ import annotations

import copy

from tai_fsm.definition.machine import Machine
from tai_fsm.engine.adapter import CompiledMachine
from tai_fsm.errors import StateNotFound, TransitionNotAllowed
from tai_fsm.records import Event
from tai_fsm.runtime import arguments
from tai_fsm.stores.base import Store

__all__ = ["head_event", "ignored", "may_fire", "probe"]


def probe(instance: Machine) -> Machine:
    """A detached copy of ``instance`` to evaluate conditions on (no runtime binding)."""
    return type(instance)._tai_new(
        id=instance.id,
        governor=instance.governor,
        state=instance.state,
        version=instance.version,
        data=copy.deepcopy(instance.data),
        binding=None,
    )


def may_fire(
    compiled: CompiledMachine, instance: Machine, name: object, payload: object
) -> bool:
    """True if trigger ``name`` could fire now on ``instance`` with ``payload``."""
    trigger = arguments.name(name)
    _, fresh = arguments.json_object(payload, "payload")
    return compiled.may_fire(probe(instance), trigger, fresh)


def ignored(
    compiled: CompiledMachine, instance: Machine, trigger: str, error: TransitionNotAllowed
) -> bool:
    """True when ``error`` refused a known ``trigger`` only because no transition leaves the
    instance's state, and that state (or the machine) has ``ignore_invalid_triggers``.
    A failed condition, and an unknown trigger name, are never ignored."""
    spec = compiled.spec
    return (
        error.condition is None
        and trigger in compiled.known_triggers
        and spec.ignores_invalid_triggers(instance.state)
    )


async def head_event(store: Store, instance: Machine, version: int) -> Event:
    """The event at ``version`` of ``instance`` (what an ignored trigger returns: the event
    the instance is at; nothing new was committed)."""
    async for event in store.read_events(
        instance.governor, instance.id, after_version=version - 1, batch_size=1
    ):
        return event
    raise StateNotFound(instance.governor, instance.id, "event")
