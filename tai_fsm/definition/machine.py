"""``Machine``: the base class of every machine — the class a user subclasses.

A ``Machine`` subclass carries a ``MachineSpec`` (``cls.spec``, built from class attributes by
the DSL, or from a YAML file by ``load_machine``) and the behaviour: callback methods named by
the spec (conditions, before/after, on_enter/on_exit, post-commit hooks).

An *instance* is one durable machine: ``id``, ``governor``, ``state``, ``version``, ``data``.
Instances are created and rebuilt by the runtime (``Runtime.create`` / ``Runtime.get``), never
by calling the class. Their only way to change state is ``await instance.trigger(name)``, which
goes through the runtime's commit (DESIGN.md §4.8): nothing is bound onto instances, so no
attribute of an instance can change state without committing.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

from tai_fsm.definition.declarations import Transition, TransitionGroup
from tai_fsm.definition.listeners import add_class_listener, remove_class_listener
from tai_fsm.definition.reserved import RESERVED_ATTRIBUTES
from tai_fsm.definition.spec import MachineSpec

if TYPE_CHECKING:
    from tai_fsm.records import Event

__all__ = ["RESERVED_ATTRIBUTES", "InstanceBinding", "Machine"]


class InstanceBinding(Protocol):
    """What the runtime attaches to each instance it manages."""

    def trigger(
        self,
        instance: Machine,
        name: str,
        *,
        actor: str | None,
        reason: str | None,
        context: dict[str, Any] | None,
        payload: dict[str, Any] | None,
    ) -> Awaitable[Event]: ...

    def may_trigger(
        self, instance: Machine, name: str, payload: dict[str, Any] | None = None
    ) -> bool: ...

    def available_triggers(self, instance: Machine) -> list[str]: ...


class Machine:
    """Base class of all machines. See the module docstring for the contract."""

    #: The machine's definition. Set by the class DSL or by ``load_machine``.
    spec: ClassVar[MachineSpec]
    #: Optional pydantic model for ``data``; instances then expose ``data`` as that model.
    data_model: ClassVar[type[BaseModel] | None] = None
    #: The file a YAML machine was loaded from (for error messages), else None.
    source_file: ClassVar[str | None] = None
    #: Listeners of every transition of this class (:mod:`tai_fsm.definition.listeners`).
    listeners: ClassVar[Sequence[object]] = ()

    # Instance attributes, set by the runtime.
    id: str
    governor: str
    state: str
    version: int
    data: Any
    _binding: InstanceBinding | None

    def __init_subclass__(
        cls, *, yaml: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> None:
        """``class Order(fsm.Machine, yaml="machines/order.yaml")`` takes the definition
        from a YAML file (what ``fsm.load_machine`` returns, as a class statement that
        type-checks); the class body may extend it with the class DSL."""
        super().__init_subclass__(**kwargs)
        from tai_fsm.definition.dsl import collect_spec  # the DSL reads Machine: import late

        spec = collect_spec(cls, yaml=yaml)
        if spec is not None:
            cls.spec = spec

    @classmethod
    def _tai_new(
        cls,
        *,
        id: str,
        governor: str,
        state: str,
        version: int,
        data: Any,
        binding: InstanceBinding | None,
    ) -> Machine:
        """Create an instance without running any user ``__init__`` (runtime use only)."""
        instance = cls.__new__(cls)
        instance.id = id
        instance.governor = governor
        instance.state = state
        instance.version = version
        instance.data = data
        instance._binding = binding
        return instance

    def _require_binding(self) -> InstanceBinding:
        binding: InstanceBinding | None = getattr(self, "_binding", None)
        if binding is None:
            from tai_fsm.errors import TaiFsmError

            raise TaiFsmError(
                f"{type(self).__name__} instance {getattr(self, 'id', '?')!r} is a read-only "
                "view (not managed by a Runtime); use Runtime.get() to obtain a live instance"
            )
        return binding

    def trigger(
        self,
        name: str | Transition | TransitionGroup,
        *,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Awaitable[Event]:
        """Fire ``name`` durably; await the result to get the committed ``Event``.

        Called from inside a callback, the trigger is queued and committed as its own event
        after the current one (the returned awaitable then need not be awaited).
        ``name`` may be a trigger name, ``Order.pay``, or the declaration itself.
        ``instance.pay(...)`` is the same call."""
        return self._require_binding().trigger(
            self, _trigger_name(name), actor=actor, reason=reason, context=context,
            payload=payload,
        )

    def may_trigger(
        self,
        name: str | Transition | TransitionGroup,
        *,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """True if ``name`` could fire now with ``payload``: a transition leaves the current
        state and its conditions pass. The conditions run on a copy of the instance (the
        instance itself never changes), seeing ``event.payload == payload``."""
        return self._require_binding().may_trigger(self, _trigger_name(name), payload)

    @property
    def available_triggers(self) -> list[str]:
        """Triggers with a transition from the current state (conditions not evaluated)."""
        return self._require_binding().available_triggers(self)

    def allowed_triggers(self, payload: dict[str, Any] | None = None) -> list[str]:
        """The :attr:`available_triggers` whose conditions pass now with ``payload``
        (evaluated as :meth:`may_trigger` does, on a copy)."""
        binding = self._require_binding()
        return [
            name for name in binding.available_triggers(self)
            if binding.may_trigger(self, name, payload)
        ]

    @classmethod
    def add_listener(cls, listener: object) -> None:
        """Observe every transition of this machine class (and its subclasses): see
        :mod:`tai_fsm.definition.listeners` for the methods a listener may have."""
        add_class_listener(cls, listener)

    @classmethod
    def remove_listener(cls, listener: object) -> None:
        """Undo :meth:`add_listener` (``ValueError`` if ``listener`` was not added here)."""
        remove_class_listener(cls, listener)

    @property
    def is_final(self) -> bool:
        """True when the current state is declared final."""
        found = self.spec.find_state(self.state)
        return bool(found and found.final)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {getattr(self, 'governor', '?')}/{getattr(self, 'id', '?')}"
            f" state={getattr(self, 'state', '?')!r} v{getattr(self, 'version', '?')}>"
        )


def _trigger_name(name: object) -> Any:
    """A trigger given as its declaration (``Transition`` / ``TransitionGroup`` of a built
    class) -> its name; anything else is returned as is (the runtime checks it)."""
    if isinstance(name, Transition | TransitionGroup) and name.name is not None:
        return name.name
    return name
