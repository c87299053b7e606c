"""The class DSL: declare a machine as class attributes of a ``Machine`` subclass.

.. code-block:: python

    class Order(fsm.Machine):
        name = "order"                     # default: the class name in snake_case
        version = 1
        snapshot_every = 100

        class Data(BaseModel):             # or: data_model = SomeModel
            items: int = 0

        pending = fsm.State(initial=True)
        paid = fsm.State(timeout=fsm.Timeout("30m", "expire"), on_enter=["stamp_paid_at"])
        shipped = fsm.State(final=True)
        cancelled = fsm.State(final=True)
        deploying = fsm.State(children={"canary": fsm.State(initial=True), "full": fsm.State()})

        pay = pending.to(paid, conditions=["has_items"])      # the attribute name is the trigger
        cancel = fsm.Transition(source=[pending, paid], dest=cancelled)
        retry = failed.to(running, conditions=["can_retry"]) | failed.to(dead)  # one trigger
        promote = deploying["canary"].to(deploying["full"])   # or "deploying.canary"

        @fsm.on_enter_committed(paid)      # also on_enter, on_exit, before, after, after_commit
        def send_receipt(self, event): ...

Rules:

* Callback lists take method names (or the functions themselves); decorated methods are
  appended after the names given explicitly, in class order.
* A compound state's child marked ``initial=True`` is its initial child; the top-level state
  marked ``initial=True`` (or a class attribute ``initial = "path"``) is the machine's.
* After collection, each ``State`` attribute is replaced by its path (a ``str``) and each
  transition attribute by its trigger name, so ``await order.trigger(Order.pay)`` and
  ``order.state == Order.paid`` read naturally — no attribute of the class or its instances
  can change state (DESIGN.md §4.8). ``name``/``version``/``initial``/``snapshot_every``/
  ``snapshot_retention``/``description`` are removed (they live in ``cls.spec``).
* A subclass of a machine *extends* it: its own states, transitions, decorated hooks and
  settings are added to the inherited spec (``class Order(fsm.load_machine("order.yaml"))``
  with ``@fsm.after_commit("ship")`` adds a post-commit hook to the YAML machine).
"""

from __future__ import annotations

import inspect
import linecache
import os
import types
import typing
from typing import Any, get_args, get_origin

import pydantic
import pydantic_core
from pydantic import BaseModel

from tai_fsm.definition._common import STATE_CALLBACKS, snake_case, trigger_order
from tai_fsm.definition.declarations import (
    HOOKS_ATTR,
    State,
    Timeout,
    Transition,
    TransitionGroup,
    after,
    after_commit,
    before,
    on_enter,
    on_enter_committed,
    on_exit,
)
from tai_fsm.definition.listeners import convention_hooks
from tai_fsm.definition.locations import Key, SourceMap, class_line
from tai_fsm.definition.names import install_names
from tai_fsm.definition.reserved import DSL_SETTINGS
from tai_fsm.definition.spec import (
    NESTED_SEPARATOR,
    FieldSpec,
    FieldType,
    MachineSpec,
    StateSpec,
    TransitionSpec,
    index_states,
)
from tai_fsm.definition.triggers import Trigger
from tai_fsm.definition.validate import validate
from tai_fsm.definition.yaml_reader import read_machine_file
from tai_fsm.errors import DefinitionError

__all__ = [
    "State",
    "Timeout",
    "Transition",
    "TransitionGroup",
    "after",
    "after_commit",
    "before",
    "collect_spec",
    "fields_from_model",
    "on_enter",
    "on_enter_committed",
    "on_exit",
]

_SETTINGS = DSL_SETTINGS  # name, version, initial, snapshot_*, description, ignore_...


# ---------------------------------------------------------------------- data models
_SIMPLE_TYPES: dict[object, FieldType] = {
    bool: "boolean", int: "integer", float: "number", str: "string",
    list: "array", tuple: "array", set: "array", frozenset: "array", dict: "object",
}  # fmt: skip


