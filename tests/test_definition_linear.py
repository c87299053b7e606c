"""Validation is linear in the definition's size, and says exactly what it always said.

* An oracle: ``_Reference`` is the validator as it was before transitions were indexed by
  source (every rule rescanning every transition for every state, O(states x transitions)),
  kept verbatim; random specs — nested and duplicate states, dotted names, ``"*"``, guards,
  timeouts, unknown names — must get exactly its problems, in its order.
* Structure, not time (the project has no timed assertions): on definitions 4x larger,
  reading, validating and declaring a class make ~4x the function calls (the reference: ~16x).
* ``class_line`` (where a class DSL machine is declared) agrees with ``inspect``.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tai_fsm as fsm
from tai_fsm.definition._common import STATE_CALLBACKS, TRANSITION_CALLBACKS
from tai_fsm.definition.dsl import _lookup_path, _with_hooks
from tai_fsm.definition.locations import Key, SourceMap, class_line
from tai_fsm.definition.spec import (
    NESTED_SEPARATOR,
    MachineSpec,
    StateSpec,
    TimeoutSpec,
    TransitionSpec,
    index_states,
)
from tai_fsm.definition.validate import (
    _MACHINE_NAME,
    _callback_name_problem,
    _matches_type,
    _name_problem,
    describe_transition,
    validate,
    walk_states,
)
from tai_fsm.definition.yaml_reader import read_machine_text
from tai_fsm.errors import DefinitionProblem


# ---------------------------------------------------------------------- the reference
def _find_state(spec: MachineSpec, path: str) -> StateSpec | None:
    states = spec.states
    found: StateSpec | None = None
    for part in path.split(NESTED_SEPARATOR):
        found = next((s for s in states if s.name == part), None)
        if found is None:
            return None
        states = found.children
    return found


def _leaf_of(spec: MachineSpec, path: str) -> str | None:
    state = _find_state(spec, path)
    depth = 0
    while state is not None and state.children and depth < 100:
        if state.initial is None:
            return None
        path = f"{path}{NESTED_SEPARATOR}{state.initial}"
        state = _find_state(spec, path)
        depth += 1
    return path if state is not None else None


def _ancestors(path: str) -> list[str]:
    parts = path.split(NESTED_SEPARATOR)
    return [NESTED_SEPARATOR.join(parts[: i + 1]) for i in range(len(parts))]


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class _Reference:
    def __init__(self, spec: MachineSpec, source: SourceMap) -> None:
        self.spec = spec
        self.source = source
        self.problems: list[DefinitionProblem] = []
        self.paths = spec.state_names()
        self.wildcard = spec.wildcard_sources()
        self.path_set = set(self.paths)

    def add(self, message: str, key: Key = ()) -> None:
        problem = self.source.problem(message, key)
        if problem not in self.problems:
            self.problems.append(problem)

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
        if not spec.states:
            self.add("the machine declares no states", ("states",))
        elif spec.initial not in self.path_set:
            self.add(
                f"initial state '{spec.initial}' does not exist"
                + _suggest(spec.initial, self.paths),
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
                        + _suggest(state.initial, [c.name for c in state.children]),
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

    # ------------------------------------------------------------------ transitions
    def check_transitions(self) -> None:
        top_states = {s.name for s in self.spec.states}
        named: set[str] = set()
        pairs: dict[tuple[str, str], list[int]] = {}
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
                state = _find_state(self.spec, src)
                if state is None:
                    self.add(
                        f"{what}: source state '{src}' does not exist" + _suggest(src, self.paths),
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
                    + _suggest(transition.dest, self.paths),
                    (*key, "dest"),
                )
            for kind in TRANSITION_CALLBACKS:
                for name in getattr(transition, kind):
                    bad = _callback_name_problem(name, f"{kind} of {what}")
                    if bad:
                        self.add(bad, (*key, kind))
            sources = self._expanded_sources(transition.source)
            for src in sources:
                pairs.setdefault((transition.trigger, src), []).append(index)
        self.check_duplicates(pairs)

    def _expanded_sources(self, source: tuple[str, ...]) -> list[str]:
        """The sources a transition is attached to; ``"*"`` as the engine expands it."""
        if "*" not in source:
            return list(dict.fromkeys(source))
        return list(dict.fromkeys([s for s in source if s != "*"] + self.wildcard))

    def check_duplicates(self, pairs: dict[tuple[str, str], list[int]]) -> None:
        """A later transition is reported only when an earlier one shadows it from EVERY
        source it is attached to (then it can never fire)."""
        transitions = self.spec.transitions
        shadowed: dict[int, list[str]] = {}
        for (trigger, src), indices in pairs.items():
            for position, later in enumerate(indices):
                guard = (transitions[later].conditions, transitions[later].unless)
                for earlier in indices[:position]:
                    earlier_guard = (transitions[earlier].conditions, transitions[earlier].unless)
                    if earlier_guard == ((), ()):
                        message = (
                            f"duplicate transition '{trigger}' from '{src}': an earlier one "
                            "without conditions always wins, so this one can never fire; "
                            "add conditions to the earlier one or remove this one"
                        )
                    elif earlier_guard == guard:
                        message = (
                            f"duplicate transition '{trigger}' from '{src}' with the same "
                            "conditions as an earlier one; it can never fire"
                        )
                    else:
                        continue
                    shadowed.setdefault(later, []).append(message)
                    break
        for later, messages in shadowed.items():
            attached = self._expanded_sources(transitions[later].source)
            if len(messages) >= len(attached):
                self.add(messages[0], ("transition", later))

    # ------------------------------------------------------------------ graph
    def applies(self, transition: TransitionSpec, leaf: str) -> bool:
        return "*" in transition.source or any(a in transition.source for a in _ancestors(leaf))

    def check_graph(self) -> None:
        spec = self.spec
        start = _leaf_of(spec, spec.initial) if spec.initial in self.path_set else None
        if start is not None:
            reached = {start}
            frontier = [start]
            while frontier:
                leaf = frontier.pop()
                for transition in spec.transitions:
                    if transition.dest is None or not self.applies(transition, leaf):
                        continue
                    target = _leaf_of(spec, transition.dest)
                    if target is not None and target not in reached:
                        reached.add(target)
                        frontier.append(target)
            active = {a for leaf in reached for a in _ancestors(leaf)}
            for path in self.paths:
                parent = path.rpartition(NESTED_SEPARATOR)[0]
                if path not in active and (not parent or parent in active):
                    self.add(
                        f"state '{path}' is unreachable from the initial state '{spec.initial}'",
                        ("state", path),
                    )
        for path, state in walk_states(spec):
            if state.timeout is not None and not state.final:
                self.check_timeout(path, state.timeout.trigger, state.timeout.after)
            if state.children or state.final:
                continue
            if not any(
                t.dest is not None and self.applies(t, path) and _leaf_of(spec, t.dest) != path
                for t in spec.transitions
            ):
                self.add(
                    f"state '{path}' is not final and has no transition out of it; "
                    "add a transition or mark it final",
                    ("state", path),
                )

    def check_timeout(self, path: str, trigger: str, after: timedelta) -> None:
        key: Key = ("state", path, "timeout")
        if after <= timedelta(0):
            self.add(f"timeout of state '{path}' must be longer than 0", key)
        inside = path + NESTED_SEPARATOR
        for transition in self.spec.transitions:
            if transition.trigger != trigger:
                continue
            if self.applies(transition, path) or any(
                s.startswith(inside) for s in transition.source
            ):
                return
        self.add(
            f"timeout of state '{path}' fires '{trigger}', but no transition '{trigger}' "
            f"leaves '{path}'",
            key,
        )


# ---------------------------------------------------------------------- random specs
NAMES = ["a", "b", "c", "go", "a.b", "*", "_x", ".b", "a."]
TRIGGERS = ["go", "stop", "b", "class"]
GUARDS = [(), ("ok",), ("no",)]


@st.composite
def _states(draw: st.DrawFn, depth: int) -> tuple[StateSpec, ...]:
    found = []
    for _ in range(draw(st.integers(0, 4 if depth == 0 else 3))):
        children = draw(_states(depth + 1)) if depth < 2 and draw(st.booleans()) else ()
        names = [c.name for c in children] + ["zz"]
        timeout = None
        if draw(st.integers(0, 3)) == 0:
            after = timedelta(seconds=draw(st.sampled_from([0, 30])))
            timeout = TimeoutSpec(after=after, trigger=draw(st.sampled_from(TRIGGERS)))
        found.append(
            StateSpec(
                name=draw(st.sampled_from(NAMES)),
                final=draw(st.integers(0, 4)) == 0,
                timeout=timeout,
                children=children,
                initial=draw(st.sampled_from([None, *names])) if children else None,
                on_enter=draw(st.sampled_from([(), ("ok",), ("os.system",)])),
            )
        )
    return tuple(found)


@st.composite
def specs(draw: st.DrawFn) -> MachineSpec:
    states = draw(_states(0))
    skeleton = MachineSpec(name="m", initial="a", states=states)
    paths = [*dict.fromkeys(skeleton.state_names()), "zz", "a.zz", "*"]
    transitions = []
    for _ in range(draw(st.integers(0, 12))):
        source = draw(st.lists(st.sampled_from(paths), max_size=4))
        if draw(st.integers(0, 3)) == 0:
            source.append("*")
        transitions.append(
            TransitionSpec(
                trigger=draw(st.sampled_from(TRIGGERS)),
                source=tuple(source),
                dest=draw(st.sampled_from([None, *paths[:-1]])),
                conditions=draw(st.sampled_from(GUARDS)),
                unless=draw(st.sampled_from(GUARDS[:2])),
            )
        )
    return skeleton.model_copy(
        update={"initial": draw(st.sampled_from(paths)), "transitions": tuple(transitions)}
    )


def _marked(spec: MachineSpec) -> SourceMap:
    """A source map placing every state and transition on its own line (so no two problems
    collapse into one), as the YAML reader does."""
    source = SourceMap(file="m.yaml")
    for line, (path, _) in enumerate(walk_states(spec), start=1):
        source.marks.setdefault(("state", path), (line, 1))
    for index in range(len(spec.transitions)):
        source.marks[("transition", index)] = (1000 + index, 1)
    return source


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_same_problems_as_the_reference(spec: MachineSpec) -> None:
    for source in (SourceMap(), _marked(spec)):
        expected = [str(p) for p in _Reference(spec, source).run()]
        assert [str(p) for p in validate(spec, source)] == expected


def _spec(*transitions: tuple[str, tuple[str, ...], str | None, tuple[str, ...]]) -> MachineSpec:
    return MachineSpec(
        name="m",
        initial="a",
        states=(StateSpec(name="a"), StateSpec(name="b"), StateSpec(name="c", final=True)),
        transitions=tuple(
            TransitionSpec(trigger=t, source=s, dest=d, conditions=c) for t, s, d, c in transitions
        ),
    )


EXAMPLES = [
    # 'a' is covered both unguarded and guarded before the guarded '*' one; 'b' is not
    _spec(("go", ("a",), "c", ()), ("go", ("a",), "c", ("ok",)), ("go", ("*",), "c", ("ok",))),
    _spec(("go", ("a",), "c", ()), ("go", ("b",), "c", ("ok",)), ("go", ("*",), "c", ("ok",))),
    _spec(("go", ("b", "*"), "c", ()), ("go", ("*",), "b", ()), ("go", ("a", "b"), "c", ())),
    _spec(("go", ("c", "*"), "c", ()), ("go", ("*",), "b", ()), ("go", ("b", "a"), "c", ())),
    _spec(("go", ("*",), "c", ("ok",)), ("go", ("*",), "b", ("ok",)), ("go", ("*",), "a", ())),
]


@pytest.mark.parametrize("spec", EXAMPLES)
def test_same_problems_as_the_reference_examples(spec: MachineSpec) -> None:
    for source in (SourceMap(), _marked(spec)):
        expected = [str(p) for p in _Reference(spec, source).run()]
        assert [str(p) for p in validate(spec, source)] == expected


# ---------------------------------------------------------------------- linear, by counting
def _rich_chain(n: int) -> str:
    """``n`` states in a chain (each with a timeout and a guarded and an unguarded way on), a
    compound state with ``n // 4`` children, a ``"*"`` transition and a guarded duplicate
    group: every rule has work to do."""
    lines = ["name: chain", "initial: s0", "states:"]
    for i in range(n):
        lines.append(
            f"  - {{name: s{i}, timeout: {{after: 1h, trigger: tick{i}}}, on_enter: [log]}}"
        )
    lines += ["  - name: group", "    initial: g0", "    children:"]
    lines += [f"      - g{i}" for i in range(n // 4)]
    lines += ["  - {name: done, final: true}", "  - {name: aborted, final: true}", "transitions:"]
    for i in range(n - 1):
        lines.append(f"  - {{trigger: next, source: s{i}, dest: s{i + 1}, conditions: [ok]}}")
        lines.append(f"  - {{trigger: tick{i}, source: s{i}, dest: s{i + 1}}}")
    lines.append(f"  - {{trigger: next, source: s{n - 1}, dest: group}}")
    lines.append(f"  - {{trigger: tick{n - 1}, source: s{n - 1}, dest: group}}")
    for i in range(n // 4 - 1):
        lines.append(f"  - {{trigger: step, source: group.g{i}, dest: group.g{i + 1}}}")
    lines.append("  - {trigger: finish, source: group, dest: done}")
    lines.append("  - {trigger: abort, source: [s0, s1], dest: aborted, unless: [ok]}")
    lines.append("  - {trigger: abort, source: '*', dest: aborted}")
    return "\n".join(lines) + "\n"


def _calls(work: Callable[[], object]) -> int:
    """Python and C function calls made by ``work()``: a deterministic measure of work."""
    count = 0

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(None)
    return count


def test_validation_work_grows_linearly() -> None:
    small, large = (read_machine_text(_rich_chain(n)) for n in (60, 240))
    growth = _calls(lambda: validate(*large)) / _calls(lambda: validate(*small))
    assert 3.5 < growth < 4.5, growth  # 4x the definition, ~4x the work
    # the test has teeth: the reference grows with the square
    small, large = (read_machine_text(_rich_chain(n)) for n in (30, 120))
    reference = _calls(lambda: _Reference(*large).run()) / _calls(lambda: _Reference(*small).run())
    assert reference > 10, reference


def test_reading_work_grows_linearly() -> None:
    small, large = _rich_chain(60), _rich_chain(240)
    growth = _calls(lambda: read_machine_text(large)) / _calls(lambda: read_machine_text(small))
    assert 3.5 < growth < 4.5, growth


def _dsl_chain(n: int) -> type[fsm.Machine]:
    """A class DSL chain of ``n`` states, each with a decorated hook on a state and a trigger."""
    namespace: dict[str, Any] = {"name": "chain", "__module__": __name__}
    states = [fsm.State(initial=i == 0, final=i == n - 1) for i in range(n)]
    for i, state in enumerate(states):
        namespace[f"s{i}"] = state
    for i in range(n - 1):
        namespace[f"t{i}"] = states[i].to(states[i + 1])

        def hook(self: Any, event: Any) -> None: ...

        hook.__name__ = f"h{i}"
        namespace[f"h{i}"] = fsm.on_enter(states[i + 1])(fsm.after(f"t{i}")(hook))
    return type("Chain", (fsm.Machine,), namespace)


def test_class_dsl_work_grows_linearly() -> None:
    assert len(_dsl_chain(10).spec.transitions) == 9
    growth = _calls(lambda: _dsl_chain(400)) / _calls(lambda: _dsl_chain(100))
    assert 3.5 < growth < 4.5, growth


# ---------------------------------------------------------------------- class_line
@dataclasses.dataclass
class Decorated:
    x: int = 0


class Outer:
    class Inner:
        pass


def _make() -> type:
    class Local:
        pass

    return Local


def _make_again() -> type:
    class Local:  # same qualname as _make's but another function: found apart
        pass

    return Local


@pytest.mark.parametrize(
    "cls", [Decorated, Outer, Outer.Inner, _make(), _make_again(), fsm.Machine, int]
)
def test_class_line_agrees_with_inspect(cls: type) -> None:
    try:
        expected: int | None = inspect.getsourcelines(cls)[1]
    except (OSError, TypeError):
        expected = None
    assert class_line(cls) == expected


# ---------------------------------------------------------------------- class DSL hooks
def _old_find(states: tuple[StateSpec, ...], path: str) -> bool:
    head, _, rest = path.partition(NESTED_SEPARATOR)
    for state in states:
        if state.name == head:
            return not rest or _old_find(state.children, rest)
    return False


def _old_update_state(
    states: tuple[StateSpec, ...], path: str, kind: str, name: str
) -> tuple[StateSpec, ...]:
    head, _, rest = path.partition(NESTED_SEPARATOR)
    updated: list[StateSpec] = []
    for state in states:
        if state.name == head:
            if rest:
                state = state.model_copy(
                    update={"children": _old_update_state(state.children, rest, kind, name)}
                )
            else:
                state = state.model_copy(update={kind: (*getattr(state, kind), name)})
        updated.append(state)
    return tuple(updated)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_states(0), st.data())
def test_state_hooks_land_where_they_always_did(
    states: tuple[StateSpec, ...], data: st.DataObject
) -> None:
    """Hooks are now gathered and applied in one walk; they must land exactly where the old
    per-hook lookup and tree rebuild put them (duplicate names, dotted names, trailing dots)."""
    paths = [*MachineSpec(name="m", initial="a", states=states).state_names(), "zz", "a.", "a.."]
    hooks = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(paths),
                st.sampled_from(STATE_CALLBACKS),
                st.sampled_from(["h1", "h2"]),
            )
        )
    )
    expected, known = states, index_states(states)
    gathered: dict[str, dict[str, list[str]]] = {}
    for path, kind, name in hooks:
        found = _old_find(states, path)
        assert (_lookup_path(path) in known) == found
        if found:
            expected = _old_update_state(expected, path, kind, name)
            gathered.setdefault(_lookup_path(path), {}).setdefault(kind, []).append(name)
    assert _with_hooks(states, gathered, "") == expected
