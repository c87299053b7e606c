"""Running the post-commit side of listeners (:mod:`tai_fsm.definition.listeners`):
``after_commit(instance, event)`` after a transition committed (its errors are collected
like post-commit hooks' and surface as ``PostCommitHookFailed``), and
``on_exception(instance, trigger, error)`` when a trigger failed and nothing was committed
(an error a listener raises there is logged; the original error propagates)."""

from __future__ import annotations

import inspect
import logging

from tai_fsm.definition.machine import Machine
from tai_fsm.engine.adapter import CompiledMachine
from tai_fsm.records import Event

__all__ = ["after_commit", "on_exception"]

log = logging.getLogger("tai_fsm.runtime")


async def after_commit(
    compiled: CompiledMachine, instance: Machine, event: Event
) -> list[BaseException]:
    """Call every listener's ``after_commit``; return what they raised."""
    errors: list[BaseException] = []
    for listener in compiled.active_listeners():
        method = getattr(listener, "after_commit", None)
        if method is None:
            continue
        try:
            result = method(instance, event)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # never undoes the committed event
            log.error("after_commit listener %r of %s %r v%d failed: %r",
                      listener, compiled.spec.name, instance.id, event.version, exc)
            errors.append(exc)
    return errors


def on_exception(
    compiled: CompiledMachine, instance: Machine, trigger: str, error: BaseException
) -> None:
    """Tell every listener's ``on_exception`` that ``trigger`` failed with ``error``."""
    for listener in compiled.active_listeners():
        method = getattr(listener, "on_exception", None)
        if method is None:
            continue
        try:
            method(instance, trigger, error)
        except Exception as exc:
            log.error("on_exception listener %r of %s %r failed: %r",
                      listener, compiled.spec.name, instance.id, exc)