def _field_type(annotation: object) -> FieldType:
    if annotation in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[annotation]
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        # ``X | None`` is an optional X; other unions have no single JSON type.
        members = [a for a in get_args(annotation) if a is not type(None)]
        return _field_type(members[0]) if len(members) == 1 else "any"
    if origin is typing.Literal:
        kinds = {_field_type(type(arg)) for arg in get_args(annotation)}
        return kinds.pop() if len(kinds) == 1 else "any"
    if origin in _SIMPLE_TYPES and origin not in (bool, int, float, str):
        return _SIMPLE_TYPES[origin]
    return "any"


def fields_from_model(model: type[BaseModel]) -> tuple[FieldSpec, ...]:
    """``FieldSpec``s for a pydantic model's fields: bool -> boolean, int -> integer,
    float -> number, str -> string, list/tuple/set -> array, dict -> object, else any
    (``X | None`` counts as X; other unions as any); defaults (factories called) in the JSON
    form the store will hold (see :func:`_json_form`); ``required`` when there is no
    default."""
    found: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        required = info.is_required()
        default = None if required else _json_form(info.get_default(call_default_factory=True))
        found.append(
            FieldSpec(
                name=name,
                type=_field_type(info.annotation),
                default=default,
                required=required,
                description=info.description or "",
            )
        )
    return tuple(found)


def _json_form(value: Any) -> Any:
    """A model field's default as JSON holds it — tuples and sets as lists, datetimes and
    UUIDs as strings, models as dicts (pydantic's JSON conversion) — so that a class and its
    YAML twin declare equal defaults. What JSON cannot hold (NaN, infinities, integers beyond
    64 bits, objects pydantic cannot convert) is kept as it is, for validation to report."""
    try:
        return pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, ValueError):  # ValueError: a cycle
        return value


# ---------------------------------------------------------------------- collection
def _source_map(cls: type) -> SourceMap:
    module = inspect.getmodule(cls)
    file = getattr(module, "__file__", None)
    line = getattr(cls, "__firstlineno__", None)
    if line is None and file:
        line = class_line(cls)
    source = SourceMap(file=file)
    if isinstance(line, int):
        source.marks[()] = (line, 1)
    return source


def collect_spec(cls: type, yaml: str | os.PathLike[str] | None = None) -> MachineSpec | None:
    """The ``MachineSpec`` declared by ``cls``'s own class attributes, merged onto the spec it
    inherits (or, with ``yaml``, onto that file's machine); None when ``cls`` declares
    nothing of its own (it keeps the inherited ``spec``).

    Side effects on ``cls`` (see the module docstring): declarations are replaced by names,
    settings removed, ``data_model`` set from a nested ``Data`` model, ``_tai_source_map``
    set. Raises ``DefinitionError`` with every problem found."""
    if yaml is None:
        return _collect(cls, None)
    if "spec" in vars(cls):
        raise DefinitionError(f"{cls.__name__} sets 'spec' and yaml=; use one or the other")
    spec, source = read_machine_file(yaml)
    cls.source_file = str(yaml)  # type: ignore[attr-defined]
    extended = _collect(cls, spec)
    if extended is None:
        cls._tai_source_map = source  # type: ignore[attr-defined]
        install_names(cls, spec)
        return spec
    return extended


