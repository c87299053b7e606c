"""Machine-wide listeners and naming-convention callbacks.

**Listeners** observe every transition of a machine (``Order.add_listener(obj)``, or a
class attribute ``listeners = [obj, ...]``) or of every machine of a runtime
(``Runtime(..., listeners=[obj])``, ``rt.add_listener(obj)``) — what ``transitions`` calls
``before_state_change`` / ``after_state_change`` / ``on_exception`` and python-statemachine
``add_listener``. A listener is any object; each of these methods is optional:

=====================================  ==============  ===================================
method                                 when            ``event``
=====================================  ==============  ===================================
``before_transition(instance, event)`` pre-commit      ``transitions``' EventData; after
                                                       the conditions passed, before the
                                                       transition's ``before``
``after_transition(instance, event)``  pre-commit      EventData; after the transition's
                                                       ``after``
``after_commit(instance, event)``      post-commit     the committed ``fsm.Event``; may be
                                                       ``async``
``on_exception(instance, trigger,``    nothing         the exception; it still propagates
``error)``                             committed
=====================================  ==============  ===================================

Pre-commit listeners follow the rules of pre-commit callbacks (DESIGN.md §4.1): they may
read and change ``instance.data`` but must not touch the outside world — the transition
can still fail. Side effects go in ``after_commit``; one that raises does not undo the
event (``PostCommitHookFailed``, like a post-commit hook). Order: class listeners (base
classes first), then runtime listeners, each in the order added.

**Naming conventions**, as in ``transitions``: a method of the machine class named

* ``on_enter_<state>`` / ``on_exit_<state>`` — pre-commit, like ``on_enter``/``on_exit``;
* ``before_<trigger>`` / ``after_<trigger>`` — pre-commit, like ``before``/``after``;
* ``on_enter_committed_<state>`` / ``after_commit_<trigger>`` — **post-commit** hooks;

is added to that state's or trigger's callbacks when the class is built (after the names
listed explicitly; never twice). A nested state's path uses ``__`` for ``.``
(``on_enter_deploying__canary``). Only names of existing states and triggers count: any
other method is left alone. :func:`convention_callbacks` lists what a class picked up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tai_fsm.definition.spec import NESTED_SEPARATOR

__all__ = [
    "CONVENTION_PREFIXES",
    "LISTENER_METHODS",
    "add_class_listener",
    "class_listeners",
    "convention_callbacks",
    "convention_hooks",
    "generation",
    "remove_class_listener",
]

#: Method-name prefix -> callback kind, longest first (``after_commit_`` before ``after_``).
CONVENTION_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("on_enter_committed_", "on_enter_committed", "state"),
    ("after_commit_", "after_commit", "trigger"),
    ("on_enter_", "on_enter", "state"),
    ("on_exit_", "on_exit", "state"),
    ("before_", "before", "trigger"),
    ("after_", "after", "trigger"),
)

LISTENER_METHODS = ("before_transition", "after_transition", "after_commit", "on_exception")

_OWN_ATTR = "_tai_listeners"


def convention_hooks(
    names: Iterable[str], states: Iterable[str], triggers: Iterable[str]
) -> list[tuple[str, str, str]]:
    """``(method, kind, target)`` for each of ``names`` that follows a naming convention
    for one of ``states`` (paths) or ``triggers``."""
    state_set = {path.replace(NESTED_SEPARATOR, "__"): path for path in states}
    trigger_set = set(triggers)
    found: list[tuple[str, str, str]] = []
    for name in names:
        for prefix, kind, what in CONVENTION_PREFIXES:
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if what == "state" and rest in state_set:
                found.append((name, kind, state_set[rest]))
                break
            if what == "trigger" and rest in trigger_set:
                found.append((name, kind, rest))
                break
    return found


def convention_callbacks(cls: type) -> list[tuple[str, str, str]]:
    """The naming-convention callbacks ``cls`` has (own or inherited):
    ``(method, kind, state path or trigger)``, e.g. ``("on_enter_paid", "on_enter",
    "paid")``; post-commit kinds are ``on_enter_committed`` and ``after_commit``."""
    spec = getattr(cls, "spec", None)
    if spec is None:
        return []
    names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n, None))]
    return convention_hooks(names, spec.state_names(), spec.triggers())


def class_listeners(cls: type) -> list[Any]:
    """The listeners of machine class ``cls``: each class's ``listeners`` attribute and
    ``add_listener`` additions, base classes first."""
    found: list[Any] = []
    for klass in reversed(cls.__mro__):
        declared = vars(klass).get("listeners")
        if isinstance(declared, list | tuple):
            found.extend(declared)
        found.extend(vars(klass).get(_OWN_ATTR, ()))
    return found


_GENERATION = [0]


def generation() -> int:
    """Bumped by every ``add_listener`` / ``remove_listener`` on a class: the engine keeps
    each class's listener list until it changes (the ``listeners`` class attribute is read
    then too — change listeners at run time with ``add_listener``)."""
    return _GENERATION[0]


def add_class_listener(cls: type, listener: object) -> None:
    own = vars(cls).get(_OWN_ATTR)
    if own is None:
        own = []
        setattr(cls, _OWN_ATTR, own)
    own.append(listener)
    _GENERATION[0] += 1


def remove_class_listener(cls: type, listener: object) -> None:
    own = vars(cls).get(_OWN_ATTR)
    if own is None or listener not in own:
        raise ValueError(f"{listener!r} is not a listener added to {cls.__name__}")
    own.remove(listener)
    _GENERATION[0] += 1
