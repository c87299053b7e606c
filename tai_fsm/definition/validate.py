"""Build-time validation of a :class:`MachineSpec` — every problem at once.

:func:`validate` checks the rules below and returns every problem found (each located through
a :class:`SourceMap` when one is given); :func:`ensure_valid` raises them as one
:class:`~tai_fsm.errors.DefinitionError`. Both readers (YAML, class DSL) run it.

Rules:

* names — the machine name is a slug (letters, digits, ``_``, ``-``, starting with a letter);
  trigger, state and data-field names are Python identifiers, not keywords, not starting with
  ``_`` and not one of ``RESERVED_ATTRIBUTES`` (the instance API); a trigger may not share
  its name with a top-level state (a class twin could not declare both); callback names are
  plain method names (never a dotted path, never a special ``__x__`` name or a Machine
  attribute);
* structure — sibling states and data fields are unique; a compound state names an existing
  ``initial`` child; a state without children has no ``initial``; final states have no
  children, no timeout, and no transition naming them as a source (``"*"`` sources are not
  counted: ``*`` is meant as "any non-final state", and expanding it is the engine's job);
* references — the machine's ``initial`` and every transition source and dest exist;
* duplicates — for one (trigger, source) pair, a transition declared after one with no
  conditions/unless, or after one with exactly the same conditions/unless, can never fire and
  is an error. Several transitions for a pair *with different conditions* are fine: the first
  whose conditions pass wins, as in ``transitions``;
* graph — every state is reachable from the initial state; every non-final leaf state has a
  transition to a different state (a compound state's transitions count for its children);
* timeouts — ``after`` is positive and some transition with the timeout's trigger applies in
  that state (declared on it, an ancestor, a descendant, or ``"*"``);
* numbers — ``version``, ``snapshot_every`` and ``snapshot_retention`` are at least 1 and
  fit in 64 bits; a data field's default matches its type, is plain JSON the store can hold
  (``codec.json_native``: no NaN/Infinity, no integer beyond 64 bits, anywhere inside it), and
  a required field has no default.

Time is linear in the size of the spec: transitions are indexed by source (and ``"*"``) once,
and each rule reads only the groups that apply (see :mod:`tai_fsm.definition._indexes`).
"Did you mean" hints are given within a budget (``SUGGESTION_BUDGET``), and a transition is
named with at most ``SHOWN_SOURCES`` sources, so that messages stay linear too.

:func:`check_callbacks` runs when a machine class is bound to the runtime: every callback name
must resolve, with ``getattr(cls, name)``, to a method (or other routine) of the class.
"""

from __future__ import annotations

import difflib
import inspect
import keyword
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from tai_fsm.codec import json_native
from tai_fsm.definition._common import STATE_CALLBACKS, TRANSITION_CALLBACKS
from tai_fsm.definition._indexes import Duplicates, PathTrie
from tai_fsm.definition.locations import Key, SourceMap
from tai_fsm.definition.reserved import RESERVED_ATTRIBUTES, reserved_problem
from tai_fsm.definition.spec import (
    NESTED_SEPARATOR,
    FieldSpec,
    MachineSpec,
    StateSpec,
    TransitionSpec,
)
from tai_fsm.errors import DefinitionError, DefinitionProblem

__all__ = [
    "callback_references",
    "check_callbacks",
    "describe_transition",
    "ensure_valid",
    "leaf_of",
    "validate",
    "walk_states",
]

_MACHINE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}")


#: Sources a message lists when it names a transition; more are counted, not listed (every
#: problem of a transition names it, so listing them all would grow with sources squared).
SHOWN_SOURCES = 10
#: Work allowed for "did you mean" hints in one validation, in characters compared (a hint
#: compares a name with every candidate; each comparison is charged both lengths plus 8).
#: Hints are a courtesy: once the budget is spent, unknown names are reported without one, so
#: thousands of unknown names in a machine of thousands of states stay linear in time.
SUGGESTION_BUDGET = 1_000_000


def describe_transition(transition: TransitionSpec) -> str:
    """``transition 'pay' (pending -> paid)`` — how messages name a transition (sources past
    the tenth are counted: ``(a, b, ..., j, ... (25 sources) -> z)``)."""
    dest = "internal" if transition.dest is None else transition.dest
    sources = transition.source
    source = ", ".join(sources[:SHOWN_SOURCES]) or "no source"
    if len(sources) > SHOWN_SOURCES:
        source += f", ... ({len(sources):,} sources)"
    return f"transition '{transition.trigger}' ({source} -> {dest})"