def _collect(cls: type, inherited: MachineSpec | None) -> MachineSpec | None:
    own = dict(vars(cls))
    states = {k: v for k, v in own.items() if isinstance(v, State)}
    transitions = {k: v for k, v in own.items() if isinstance(v, Transition | TransitionGroup)}
    hooks = [
        (attr, kind, target)
        for attr, value in own.items()
        if inspect.isfunction(value) or isinstance(value, staticmethod | classmethod)
        for kind, target in getattr(value, HOOKS_ATTR, ())
    ]
    hooks.extend(_conventions(own, states, transitions, inherited or getattr(cls, "spec", None)))
    clashes = [k for k in (*states, *transitions) if k in _SETTINGS]
    if clashes:
        source = _source_map(cls)
        raise DefinitionError([
            source.problem(
                f"{cls.__name__}: {'state' if k in states else 'trigger'} '{k}' is reserved: "
                f"'{k}' is a machine setting in the class DSL; choose another name"
            )
            for k in clashes
        ])
    settings = {k: own[k] for k in _SETTINGS if k in own}
    model = own.get("data_model")
    nested = own.get("Data")
    if model is None and isinstance(nested, type) and issubclass(nested, BaseModel):
        model = nested
    if not (states or transitions or hooks or settings or model is not None):
        return None
    source = _source_map(cls)
    if "spec" in own:
        raise DefinitionError(
            f"{cls.__name__} sets 'spec' and also declares states/transitions/settings; "
            "use one or the other",
            file=source.file,
            line=source.position(())[0],
        )
    if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise DefinitionError(f"{cls.__name__}.data_model must be a pydantic BaseModel subclass")
    base = inherited if inherited is not None else getattr(cls, "spec", None)
    collector = _Collector(cls, base if isinstance(base, MachineSpec) else None, source)
    try:
        spec = collector.build(states, transitions, hooks, settings, model)
    except pydantic.ValidationError as exc:
        raise DefinitionError(
            [
                source.problem(
                    f"{cls.__name__}: invalid {'.'.join(str(p) for p in err['loc']) or 'value'}"
                    f": {err['msg']}"
                )
                for err in exc.errors()
            ]
        ) from None
    problems = validate(spec, source)
    if problems:
        raise DefinitionError(problems)
    for attr in states:
        setattr(cls, attr, attr)
    for attr, decl in transitions.items():
        decl.name = attr
        for member in _members(decl):
            member.name = attr
        setattr(cls, attr, Trigger(attr))  # the name on the class, a method on instances
    for attr in settings:
        delattr(cls, attr)
    if model is not None:
        cls.data_model = model  # type: ignore[attr-defined]
    cls._tai_source_map = source  # type: ignore[attr-defined]
    install_names(cls, spec)  # inherited triggers and states not set above
    return spec


def _conventions(
    own: dict[str, Any],
    states: dict[str, State],
    transitions: dict[str, Transition | TransitionGroup],
    base: object,
) -> list[tuple[str, str, object]]:
    """Hooks from methods named by convention (``on_enter_paid``, ``after_commit_ship``;
    see :mod:`tai_fsm.definition.listeners`) for the states and triggers known here."""
    methods = [
        name for name, value in own.items()
        if (inspect.isfunction(value) or isinstance(value, staticmethod | classmethod))
        and not getattr(value, HOOKS_ATTR, ())  # a decorated method goes where it says
    ]
    if not methods:
        return []
    declared = {**{p: s for p, s in _nested_paths(states)}, **states}
    known_triggers: list[str] = list(transitions)
    known_states = list(declared)
    if isinstance(base, MachineSpec):
        known_states += base.state_names()
        known_triggers += base.triggers()
    found: list[tuple[str, str, object]] = []
    for method, kind, target in convention_hooks(methods, known_states, known_triggers):
        # a method the definition already names there is not added twice
        if target in declared:
            named: tuple[str, ...] = getattr(declared[target], kind)
        elif target in transitions:
            named = tuple(n for t in _members(transitions[target]) for n in getattr(t, kind))
        elif isinstance(base, MachineSpec) and base.find_state(target) is not None:
            named = getattr(base.find_state(target), kind)
        elif isinstance(base, MachineSpec):
            named = tuple(
                n for t in base.transitions if t.trigger == target for n in getattr(t, kind)
            )
        else:
            named = ()
        if method not in named:
            found.append((method, kind, target))
    return found


def _nested_paths(states: dict[str, State]) -> list[tuple[str, State]]:
    found: list[tuple[str, State]] = []

    def walk(children: dict[str, State], prefix: str) -> None:
        for name, state in children.items():
            found.append((prefix + name, state))
            walk(state.children, prefix + name + NESTED_SEPARATOR)

    for name, state in states.items():
        walk(state.children, name + NESTED_SEPARATOR)
    return found


