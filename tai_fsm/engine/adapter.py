"""The adapter between a ``MachineSpec`` and the ``transitions`` library.

One ``CompiledMachine`` per machine class (not per instance): it owns one shared
``transitions`` machine with no models attached, and fires triggers *on* an instance passed
in each call. Consequently nothing is bound onto instances (no ``to_x``/``may_x``/trigger
methods — DESIGN.md §4.8), instances cost only their own attributes, and creating one is
O(1) (``transitions``' ``add_model`` scans a list; we never call it).

Callback names resolve only to callables defined on the machine class — never to a dotted
import path as ``transitions`` would by default — so a YAML file cannot reach arbitrary code.

``fire`` runs the transition and its pre-commit callbacks in memory; it knows nothing of
stores. The runtime snapshots and restores the instance around it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transitions import Machine as _FlatMachine
from transitions.core import Condition, EventData, MachineError, Transition
from transitions.extensions.nesting import (
    HierarchicalMachine,
    NestedEventData,
    NestedState,
    NestedTransition,
)

from tai_fsm.definition.binding import check_class
from tai_fsm.definition.listeners import class_listeners
from tai_fsm.definition.listeners import generation as listener_generation
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.spec import NESTED_SEPARATOR, MachineSpec, StateSpec, TransitionSpec
from tai_fsm.errors import DefinitionError, TaiFsmError, TransitionNotAllowed

__all__ = ["CompiledMachine", "FireOutcome"]

logging.getLogger("transitions").setLevel(logging.WARNING)

# Attribute names set on transitions' EventData while a trigger fires.
_SPEC_ATTR = "tai_transition_spec"
_FAILED_ATTR = "tai_failed_condition"


@dataclass(slots=True)
class FireOutcome:
    """What one in-memory firing did."""

    trigger: str
    source: str
    dest: str
    transition: TransitionSpec
    entered: list[str] = field(default_factory=list)


def _resolve_on_class(func: Any, event_data: EventData) -> Any:
    """``transitions``' resolve_callable, restricted to the model's class attributes."""
    if not isinstance(func, str):
        return func
    model = event_data.model
    attr = getattr(type(model), func, None)
    if attr is None or not callable(attr):
        raise TaiFsmError(
            f"callback {func!r} is not a method of {type(model).__name__}; callbacks resolve "
            "only to methods of the machine class"
        )
    return getattr(model, func)


class _Condition(Condition):
    """Records which condition failed, so the error can name it."""

    def check(self, event_data: EventData) -> bool:
        passed = bool(super().check(event_data))
        if not passed and getattr(event_data, _FAILED_ATTR, None) is None:
            name = self.func if isinstance(self.func, str) else getattr(self.func, "__name__", "?")
            setattr(event_data, _FAILED_ATTR, name if self.target else f"unless {name}")
        return passed


class _Transition(Transition):
    condition_cls = _Condition


class _NestedTransition(NestedTransition):
    condition_cls = _Condition


class _DottedState(NestedState):
    separator = NESTED_SEPARATOR


class _TaiFlatMachine(_FlatMachine):
    transition_cls = _Transition

    @staticmethod
    def resolve_callable(func: Any, event_data: EventData) -> Any:
        return _resolve_on_class(func, event_data)


class _TaiNestedMachine(HierarchicalMachine):
    transition_cls = _NestedTransition
    state_cls = _DottedState

    @staticmethod
    def resolve_callable(func: Any, event_data: EventData) -> Any:
        return _resolve_on_class(func, event_data)


def _state_config(state: StateSpec) -> dict[str, Any]:
    config: dict[str, Any] = {"name": state.name}
    if state.on_enter:
        config["on_enter"] = list(state.on_enter)
    if state.on_exit:
        config["on_exit"] = list(state.on_exit)
    if state.final:
        config["final"] = True
    if state.children:
        config["children"] = [_state_config(child) for child in state.children]
        config["initial"] = state.initial or state.children[0].name
    return config


def _mark_spec(spec: TransitionSpec) -> Callable[[EventData], None]:
    def mark(event_data: EventData) -> None:
        setattr(event_data, _SPEC_ATTR, spec)

    return mark


def _expose_payload(event_data: EventData) -> None:
    setattr(event_data, "payload", event_data.kwargs)  # noqa: B010 - EventData has no slot


class CompiledMachine:
    """A machine class bound to ``transitions``. Build once per class; thread-unsafe (the
    runtime fires on one event loop thread)."""

    def __init__(
        self, machine_cls: type[Machine], listeners: list[Any] | None = None
    ) -> None:
        spec = getattr(machine_cls, "spec", None)
        if not isinstance(spec, MachineSpec):
            raise DefinitionError(
                f"{machine_cls.__name__} has no machine definition (spec); declare states and "
                "transitions or subclass fsm.load_machine(path)"
            )
        problems = check_class(spec, machine_cls)
        if problems:
            raise DefinitionError(problems)
        self.spec = spec
        self.machine_cls = machine_cls
        #: Runtime-wide listeners (shared by the runtime's machines); the class's own are
        #: read at each transition (``definition.listeners.class_listeners``).
        self.listeners: list[Any] = listeners if listeners is not None else []
        self._listener_key: tuple[int, int] = (-1, -1)
        self._class_listeners: list[Any] = []
        self.nested = any(state.children for state in spec.states)
        factory = _TaiNestedMachine if self.nested else _TaiFlatMachine
        self._machine = factory(
            model=None,
            states=[_state_config(s) for s in spec.states],
            initial=spec.initial,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=False,
            prepare_event=[_expose_payload],
            before_state_change=[self._before_transition],
            after_state_change=[self._after_transition],
            name=spec.name,
        )
        # "*" means every non-final leaf state (`transitions` would include final states).
        not_final = spec.wildcard_sources()
        for transition in spec.transitions:
            names = list(transition.source)
            if "*" in names:
                names = list(dict.fromkeys([s for s in names if s != "*"] + not_final))
            sources: Any = names  # the stubs type flat and nested sources differently
            self._machine.add_transition(
                transition.trigger,
                sources,
                transition.dest,
                conditions=list(transition.conditions),
                unless=list(transition.unless),
                before=list(transition.before),
                after=list(transition.after),
                prepare=[_mark_spec(transition)],
            )
        self.initial_state = self._resolve_initial(spec.initial)
        #: Trigger names the machine declares (an unknown one is never ignored).
        self.known_triggers = frozenset(spec.triggers())
        states = [(path, spec.find_state(path)) for path in spec.state_names()]
        #: Paths of states with a timeout (entering one starts a durable timer).
        self.timed_states = frozenset(p for p, s in states if s is not None and s.timeout)
        self._final_states = frozenset(p for p, s in states if s is not None and s.final)
        self._triggers_by_state: dict[str, list[str]] = {}
        self._post_commit_cache: dict[tuple[TransitionSpec, tuple[str, ...]], list[str]] = {}

    def active_listeners(self) -> list[Any]:
        """Class listeners (base classes first), then runtime listeners. Cached until a
        class listener is added or removed (``listeners.generation``) or the runtime's list
        grows or shrinks: the hot path pays one comparison."""
        key = (listener_generation(), len(self.listeners))
        if self._listener_key != key:
            self._class_listeners = class_listeners(self.machine_cls)
            self._listener_key = key
        if not self.listeners:
            return self._class_listeners
        return [*self._class_listeners, *self.listeners]

    def _before_transition(self, event_data: EventData) -> None:
        for listener in self.active_listeners():
            method = getattr(listener, "before_transition", None)
            if method is not None:
                method(event_data.model, event_data)

    def _after_transition(self, event_data: EventData) -> None:
        for listener in self.active_listeners():
            method = getattr(listener, "after_transition", None)
            if method is not None:
                method(event_data.model, event_data)

    def _resolve_initial(self, path: str) -> str:
        """The leaf state entered when entering ``path`` (compound states descend)."""
        state = self.spec.find_state(path)
        while state is not None and state.children:
            child = state.initial or state.children[0].name
            path = f"{path}{NESTED_SEPARATOR}{child}"
            state = self.spec.find_state(path)
        return path

    # ------------------------------------------------------------------ firing
    def fire(self, instance: Machine, trigger: str, payload: dict[str, Any]) -> FireOutcome:
        """Run ``trigger`` on ``instance`` in memory, callbacks included.

        Raises ``TransitionNotAllowed`` (unknown trigger, wrong state, or a failed condition —
        named) with the instance untouched by ``transitions`` itself; any exception a
        callback raises propagates as is (the instance may be half-changed: the caller
        restores it)."""
        if trigger not in self._machine.events:
            raise TransitionNotAllowed(
                f"{self.spec.name}: unknown trigger {trigger!r}; known: "
                f"{', '.join(self.spec.triggers()) or 'none'}",
                trigger=trigger,
                state=instance.state,
            )
        source = instance.state
        if source in self._final_states:
            raise TransitionNotAllowed(
                f"{self.spec.name}: {instance.id!r} is in final state {source!r}; "
                f"no trigger can fire (got {trigger!r})",
                trigger=trigger,
                state=source,
            )
        machine = self._machine
        event_data: EventData
        try:
            if isinstance(machine, _TaiNestedMachine):
                event_data = NestedEventData(None, None, machine, instance, (), payload)
                event_data.result = None
                with machine():
                    executed = machine._trigger_event_nested(event_data, trigger, None)
                executed = machine._check_event_result(executed, instance, trigger)
            else:
                event = machine.events[trigger]
                event_data = EventData(None, event, machine, instance, (), payload)
                event_data.state = machine.get_model_state(instance)
                executed = event._is_valid_source(event_data.state) and (
                    event._process(event_data) or event_data.result
                )
        except MachineError as exc:
            raise TransitionNotAllowed(
                f"{self.spec.name}: trigger {trigger!r} is not allowed from state {source!r}",
                trigger=trigger,
                state=source,
            ) from exc
        if not executed:
            failed = getattr(event_data, _FAILED_ATTR, None)
            reason = f"condition {failed!r} failed" if failed else "no transition matched"
            raise TransitionNotAllowed(
                f"{self.spec.name}: trigger {trigger!r} from state {source!r} not allowed: "
                f"{reason}",
                trigger=trigger,
                state=source,
                condition=failed,
            )
        spec = getattr(event_data, _SPEC_ATTR)
        dest = instance.state
        return FireOutcome(
            trigger=trigger,
            source=source,
            dest=dest,
            transition=spec,
            entered=self._entered(spec, source, dest),
        )

    @staticmethod
    def _entered(spec: TransitionSpec, source: str, dest: str) -> list[str]:
        """States entered, outermost first: below the deepest common ancestor of the source
        and the declared dest, down to the leaf reached (``dest``). A dest that is the
        source or one of its ancestors is itself exited and entered again."""
        if spec.dest is None:
            return []
        before = source.split(NESTED_SEPARATOR)
        target = spec.dest.split(NESTED_SEPARATOR)
        after = dest.split(NESTED_SEPARATOR)
        common = 0
        while common < min(len(before), len(target)) and before[common] == target[common]:
            common += 1
        if common == len(target):  # dest is the source or an ancestor of it
            common -= 1
        return [NESTED_SEPARATOR.join(after[: i + 1]) for i in range(common, len(after))]

    def may_fire(
        self, instance: Machine, trigger: str, payload: dict[str, Any] | None = None
    ) -> bool:
        """True if ``trigger`` could fire now: a transition exists and its conditions pass,
        seeing ``event.payload == payload``. Conditions are evaluated on ``instance`` (pass
        a copy: the runtime does, see ``runtime.guards``); state is not changed."""
        if trigger not in self._machine.events or instance.state in self._final_states:
            return False
        return bool(self._machine._can_trigger(instance, trigger, **(payload or {})))

    def available_triggers(self, state: str) -> list[str]:
        """Triggers with a transition from ``state`` (or an ancestor), declaration order."""
        cached = self._triggers_by_state.get(state)
        if cached is None and state in self._final_states:
            cached = []
        if cached is None:
            found = set(self._machine.get_triggers(state))
            cached = [t for t in self.spec.triggers() if t in found]
            self._triggers_by_state[state] = cached
        return list(cached)

    def post_commit_hooks(self, outcome: FireOutcome) -> list[str]:
        """Names of the post-commit hooks for ``outcome``: the transition's ``after_commit``
        then ``on_enter_committed`` of every state entered, outermost first."""
        key = (outcome.transition, tuple(outcome.entered))
        hooks = self._post_commit_cache.get(key)
        if hooks is None:
            hooks = list(outcome.transition.after_commit)
            for path in outcome.entered:
                state = self.spec.find_state(path)
                if state is not None:
                    hooks.extend(state.on_enter_committed)
            self._post_commit_cache[key] = hooks
        return hooks

    def state_spec(self, path: str) -> StateSpec | None:
        return self.spec.find_state(path)