def ensure_valid(spec: MachineSpec, source: SourceMap | None = None) -> None:
    """Raise one ``DefinitionError`` listing every problem :func:`validate` finds."""
    problems = validate(spec, source)
    if problems:
        raise DefinitionError(problems)


def validate(spec: MachineSpec, source: SourceMap | None = None) -> list[DefinitionProblem]:
    """Every problem in ``spec`` (see the module docstring), located through ``source``."""
    return _Validator(spec, source or SourceMap()).run()


def callback_references(spec: MachineSpec) -> Iterator[tuple[str, str, Key]]:
    """Every callback name in ``spec`` as ``(name, role, source-map key)``, where role reads
    like ``conditions of transition 'pay' (pending -> paid)`` or ``on_enter of state 'paid'``."""
    for path, state in walk_states(spec):
        for kind in STATE_CALLBACKS:
            for name in getattr(state, kind):
                yield name, f"{kind} of state '{path}'", ("state", path, kind)
    for index, transition in enumerate(spec.transitions):
        for kind in TRANSITION_CALLBACKS:
            for name in getattr(transition, kind):
                yield name, f"{kind} of {describe_transition(transition)}", (
                    "transition", index, kind,
                )  # fmt: skip


_POST_COMMIT_ROLES = ("after_commit ", "on_enter_committed ")


def check_callbacks(spec: MachineSpec, cls: type) -> list[DefinitionProblem]:
    """Problems binding ``spec``'s callbacks to ``cls``: each name must resolve with
    ``getattr(cls, name)`` to a routine (function, method, classmethod, staticmethod) — never
    to an import path. Problems are located with ``cls._tai_source_map`` when present.

    Messages (exact):
    ``callback 'X' (ROLE) is not defined on CLS; add a method `def X(self, event): ...```
    ``callback 'X' (ROLE) on CLS is a TYPE, not a method`` — plus the name rules of
    :func:`validate` (dotted paths, special names, Machine attributes)."""
    source = getattr(cls, "_tai_source_map", None)
    if not isinstance(source, SourceMap):
        source = SourceMap()
    problems: list[DefinitionProblem] = []
    missing = object()
    for name, role, key in callback_references(spec):
        bad_name = _callback_name_problem(name, role)
        if bad_name is not None:
            problems.append(source.problem(bad_name, key))
            continue
        attr = getattr(cls, name, missing)
        if attr is missing:
            problems.append(
                source.problem(
                    f"callback '{name}' ({role}) is not defined on {cls.__name__}; "
                    f"add a method `def {name}(self, event): ...`",
                    key,
                )
            )
        elif not inspect.isroutine(attr):
            problems.append(
                source.problem(
                    f"callback '{name}' ({role}) on {cls.__name__} is a "
                    f"{type(attr).__name__}, not a method",
                    key,
                )
            )
        elif inspect.iscoroutinefunction(attr) and not role.startswith(_POST_COMMIT_ROLES):
            problems.append(
                source.problem(
                    f"callback '{name}' ({role}) on {cls.__name__} is async; callbacks that "
                    "run before the commit must be synchronous (only after_commit and "
                    "on_enter_committed hooks may be async)",
                    key,
                )
            )
    return problems


def walk_states(spec: MachineSpec) -> Iterator[tuple[str, StateSpec]]:
    """Every state with its full path, depth first in declaration order (duplicates too)."""

    def walk(states: tuple[StateSpec, ...], prefix: str) -> Iterator[tuple[str, StateSpec]]:
        for state in states:
            path = prefix + state.name
            yield path, state
            yield from walk(state.children, path + NESTED_SEPARATOR)

    return walk(spec.states, "")


def leaf_of(spec: MachineSpec, path: str) -> str | None:
    """The leaf state entered when ``path`` is entered (following compound states' initial
    children), or None if ``path`` or an initial child does not exist."""
    state = spec.find_state(path)
    depth = 0
    while state is not None and state.children and depth < 100:
        if state.initial is None:
            return None
        path = f"{path}{NESTED_SEPARATOR}{state.initial}"
        state = spec.find_state(path)
        depth += 1
    return path if state is not None else None


