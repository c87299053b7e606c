"""Declarations of the class DSL: ``State``, ``Transition`` (``t1 | t2`` groups),
``Timeout`` and the hook decorators. They only *describe* a machine; the class they are
assigned on is compiled by :func:`tai_fsm.definition.dsl.collect_spec`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any, TypeVar, overload

from tai_fsm.definition.durable import durable as mark_durable
from tai_fsm.definition.durations import parse_duration
from tai_fsm.definition.spec import TimeoutSpec
from tai_fsm.definition.triggers import BoundTrigger, Trigger
from tai_fsm.errors import DefinitionError, InvalidInput

__all__ = [
    "HOOKS_ATTR",
    "State",
    "Timeout",
    "Transition",
    "TransitionGroup",
    "after",
    "after_commit",
    "before",
    "on_enter",
    "on_enter_committed",
    "on_exit",
]

Callback = str | Callable[..., Any]
Callbacks = Callback | Sequence[Callback]
F = TypeVar("F")

#: Attribute the hook decorators set on a method: a list of (kind, target) pairs.
HOOKS_ATTR = "__tai_hooks__"


def _caller() -> tuple[str, int] | None:
    """(file, line) of the code that declared a State or Transition (the first frame
    outside this module): DSL errors point at that line, not at the class statement."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None


def _names(value: Callbacks) -> tuple[str, ...]:
    if isinstance(value, str) or callable(value):
        items: Sequence[Callback] = [value]
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise DefinitionError(
            f"callbacks must be a method name, a function, or a list of those; got {value!r}"
        )
    names: list[str] = []
    for item in items:
        if isinstance(item, str):
            names.append(item)
        elif callable(item) and isinstance(getattr(item, "__name__", None), str):
            names.append(item.__name__)
        else:
            raise DefinitionError(f"callback {item!r} must be a method name or a function")
    return tuple(names)


class Timeout:
    """A state's durable timeout: after ``after`` in the state, fire ``trigger``."""

    def __init__(self, after: str | int | float | timedelta, trigger: str) -> None:
        try:
            self.after = parse_duration(after)
        except InvalidInput as exc:
            raise DefinitionError(f"Timeout: {exc}") from None
        self.trigger = trigger

    def spec(self) -> TimeoutSpec:
        return TimeoutSpec(after=self.after, trigger=self.trigger)


class State:
    """A state declaration. ``children`` (name -> State) makes it a compound state."""

    def __init__(
        self,
        *,
        initial: bool = False,
        final: bool = False,
        on_enter: Callbacks = (),
        on_exit: Callbacks = (),
        on_enter_committed: Callbacks = (),
        tags: Sequence[str] = (),
        timeout: Timeout | None = None,
        children: Mapping[str, State] | None = None,
        description: str = "",
        ignore_invalid_triggers: bool | None = None,
    ) -> None:
        self.initial = initial
        self.ignore_invalid_triggers = ignore_invalid_triggers
        self.final = final
        self.on_enter = _names(on_enter)
        self.on_exit = _names(on_exit)
        self.on_enter_committed = _names(on_enter_committed)
        self.tags = (tags,) if isinstance(tags, str) else tuple(tags)
        self.timeout = timeout
        self.children: dict[str, State] = dict(children or {})
        self.description = description
        #: Where it was declared, and its path once its class is built (``parent.child``).
        self.declared_at = _caller()
        self.path: str | None = None

    def __eq__(self, other: object) -> bool:
        """A State equals itself and, once its class is built, its path (``"paid"``)."""
        if isinstance(other, str):
            return self.path is not None and self.path == other
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __get__(self, instance: object, owner: type | None = None) -> str:
        """Typing: a built class holds the state's path, a ``str``
        (``order.state == Order.paid``); the class DSL replaces the State by it."""
        return self.path if self.path is not None else repr(self)

    def __getitem__(self, child: str) -> State:
        """The child state named ``child`` (for use as a transition source or dest)."""
        try:
            return self.children[child]
        except KeyError:
            raise DefinitionError(
                f"state has no child {child!r} (children: {', '.join(self.children) or 'none'})"
            ) from None

    def to(
        self,
        dest: State | str | None,
        *,
        conditions: Callbacks = (),
        unless: Callbacks = (),
        before: Callbacks = (),
        after: Callbacks = (),
        after_commit: Callbacks = (),
        description: str = "",
    ) -> Transition:
        """A transition from this state to ``dest`` (None: internal, state unchanged)."""
        return Transition(
            source=self,
            dest=dest,
            conditions=conditions,
            unless=unless,
            before=before,
            after=after,
            after_commit=after_commit,
            description=description,
        )

    def __repr__(self) -> str:
        return f"<State initial={self.initial} final={self.final} children={list(self.children)}>"