class _Collector:
    def __init__(self, cls: type, base: MachineSpec | None, source: SourceMap) -> None:
        self.cls = cls
        self.base = base
        self.source = source
        self.paths: dict[int, str] = {}
        self.problems: list[str] = []

    def fail(self) -> DefinitionError:
        return DefinitionError(
            [self.source.problem(f"{self.cls.__name__}: {p}") for p in self.problems]
        )

    def build(
        self,
        states: dict[str, State],
        transitions: dict[str, Transition | TransitionGroup],
        hooks: list[tuple[str, str, object]],
        settings: dict[str, Any],
        model: type[BaseModel] | None,
    ) -> MachineSpec:
        base = self.base
        new_states = tuple(self.state(name, st, "") for name, st in states.items())
        all_states = (base.states if base else ()) + new_states
        new_transitions = [
            self.transition(trigger, t)
            for trigger, decl in transitions.items()
            for t in (decl.transitions if isinstance(decl, TransitionGroup) else (decl,))
        ]
        all_transitions = list(base.transitions if base else ()) + new_transitions
        initial = self.initial(states, settings, base)
        if self.problems:
            raise self.fail()
        own_decls = {id(t) for d in transitions.values() for t in _members(d)}
        declared = [t for d in transitions.values() for t in _members(d)]
        offset = len(base.transitions) if base else 0
        positions = {id(t): offset + i for i, t in enumerate(declared)}
        # Hooks are gathered first (in class order) and applied once, through indexes of
        # states by path and transitions by trigger: linear in states, transitions and hooks.
        found_states = index_states(all_states)
        by_trigger: dict[str, list[int]] = {}
        for index, transition in enumerate(all_transitions):
            by_trigger.setdefault(transition.trigger, []).append(index)
        state_hooks: dict[str, dict[str, list[str]]] = {}
        transition_hooks: dict[int, dict[str, list[str]]] = {}
        for attr, kind, target in hooks:
            if kind in STATE_CALLBACKS:
                path = target if isinstance(target, str) else self.paths.get(id(target))
                if path is None or _lookup_path(path) not in found_states:
                    self.problems.append(f"@{kind} target {target!r} is not a state of this class")
                    continue
                state_hooks.setdefault(_lookup_path(path), {}).setdefault(kind, []).append(attr)
            else:
                if isinstance(target, str):
                    hit = by_trigger.get(target, [])
                elif isinstance(target, Transition | TransitionGroup) and all(
                    id(t) in own_decls for t in _members(target)
                ):
                    hit = [positions[id(t)] for t in _members(target)]
                else:
                    hit = []
                if not hit:
                    self.problems.append(
                        f"@{kind} target {target!r} is not a trigger of this class"
                    )
                for index in hit:
                    transition_hooks.setdefault(index, {}).setdefault(kind, []).append(attr)
        if self.problems:
            raise self.fail()
        all_states = _with_hooks(all_states, state_hooks, "")
        for index, kinds in transition_hooks.items():
            current = all_transitions[index]
            all_transitions[index] = current.model_copy(
                update={kind: (*getattr(current, kind), *names) for kind, names in kinds.items()}
            )
        order = trigger_order(all_transitions)
        ordered = tuple(all_transitions[i] for i in order)
        for position, index in enumerate(order):  # locate each own transition at its line
            if index >= offset:
                self.mark(("transition", position), declared[index - offset].declared_at)
        return MachineSpec(
            name=str(settings.get("name", base.name if base else snake_case(self.cls.__name__))),
            version=settings.get("version", base.version if base else 1),
            initial=initial,
            states=all_states,
            transitions=ordered,
            snapshot_every=settings.get("snapshot_every", base.snapshot_every if base else 100),
            snapshot_retention=settings.get(
                "snapshot_retention", base.snapshot_retention if base else 5
            ),
            data_fields=(
                fields_from_model(model)
                if model is not None
                else (base.data_fields if base else ())
            ),
            description=settings.get("description", base.description if base else ""),
            ignore_invalid_triggers=settings.get(
                "ignore_invalid_triggers", base.ignore_invalid_triggers if base else False
            ),
        )

    def initial(
        self, states: dict[str, State], settings: dict[str, Any], base: MachineSpec | None
    ) -> str:
        marked = [name for name, st in states.items() if st.initial]
        if "initial" in settings:
            value = settings["initial"]
            if isinstance(value, State):
                return self.paths.get(id(value), "?")
            return str(value)
        if len(marked) > 1:
            self.problems.append(f"several initial states ({', '.join(marked)}); mark exactly one")
        if marked:
            return marked[0]
        if base is not None:
            return base.initial
        self.problems.append("no initial state; mark one State(initial=True)")
        return ""

    def mark(self, key: Key, declared_at: tuple[str, int] | None) -> None:
        """Locate ``key`` at the line that declared it (when in the class's own file)."""
        if declared_at is None or declared_at[0] != self.source.file:
            return
        line = declared_at[1]
        text = linecache.getline(declared_at[0], line)
        self.source.marks[key] = (line, len(text) - len(text.lstrip()) + 1)

    def state(self, name: str, state: State, prefix: str) -> StateSpec:
        path = prefix + name
        state.path = path
        self.mark(("state", path), state.declared_at)
        if id(state) in self.paths:
            self.problems.append(
                f"the same State object is declared as '{self.paths[id(state)]}' and as "
                f"'{path}'; create one State per state"
            )
        self.paths[id(state)] = path
        children = tuple(
            self.state(child, st, path + NESTED_SEPARATOR) for child, st in state.children.items()
        )
        marked = [child for child, st in state.children.items() if st.initial]
        if len(marked) > 1:
            self.problems.append(
                f"several children of state '{path}' are marked initial ({', '.join(marked)})"
            )
        return StateSpec(
            name=name,
            final=state.final,
            on_enter=state.on_enter,
            on_exit=state.on_exit,
            on_enter_committed=state.on_enter_committed,
            tags=state.tags,
            timeout=state.timeout.spec() if state.timeout is not None else None,
            children=children,
            initial=marked[0] if marked else None,
            description=state.description,
            ignore_invalid_triggers=state.ignore_invalid_triggers,
        )

    def ref(self, trigger: str, value: State | str) -> str:
        if isinstance(value, str):
            return value
        path = self.paths.get(id(value))
        if path is None:
            self.problems.append(
                f"transition '{trigger}' refers to a State that is not declared on this class; "
                "declare it as a class attribute or refer to it by name"
            )
            return "?"
        return path

    def transition(self, trigger: str, decl: Transition) -> TransitionSpec:
        dest = None if decl.dest is None else self.ref(trigger, decl.dest)
        return TransitionSpec(
            trigger=trigger,
            source=tuple(self.ref(trigger, s) for s in decl.source),
            dest=dest,
            conditions=decl.conditions,
            unless=decl.unless,
            before=decl.before,
            after=decl.after,
            after_commit=decl.after_commit,
            description=decl.description,
        )


