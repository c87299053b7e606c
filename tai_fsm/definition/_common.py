"""Small helpers shared by the definition readers (YAML and class DSL)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tai_fsm.definition.spec import TransitionSpec

__all__ = [
    "STATE_CALLBACKS",
    "TRANSITION_CALLBACKS",
    "camel_case",
    "snake_case",
    "trigger_order",
]

#: Callback lists of a state, in the order they are reported.
STATE_CALLBACKS: tuple[str, ...] = ("on_enter", "on_exit", "on_enter_committed")
#: Callback lists of a transition, in the order they are reported.
TRANSITION_CALLBACKS: tuple[str, ...] = (
    "conditions",
    "unless",
    "before",
    "after",
    "after_commit",
)


def trigger_order(transitions: Sequence[TransitionSpec]) -> list[int]:
    """Indices of ``transitions`` grouped by trigger (triggers in order of first appearance),
    keeping the declaration order inside each trigger.

    Both readers store transitions in this order: only the relative order of transitions
    sharing a trigger has meaning (the first whose conditions pass wins), so a YAML file that
    interleaves triggers and a class that groups them compile to equal specs."""
    first_seen: dict[str, int] = {}
    for index, transition in enumerate(transitions):
        first_seen.setdefault(transition.trigger, index)
    return sorted(range(len(transitions)), key=lambda i: (first_seen[transitions[i].trigger], i))


def snake_case(name: str) -> str:
    """``BatchJob`` -> ``batch_job``; ``HTTPCheck`` -> ``http_check``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return spaced.lower()


def camel_case(name: str) -> str:
    """``batch_job`` / ``batch-job`` -> ``BatchJob`` (a valid class name; ``Machine`` if
    nothing usable is left)."""
    words = [w for w in re.split(r"[^0-9A-Za-z]+", name) if w]
    result = "".join(w[:1].upper() + w[1:] for w in words)
    if not result or not result[0].isalpha():
        result = "Machine" + result
    return result