class Transition:
    """A transition declaration; the class attribute it is assigned to names its trigger.
    ``source`` is a state, a path, ``"*"`` (any state) or a list of those."""

    def __init__(
        self,
        source: State | str | Sequence[State | str],
        dest: State | str | None,
        *,
        conditions: Callbacks = (),
        unless: Callbacks = (),
        before: Callbacks = (),
        after: Callbacks = (),
        after_commit: Callbacks = (),
        description: str = "",
    ) -> None:
        self.source: tuple[State | str, ...] = (
            (source,) if isinstance(source, State | str) else tuple(source)
        )
        self.dest = dest
        self.conditions = _names(conditions)
        self.unless = _names(unless)
        self.before = _names(before)
        self.after = _names(after)
        self.after_commit = _names(after_commit)
        self.description = description
        #: Where it was declared, and its trigger once its class is built.
        self.declared_at = _caller()
        self.name: str | None = None

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Trigger: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> BoundTrigger: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """Typing: a built class holds a :class:`Trigger` — the trigger's name on the class
        (``order.trigger(Order.pay)``), a method on an instance (``await order.pay()``)."""
        trigger = Trigger(self.name or "")
        return trigger if instance is None else trigger.__get__(instance, owner)

    def __or__(self, other: Transition | TransitionGroup) -> TransitionGroup:
        return TransitionGroup(self) | other


class TransitionGroup:
    """Several transitions under one trigger, tried in order (``t1 | t2``)."""

    def __init__(self, *transitions: Transition) -> None:
        self.transitions = transitions
        self.name: str | None = None

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Trigger: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> BoundTrigger: ...
    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """Typing: see :meth:`Transition.__get__`."""
        trigger = Trigger(self.name or "")
        return trigger if instance is None else trigger.__get__(instance, owner)

    def __or__(self, other: Transition | TransitionGroup) -> TransitionGroup:
        extra = other.transitions if isinstance(other, TransitionGroup) else (other,)
        return TransitionGroup(*self.transitions, *extra)


def _hook(kind: str, targets: tuple[object, ...]) -> Callable[[F], F]:
    if not targets:
        raise DefinitionError(f"@{kind}(...) needs at least one state or trigger")

    def mark(func: F) -> F:
        hooks = list(getattr(func, HOOKS_ATTR, ()))
        hooks.extend((kind, target) for target in targets)
        setattr(func, HOOKS_ATTR, hooks)
        return func

    return mark


def on_enter(*states: State | str) -> Callable[[F], F]:
    """Decorate a method to run when any of ``states`` is entered (pre-commit)."""
    return _hook("on_enter", states)


def on_exit(*states: State | str) -> Callable[[F], F]:
    """Decorate a method to run when any of ``states`` is left (pre-commit)."""
    return _hook("on_exit", states)


def on_enter_committed(*states: State | str, durable: bool = False) -> Callable[[F], F]:
    """Decorate a post-commit hook run after entering any of ``states`` has committed.
    ``durable=True``: run at least once, even across crashes (:mod:`.durable`)."""
    return _durable(_hook("on_enter_committed", states), durable)


def before(*triggers: Transition | TransitionGroup | str) -> Callable[[F], F]:
    """Decorate a method to run before the transitions of ``triggers`` (pre-commit)."""
    return _hook("before", triggers)


def after(*triggers: Transition | TransitionGroup | str) -> Callable[[F], F]:
    """Decorate a method to run after the transitions of ``triggers`` (pre-commit)."""
    return _hook("after", triggers)


def after_commit(
    *triggers: Transition | TransitionGroup | str, durable: bool = False
) -> Callable[[F], F]:
    """Decorate a post-commit hook run after a transition of ``triggers`` has committed.
    ``durable=True``: run at least once, even across crashes (:mod:`.durable`)."""
    return _durable(_hook("after_commit", triggers), durable)


def _durable(mark: Callable[[F], F], durable: bool) -> Callable[[F], F]:
    if not durable:
        return mark

    def both(func: F) -> F:
        marked = mark(func)
        mark_durable(marked)  # type: ignore[type-var]  # F is any decorated function
        return marked

    return both
