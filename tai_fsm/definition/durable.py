"""Durable post-commit hooks: ``@fsm.durable`` marks an ``after_commit`` /
``on_enter_committed`` hook whose run must survive a crash.

A plain post-commit hook runs at most once: in the process that committed, right after the
commit — if that process dies in between, the hook never runs. A durable hook is recorded as
a pending *effect* in the same atomic commit as its event (:mod:`tai_fsm.runtime.effects`);
it still runs right after the commit in the committing process, and a worker
(:mod:`tai_fsm.worker`) runs every effect left pending (its process died, or the hook
raised) — so it runs **at least once**, each time with the same ``idempotency_key``, which
the hook passes on to the outside world (a payment API's idempotency key, a message id)
so that a repeat has no further effect.

A durable hook takes the key as a keyword argument::

    class Order(fsm.load_machine("machines/order.yaml")):
        @fsm.durable
        async def notify_courier(self, event, *, idempotency_key: str) -> None:
            await courier_api.post(..., headers={"Idempotency-Key": idempotency_key})

In the class DSL, ``@fsm.after_commit("ship", durable=True)`` does the same. The YAML file
names the hook as usual (``after_commit: [notify_courier]``); durability is a property of
the method that the subclass provides.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from tai_fsm.errors import DefinitionError

__all__ = ["DURABLE_ATTR", "durable", "is_durable"]

F = TypeVar("F", bound=Callable[..., Any])

#: Set to True on a function marked durable.
DURABLE_ATTR = "_tai_durable"


def _check_signature(func: Callable[..., Any]) -> None:
    try:
        parameters = inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin or C function: trust it
        return
    if "idempotency_key" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    ):
        return
    raise DefinitionError(
        f"durable hook {getattr(func, '__qualname__', func)!r} must accept the keyword "
        "argument 'idempotency_key' (def hook(self, event, *, idempotency_key): ...)"
    )


def durable(func: F) -> F:
    """Mark a post-commit hook durable (see the module docstring). It must accept the
    keyword argument ``idempotency_key``."""
    if not callable(func):
        raise DefinitionError(f"@durable decorates a method, got {type(func).__name__}")
    _check_signature(func)
    setattr(func, DURABLE_ATTR, True)
    return func


def is_durable(machine_cls: type, hook_name: str) -> bool:
    """True when ``machine_cls``'s hook ``hook_name`` is marked durable."""
    return bool(getattr(getattr(machine_cls, hook_name, None), DURABLE_ATTR, False))