def _name_problem(kind: str, name: str) -> str | None:
    if not name.isidentifier():
        return f"{kind} '{name}' is not a valid Python identifier; use letters, digits and '_'"
    if keyword.iskeyword(name):
        return f"{kind} '{name}' is a Python keyword; choose another name"
    if name.startswith("_"):
        return f"{kind} '{name}' must not start with '_'"
    return reserved_problem(kind, name)


def _callback_name_problem(name: str, role: str) -> str | None:
    if NESTED_SEPARATOR in name:
        return (
            f"callback '{name}' ({role}) must be the name of a method of the machine class; "
            "dotted import paths are not allowed"
        )
    if not name.isidentifier() or keyword.iskeyword(name):
        return f"callback '{name}' ({role}) is not a valid method name"
    if name.startswith("__") and name.endswith("__"):
        return f"callback '{name}' ({role}) names a special method; name one of your own methods"
    if name in RESERVED_ATTRIBUTES:
        return (
            f"callback '{name}' ({role}) names a tai-fsm Machine attribute; "
            "name one of your own methods"
        )
    return None


def _matches_type(field: FieldSpec, value: Any) -> bool:
    kind = field.type
    if kind == "any":
        return True
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list | tuple)
    return isinstance(value, dict)


class _Validator:
    def __init__(self, spec: MachineSpec, source: SourceMap) -> None:
        self.spec = spec
        self.source = source
        self.problems: list[DefinitionProblem] = []
        self.seen: set[DefinitionProblem] = set()
        self.paths = spec.state_names()
        self.wildcard = spec.wildcard_sources()
        self.path_set = set(self.paths)
        self.paths_size = sum(map(len, self.paths))
        self.budget = SUGGESTION_BUDGET
        self.hints: dict[str, str] = {}
        self.leaves: dict[str, str | None] = {}
        # Transitions by explicit source, and those from "*": what every graph rule reads,
        # instead of scanning all transitions for each state.
        self.by_source: dict[str, list[int]] = {}
        self.starred: list[int] = []
        for index, transition in enumerate(spec.transitions):
            if "*" in transition.source:
                self.starred.append(index)
            for src in dict.fromkeys(transition.source):
                if src != "*":
                    self.by_source.setdefault(src, []).append(index)
        self.sources = PathTrie.of(self.by_source)
        self.exits: dict[str, tuple[str | None, ...]] = {}
        self.pairs: set[tuple[str, str]] | None = None  # (trigger, source), on demand

    def add(self, message: str, key: Key = ()) -> None:
        problem = self.source.problem(message, key)
        if problem not in self.seen:
            self.seen.add(problem)
            self.problems.append(problem)

    def suggest(self, name: str, options: list[str], size: int | None = None) -> str:
        """``; did you mean 'x'?`` (or ``""``) for ``name`` among ``options`` (of total length
        ``size``), while the hint budget lasts (see ``SUGGESTION_BUDGET``)."""
        among_paths = options is self.paths
        if among_paths:
            known = self.hints.get(name)
            if known is not None:
                return known
            size = self.paths_size
        elif size is None:
            size = sum(map(len, options))
        cost = size + (len(name) + 8) * len(options)
        hint = ""
        if cost <= self.budget:
            self.budget -= cost
            close = difflib.get_close_matches(name, options, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
        if among_paths:
            self.hints[name] = hint
        return hint

    def check_json(self, value: Any, what: str, key: Key) -> None:
        """The store's rule (``codec.json_native``): ``value`` must be plain JSON that reads
        back equal — no NaN/Infinity, no integer beyond 64 bits."""
        try:
            json_native(value, what=what, error=DefinitionError)
        except DefinitionError as exc:
            self.add(exc.problems[0].message, key)

    def leaf(self, path: str) -> str | None:
        """``leaf_of(spec, path)``, remembered."""
        if path not in self.leaves:
            self.leaves[path] = leaf_of(self.spec, path)
        return self.leaves[path]

    def run(self) -> list[DefinitionProblem]:
        self.check_machine()
        self.check_states(self.spec.states, "")
        self.check_fields()
        self.check_transitions()
        self.check_graph()
        return self.problems

    # ------------------------------------------------------------------ machine level
    def check_machine(self) -> None:
        spec = self.spec
        if not _MACHINE_NAME.fullmatch(spec.name):
            self.add(
                f"machine name '{spec.name}' is not valid; use up to 100 letters, digits, '_' "
                "and '-', starting with a letter",
                ("name",),
            )
        for key, value in (
            ("version", spec.version),
            ("snapshot_every", spec.snapshot_every),
            ("snapshot_retention", spec.snapshot_retention),
        ):
            if value < 1:
                self.add(f"{key} must be at least 1 (got {value})", (key,))
            else:
                self.check_json(value, key, (key,))
        if not spec.states:
            self.add("the machine declares no states", ("states",))
        elif spec.initial not in self.path_set:
            self.add(
                f"initial state '{spec.initial}' does not exist"
                + self.suggest(spec.initial, self.paths),
                ("initial",),
            )

    def check_states(self, states: tuple[StateSpec, ...], prefix: str) -> None:
        seen: set[str] = set()
        for state in states:
            path = prefix + state.name
            key: Key = ("state", path)
            if state.name in seen:
                self.add(f"state '{path}' is declared more than once", key)
            seen.add(state.name)
            problem = _name_problem("state name", state.name)
            if problem:
                self.add(problem, key)
            if state.children:
                if state.final:
                    self.add(f"final state '{path}' cannot have children", key)
                if state.initial is None:
                    self.add(
                        f"state '{path}' has children but no 'initial'; "
                        "name the child to enter first",
                        key,
                    )
                elif state.initial not in {c.name for c in state.children}:
                    self.add(
                        f"initial child '{state.initial}' of state '{path}' does not exist"
                        + self.suggest(state.initial, [c.name for c in state.children]),
                        (*key, "initial"),
                    )
                self.check_states(state.children, path + NESTED_SEPARATOR)
            elif state.initial is not None:
                self.add(f"state '{path}' sets 'initial' but has no children", (*key, "initial"))
            if state.final and state.timeout is not None:
                self.add(f"final state '{path}' cannot have a timeout", (*key, "timeout"))
            for kind in STATE_CALLBACKS:
                for name in getattr(state, kind):
                    bad = _callback_name_problem(name, f"{kind} of state '{path}'")
                    if bad:
                        self.add(bad, (*key, kind))

    def check_fields(self) -> None:
        seen: set[str] = set()
        for field in self.spec.data_fields:
            key: Key = ("field", field.name)
            if field.name in seen:
                self.add(f"data field '{field.name}' is declared more than once", key)
            seen.add(field.name)
            problem = _name_problem("data field", field.name)
            if problem:
                self.add(problem, key)
            if field.required and field.default is not None:
                self.add(f"data field '{field.name}' is required and has a default; drop one", key)
            if field.default is not None and not _matches_type(field, field.default):
                self.add(
                    f"default of data field '{field.name}' is {field.default!r}, "
                    f"which is not of type {field.type}",
                    key,
                )
            elif field.default is not None:
                self.check_json(
                    field.default, f"default of data field '{field.name}'", (*key, "default")
                )

    # ------------------------------------------------------------------ transitions
    def check_transitions(self) -> None:
        top_states = {s.name for s in self.spec.states}
        named: set[str] = set()
        for index, transition in enumerate(self.spec.transitions):
            key: Key = ("transition", index)
            what = describe_transition(transition)
            if transition.trigger not in named:
                named.add(transition.trigger)
                problem = _name_problem("trigger", transition.trigger)
                if problem is None and transition.trigger in top_states:
                    problem = (
                        f"trigger '{transition.trigger}' has the same name as state "
                        f"'{transition.trigger}'; rename one of them"
                    )
                if problem:
                    self.add(problem, (*key, "trigger"))
            if not transition.source:
                self.add(f"{what} has no source state", (*key, "source"))
            for src in transition.source:
                if src == "*":
                    continue
                state = self.spec.find_state(src)
                if state is None:
                    self.add(
                        f"{what}: source state '{src}' does not exist"
                        + self.suggest(src, self.paths),
                        (*key, "source"),
                    )
                elif state.final:
                    self.add(
                        f"final state '{src}' has an outgoing transition "
                        f"'{transition.trigger}'; remove it or make '{src}' non-final",
                        (*key, "source"),
                    )
            if transition.dest is not None and transition.dest not in self.path_set:
                self.add(
                    f"{what}: dest state '{transition.dest}' does not exist"
                    + self.suggest(transition.dest, self.paths),
                    (*key, "dest"),
                )
            for kind in TRANSITION_CALLBACKS:
                for name in getattr(transition, kind):
                    bad = _callback_name_problem(name, f"{kind} of {what}")
                    if bad:
                        self.add(bad, (*key, kind))
        Duplicates(self.spec.transitions, self.wildcard).report(self.add)

    # ------------------------------------------------------------------ graph
    def exits_of(self, source: str, indices: list[int]) -> tuple[str | None, ...]:
        """Up to two distinct leaves that the transitions ``indices`` (from ``source``) lead
        to: enough to tell whether one of them leads to a leaf other than a given one."""
        found = self.exits.get(source)
        if found is None:
            targets: list[str | None] = []
            for index in indices:
                dest = self.spec.transitions[index].dest
                if dest is None:
                    continue
                target = self.leaf(dest)
                if target not in targets:
                    targets.append(target)
                    if len(targets) == 2:
                        break
            found = self.exits[source] = tuple(targets)
        return found

    def check_graph(self) -> None:
        spec = self.spec
        transitions = spec.transitions
        start = self.leaf(spec.initial) if spec.initial in self.path_set else None
        if start is not None:
            # Reachable leaves: a transition applies in a leaf when it is from "*" or from the
            # leaf or one of its ancestors. Where it leads does not depend on the leaf, so
            # each group of transitions (those from "*", those from one source) is followed
            # once, when the first leaf it applies in is reached.
            reached = {start}
            frontier = [start]
            followed: set[str] = set()
            groups: list[list[int]] = [self.starred]
            while frontier:
                leaf = frontier.pop()
                for src in self.sources.prefixes(leaf):
                    if src not in followed:
                        followed.add(src)
                        groups.append(self.by_source[src])
                while groups:
                    for index in groups.pop():
                        dest = transitions[index].dest
                        target = None if dest is None else self.leaf(dest)
                        if target is not None and target not in reached:
                            reached.add(target)
                            frontier.append(target)
            # A state is active when it is a reached leaf or an ancestor of one; report the
            # inactive states whose parent is active (or that are top level).
            active = PathTrie.of(reached)
            for path in self.paths:
                parts = path.split(NESTED_SEPARATOR)
                depth = sum(1 for _ in active.along(path))
                parent = path.rpartition(NESTED_SEPARATOR)[0]
                if depth < len(parts) and (not parent or depth >= len(parts) - 1):
                    self.add(
                        f"state '{path}' is unreachable from the initial state '{spec.initial}'",
                        ("state", path),
                    )
        starred_exits = self.exits_of("*", self.starred) if self.starred else ()
        for path, state in walk_states(spec):
            if state.timeout is not None and not state.final:
                self.check_timeout(path, state.timeout.trigger, state.timeout.after)
            if state.children or state.final:
                continue
            exits = [starred_exits] + [
                self.exits_of(src, self.by_source[src]) for src in self.sources.prefixes(path)
            ]
            if not any(target != path for found in exits for target in found):
                self.add(
                    f"state '{path}' is not final and has no transition out of it; "
                    "add a transition or mark it final",
                    ("state", path),
                )

    def check_timeout(self, path: str, trigger: str, after: timedelta) -> None:
        key: Key = ("state", path, "timeout")
        if after <= timedelta(0):
            self.add(f"timeout of state '{path}' must be longer than 0", key)
        if not self.timeout_applies(path, trigger):
            self.add(
                f"timeout of state '{path}' fires '{trigger}', but no transition '{trigger}' "
                f"leaves '{path}'",
                key,
            )

    def timeout_applies(self, path: str, trigger: str) -> bool:
        """Some transition ``trigger`` is from ``"*"``, from ``path`` or an ancestor, or from
        a state below ``path``."""
        if self.pairs is None:
            transitions = self.spec.transitions
            self.pairs = {(transitions[i].trigger, "*") for i in self.starred}
            for src, indices in self.by_source.items():
                triggers = {transitions[i].trigger for i in indices}
                self.pairs.update((t, src) for t in triggers)
                nodes = list(self.sources.along(src))
                for node in nodes[:-1]:
                    if node.below is None:
                        node.below = set()
                    node.below.update(triggers)
        if (trigger, "*") in self.pairs:
            return True
        node = self.sources
        for part in path.split(NESTED_SEPARATOR):
            found = node.children.get(part)
            if found is None:
                return False
            node = found
            if node.key is not None and (trigger, node.key) in self.pairs:
                return True
        return node.below is not None and trigger in node.below
