"""Trigger methods: ``await order.pay(actor=..., payload=...)``.

A machine class holds one :class:`Trigger` per trigger name (set by the class DSL and by
``load_machine``). On the class it is just the name — a ``str``, so ``Order.pay == "pay"``
and ``order.trigger(Order.pay)`` work. Read from an instance it is a :class:`BoundTrigger`,
whose call is exactly ``instance.trigger(name, ...)``: the same argument checks, the same
commit path, the same queueing when called from a callback. Nothing else is bound onto
instances, so no attribute of an instance can change state without committing
(DESIGN.md §4.8): a ``Trigger`` holds no state and writes nothing itself.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, cast, overload

if TYPE_CHECKING:
    from tai_fsm.records import Event

__all__ = ["BoundTrigger", "Trigger"]


class _Fires(Protocol):
    def trigger(
        self,
        name: str,
        *,
        actor: str | None = ...,
        reason: str | None = ...,
        context: dict[str, Any] | None = ...,
        payload: dict[str, Any] | None = ...,
    ) -> Awaitable[Event]: ...

    def may_trigger(self, name: str, *, payload: dict[str, Any] | None = ...) -> bool: ...


class BoundTrigger:
    """``instance.<trigger>``: calling it is ``instance.trigger(name, ...)``."""

    __slots__ = ("instance", "name")

    def __init__(self, instance: _Fires, name: str) -> None:
        self.instance = instance
        self.name = name

    def __call__(
        self,
        *,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Awaitable[Event]:
        """Fire the trigger through the commit path; await it for the committed ``Event``."""
        return self.instance.trigger(
            self.name, actor=actor, reason=reason, context=context, payload=payload
        )

    def may(self, *, payload: dict[str, Any] | None = None) -> bool:
        """``instance.may_trigger(name, payload=payload)``."""
        return self.instance.may_trigger(self.name, payload=payload)

    def __repr__(self) -> str:
        return f"<trigger {self.name!r} of {self.instance!r}>"


class Trigger(str):
    """A trigger's name on a machine class; a :class:`BoundTrigger` on an instance."""

    __slots__ = ()

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Trigger: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> BoundTrigger: ...
    def __get__(self, instance: object, owner: type | None = None) -> Trigger | BoundTrigger:
        if instance is None:
            return self
        return BoundTrigger(cast(_Fires, instance), str(self))  # a Machine instance