def _members(decl: Transition | TransitionGroup) -> tuple[Transition, ...]:
    return decl.transitions if isinstance(decl, TransitionGroup) else (decl,)


def _lookup_path(path: str) -> str:
    """``path`` as a hook target is looked up: a trailing ``.`` names the state before it."""
    return path[:-1] if path.endswith(NESTED_SEPARATOR) else path


def _with_hooks(
    states: tuple[StateSpec, ...], hooks: dict[str, dict[str, list[str]]], prefix: str
) -> tuple[StateSpec, ...]:
    """``states`` with the hook names in ``hooks`` (path -> callback kind -> method names)
    appended to the callbacks of every state at that path (siblings sharing a name too);
    untouched states are kept as they are. One walk over the states."""
    if not hooks:
        return states
    updated: list[StateSpec] = []
    for state in states:
        if NESTED_SEPARATOR not in state.name:
            path = prefix + state.name
            changes: dict[str, Any] = {
                kind: (*getattr(state, kind), *names) for kind, names in hooks.get(path, {}).items()
            }
            children = _with_hooks(state.children, hooks, path + NESTED_SEPARATOR)
            if children is not state.children:
                changes["children"] = children
            if changes:
                state = state.model_copy(update=changes)
        updated.append(state)
    if all(new is old for new, old in zip(updated, states, strict=True)):
        return states
    return tuple(updated)
