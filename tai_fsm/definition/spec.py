"""``MachineSpec``: the one neutral, immutable, validated form of a machine definition.

Every reader (YAML file, Python class DSL) produces a ``MachineSpec``; the engine and the
runtime only ever see this form. Two definitions of the same machine in different formats
compile to *equal* specs. Sequences are tuples so specs are hashable-friendly and immutable.

Nested states: a child is addressed by its path joined with ``NESTED_SEPARATOR``
(``deploying.canary``) everywhere a state name is expected (transition sources/dests, the
instance's ``state``).
"""

from __future__ import annotations

import weakref
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "NESTED_SEPARATOR",
    "FieldSpec",
    "MachineSpec",
    "StateSpec",
    "TimeoutSpec",
    "TransitionSpec",
    "index_states",
]

NESTED_SEPARATOR = "."

FieldType = Literal["string", "integer", "number", "boolean", "array", "object", "any"]


#: id(spec) -> (weak reference to the spec, its path index); see MachineSpec.state_index.
_STATE_INDEXES: dict[int, tuple[weakref.ref[MachineSpec], dict[str, StateSpec]]] = {}


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeoutSpec(_Spec):
    """While in the state for ``after``, fire ``trigger`` (a durable timer in the runtime)."""

    after: timedelta
    trigger: str


class StateSpec(_Spec):
    """One state. ``children`` makes it a compound state entered at ``initial``."""

    name: str
    final: bool = False
    on_enter: tuple[str, ...] = ()
    on_exit: tuple[str, ...] = ()
    on_enter_committed: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    timeout: TimeoutSpec | None = None
    children: tuple[StateSpec, ...] = ()
    initial: str | None = None
    description: str = ""
    #: A trigger with no transition from here is ignored, not refused (None: as the parent
    #: state or the machine says).
    ignore_invalid_triggers: bool | None = None


class TransitionSpec(_Spec):
    """One transition. ``source`` may contain ``"*"`` (any state). ``dest=None`` marks an
    internal transition (no exit/enter, state unchanged); ``dest == source`` is reflexive
    (exit and enter run)."""

    trigger: str
    source: tuple[str, ...]
    dest: str | None
    conditions: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    after_commit: tuple[str, ...] = ()
    description: str = ""

    @property
    def internal(self) -> bool:
        return self.dest is None


class FieldSpec(_Spec):
    """One declared field of the instance data."""

    name: str
    type: FieldType = "any"
    default: Any = None
    required: bool = False
    description: str = ""


class MachineSpec(_Spec):
    """A complete machine definition."""

    name: str
    version: int = 1
    initial: str
    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...] = ()
    snapshot_every: int = 100
    snapshot_retention: int = 5
    data_fields: tuple[FieldSpec, ...] = ()
    description: str = ""
    #: A known trigger with no transition from the current state is ignored (nothing is
    #: committed; ``trigger`` returns the instance's current head event) instead of raising
    #: ``TransitionNotAllowed``. A state may say otherwise for itself and its children.
    ignore_invalid_triggers: bool = False

    def state_names(self) -> list[str]:
        """Every state's full path (children as ``parent.child``), declaration order."""
        names: list[str] = []

        def walk(states: tuple[StateSpec, ...], prefix: str) -> None:
            for state in states:
                full = f"{prefix}{state.name}"
                names.append(full)
                walk(state.children, f"{full}{NESTED_SEPARATOR}")

        walk(self.states, "")
        return names

    def find_state(self, path: str) -> StateSpec | None:
        """The state at ``path`` (``parent.child``), or None. Where siblings share a name,
        the first one declared is found (and only its children are searched). Constant
        time: see :meth:`state_index`."""
        return self.state_index().get(path)

    def state_index(self) -> dict[str, StateSpec]:
        """Every state ``find_state`` can find, by path (see :func:`index_states`; treat it as
        read-only). Built once per spec and dropped with it (specs are immutable)."""
        entry = _STATE_INDEXES.get(id(self))
        if entry is not None and entry[0]() is self:
            return entry[1]
        index = index_states(self.states)
        key = id(self)
        # The weak reference's callback forgets the index when the spec is collected (before
        # its id can be reused); replacing an entry drops the old reference and its callback.
        _STATE_INDEXES[key] = (weakref.ref(self, lambda _: _STATE_INDEXES.pop(key, None)), index)
        return index

    def wildcard_sources(self) -> list[str]:
        """What a ``"*"`` source stands for: every non-final leaf state (children of a
        compound state are listed, never the compound itself), declaration order."""
        leaves: list[str] = []

        def walk(states: tuple[StateSpec, ...], prefix: str) -> None:
            for state in states:
                full = f"{prefix}{state.name}"
                if state.children:
                    walk(state.children, f"{full}{NESTED_SEPARATOR}")
                elif not state.final:
                    leaves.append(full)

        walk(self.states, "")
        return leaves

    def ignores_invalid_triggers(self, path: str) -> bool:
        """Whether a known trigger with no transition from state ``path`` is ignored: the
        innermost state on the path that sets ``ignore_invalid_triggers`` decides, else the
        machine."""
        parts = path.split(NESTED_SEPARATOR)
        for depth in range(len(parts), 0, -1):
            state = self.find_state(NESTED_SEPARATOR.join(parts[:depth]))
            if state is not None and state.ignore_invalid_triggers is not None:
                return state.ignore_invalid_triggers
        return self.ignore_invalid_triggers

    def triggers(self) -> list[str]:
        """Distinct trigger names, declaration order."""
        return list(dict.fromkeys(t.trigger for t in self.transitions))


def index_states(states: tuple[StateSpec, ...]) -> dict[str, StateSpec]:
    """Every state a path lookup finds, by path, in time linear in the number of states.

    A lookup splits the path at ``.`` and takes, at each level, the *first* sibling of that
    name: a name containing ``.`` is never found, nor is a later sibling that repeats a name
    (nor its children)."""
    index: dict[str, StateSpec] = {}

    def walk(level: tuple[StateSpec, ...], prefix: str) -> None:
        for state in level:
            if NESTED_SEPARATOR in state.name:
                continue
            path = prefix + state.name
            if path not in index:
                index[path] = state
                walk(state.children, path + NESTED_SEPARATOR)

    walk(states, "")
    return index
