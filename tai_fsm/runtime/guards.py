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
from tai_fsm.runtime import arguments

__all__ = ["may_fire", "probe"]


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
