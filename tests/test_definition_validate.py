"""Build-time validation: each rule with a broken machine file and its exact message(s)."""

from __future__ import annotations

import pytest

from tai_fsm.definition.yaml_reader import read_machine_text
from tai_fsm.errors import DefinitionError

BASE = """\
name: m
initial: a
states:
  - a
  - b
  - {name: c, final: true}
transitions:
  - {trigger: go, source: a, dest: b}
  - {trigger: finish, source: b, dest: c}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        read_machine_text(text, file="m.yaml")
    assert str(info.value) == "\n".join(str(p) for p in info.value.problems)
    return [str(p) for p in info.value.problems]


def test_base_machine_is_valid() -> None:
    spec, _ = read_machine_text(BASE, file="m.yaml")
    assert spec.state_names() == ["a", "b", "c"]


CASES: dict[str, tuple[str, list[str]]] = {
    "initial state missing": (
        BASE.replace("initial: a", "initial: x"),
        ["m.yaml:2:10: initial state 'x' does not exist"],
    ),
    "initial state typo suggests": (
        BASE.replace("initial: a", "initial: bb"),
        ["m.yaml:2:10: initial state 'bb' does not exist; did you mean 'b'?"],
    ),
    "source state missing": (
        BASE.replace("source: a, dest: b", "source: aa, dest: b"),
        [
            "m.yaml:8:27: transition 'go' (aa -> b): source state 'aa' does not exist; "
            "did you mean 'a'?",
            "m.yaml:5:5: state 'b' is unreachable from the initial state 'a'",
            "m.yaml:6:5: state 'c' is unreachable from the initial state 'a'",
            "m.yaml:4:5: state 'a' is not final and has no transition out of it; "
            "add a transition or mark it final",
        ],
    ),
    "dest state missing": (
        BASE.replace("dest: c", "dest: cc"),
        [
            "m.yaml:9:40: transition 'finish' (b -> cc): dest state 'cc' does not exist; "
            "did you mean 'c'?",
            "m.yaml:6:5: state 'c' is unreachable from the initial state 'a'",
        ],
    ),
    "unreachable state": (
        BASE.replace("  - b\n", "  - b\n  - d\n") + "  - {trigger: leave, source: d, dest: c}\n",
        ["m.yaml:6:5: state 'd' is unreachable from the initial state 'a'"],
    ),
    "non-final state with no way out": (
        BASE.replace("source: b, dest: c", "source: a, dest: c"),
        [
            "m.yaml:5:5: state 'b' is not final and has no transition out of it; "
            "add a transition or mark it final"
        ],
    ),
    "duplicate trigger and source without conditions": (
        BASE + "  - {trigger: go, source: a, dest: c}\n",
        [
            "m.yaml:10:5: duplicate transition 'go' from 'a': an earlier one without "
            "conditions always wins, so this one can never fire; add conditions to the "
            "earlier one or remove this one"
        ],
    ),
    "duplicate with the same conditions": (
        BASE.replace("dest: b}", "dest: b, conditions: [ok]}")
        + "  - {trigger: go, source: a, dest: c, conditions: [ok]}\n",
        [
            "m.yaml:10:5: duplicate transition 'go' from 'a' with the same conditions as an "
            "earlier one; it can never fire"
        ],
    ),
    "a wildcard without conditions shadows a later transition": (
        BASE
        + "  - {trigger: reset, source: '*', dest: a}\n"
        + "  - {trigger: reset, source: b, dest: a}\n",
        [
            "m.yaml:11:5: duplicate transition 'reset' from 'b': an earlier one without "
            "conditions always wins, so this one can never fire; add conditions to the "
            "earlier one or remove this one"
        ],
    ),
    "outgoing transition from a final state": (
        BASE + "  - {trigger: reopen, source: c, dest: a}\n",
        [
            "m.yaml:10:31: final state 'c' has an outgoing transition 'reopen'; remove it "
            "or make 'c' non-final"
        ],
    ),
    "trigger is a keyword": (
        BASE.replace("trigger: go", "trigger: class"),
        ["m.yaml:8:15: trigger 'class' is a Python keyword; choose another name"],
    ),
    "trigger is not an identifier": (
        BASE.replace("trigger: go", "trigger: go-now"),
        [
            "m.yaml:8:15: trigger 'go-now' is not a valid Python identifier; "
            "use letters, digits and '_'"
        ],
    ),
    "trigger clashes with the instance API": (
        BASE.replace("trigger: go", "trigger: may_trigger"),
        [
            "m.yaml:8:15: trigger 'may_trigger' is reserved: it would shadow the Machine "
            "attribute 'may_trigger'; choose another name"
        ],
    ),
    "trigger starts with an underscore": (
        BASE.replace("trigger: go", "trigger: _go"),
        ["m.yaml:8:15: trigger '_go' must not start with '_'"],
    ),
    "trigger named like a state": (
        BASE.replace("trigger: go", "trigger: b"),
        ["m.yaml:8:15: trigger 'b' has the same name as state 'b'; rename one of them"],
    ),
    "state clashes with the instance API": (
        BASE.replace("  - b\n", "  - data\n")
        .replace("dest: b", "dest: data")
        .replace("source: b", "source: data"),
        [
            "m.yaml:5:5: state name 'data' is reserved: it would shadow the Machine "
            "attribute 'data'; choose another name"
        ],
    ),
    "state is a keyword": (
        BASE.replace("  - b\n", "  - pass\n")
        .replace("dest: b", "dest: pass")
        .replace("source: b", "source: pass"),
        ["m.yaml:5:5: state name 'pass' is a Python keyword; choose another name"],
    ),
    "state declared twice": (
        BASE.replace("  - b\n", "  - b\n  - b\n"),
        ["m.yaml:6:5: state 'b' is declared more than once"],
    ),
    "data field is a keyword": (
        BASE + "data:\n  import: {type: integer}\n",
        ["m.yaml:11:11: data field 'import' is a Python keyword; choose another name"],
    ),
    "data field clashes with the instance API": (
        BASE + "data:\n  state: {type: string}\n",
        [
            "m.yaml:11:10: data field 'state' is reserved: it would shadow the Machine "
            "attribute 'state'; choose another name"
        ],
    ),
    "data field default of the wrong type": (
        BASE + "data:\n  n: {type: integer, default: x}\n",
        ["m.yaml:11:6: default of data field 'n' is 'x', which is not of type integer"],
    ),
    "required data field with a default": (
        BASE + "data:\n  n: {type: integer, default: 1, required: true}\n",
        ["m.yaml:11:6: data field 'n' is required and has a default; drop one"],
    ),
    "snapshot policy below 1": (
        BASE + "snapshot_every: 0\nsnapshot_retention: 0\n",
        [
            "m.yaml:10:17: snapshot_every must be at least 1 (got 0)",
            "m.yaml:11:21: snapshot_retention must be at least 1 (got 0)",
        ],
    ),
    "version below 1": (
        BASE + "version: 0\n",
        ["m.yaml:10:10: version must be at least 1 (got 0)"],
    ),
    "machine name with a space": (
        BASE.replace("name: m", "name: 'my machine'"),
        [
            "m.yaml:1:7: machine name 'my machine' is not valid; use up to 100 letters, "
            "digits, '_' and '-', starting with a letter"
        ],
    ),
    "timeout trigger does not leave the state": (
        BASE.replace("  - b\n", "  - {name: b, timeout: {after: 5m, trigger: expire}}\n"),
        ["m.yaml:5:24: timeout of state 'b' fires 'expire', but no transition 'expire' leaves 'b'"],
    ),
    "timeout of zero": (
        BASE.replace("  - b\n", "  - {name: b, timeout: {after: 0s, trigger: finish}}\n"),
        ["m.yaml:5:24: timeout of state 'b' must be longer than 0"],
    ),
    "final state with a timeout": (
        BASE.replace(
            "{name: c, final: true}", "{name: c, final: true, timeout: {after: 1s, trigger: go}}"
        ),
        ["m.yaml:6:37: final state 'c' cannot have a timeout"],
    ),
    "compound state without initial": (
        BASE.replace("  - b\n", "  - {name: b, children: [x, y]}\n"),
        [
            "m.yaml:5:5: state 'b' has children but no 'initial'; name the child to enter first",
            "m.yaml:5:5: state 'b' is unreachable from the initial state 'a'",
            "m.yaml:6:5: state 'c' is unreachable from the initial state 'a'",
        ],
    ),
    "compound state with an unknown initial child": (
        BASE.replace("  - b\n", "  - {name: b, initial: z, children: [x, y]}\n"),
        [
            "m.yaml:5:24: initial child 'z' of state 'b' does not exist",
            "m.yaml:5:5: state 'b' is unreachable from the initial state 'a'",
            "m.yaml:6:5: state 'c' is unreachable from the initial state 'a'",
        ],
    ),
    "initial on a state without children": (
        BASE.replace("  - b\n", "  - {name: b, initial: q}\n"),
        ["m.yaml:5:24: state 'b' sets 'initial' but has no children"],
    ),
    "transition without a source": (
        BASE.replace("source: a, dest: b", "source: [], dest: b"),
        [
            "m.yaml:8:27: transition 'go' (no source -> b) has no source state",
            "m.yaml:5:5: state 'b' is unreachable from the initial state 'a'",
            "m.yaml:6:5: state 'c' is unreachable from the initial state 'a'",
            "m.yaml:4:5: state 'a' is not final and has no transition out of it; "
            "add a transition or mark it final",
        ],
    ),
    "callback given as a dotted import path": (
        BASE.replace("dest: b}", "dest: b, conditions: [os.system]}"),
        [
            "m.yaml:8:51: callback 'os.system' (conditions of transition 'go' (a -> b)) must "
            "be the name of a method of the machine class; dotted import paths are not allowed"
        ],
    ),
    "callback naming the instance API": (
        BASE.replace("dest: b}", "dest: b, before: [trigger]}"),
        [
            "m.yaml:8:47: callback 'trigger' (before of transition 'go' (a -> b)) names a "
            "tai-fsm Machine attribute; name one of your own methods"
        ],
    ),
    "callback naming a special method": (
        BASE.replace("dest: b}", "dest: b, before: [__init__]}"),
        [
            "m.yaml:8:47: callback '__init__' (before of transition 'go' (a -> b)) names a "
            "special method; name one of your own methods"
        ],
    ),
}


def _location(line: str) -> tuple[int, int]:
    _, row, column, _ = line.split(":", 3)
    return int(row), int(column)


@pytest.mark.parametrize("text, expected", list(CASES.values()), ids=list(CASES))
def test_rule(text: str, expected: list[str]) -> None:
    """Exact messages, reported in file order."""
    assert problems(text) == sorted(expected, key=_location)


def test_guarded_duplicates_are_allowed() -> None:
    """The first transition whose conditions pass wins, as in ``transitions``: a guarded
    transition followed by an unguarded fallback for the same (trigger, source) is valid."""
    text = BASE.replace("dest: b}", "dest: b, conditions: [ok]}") + (
        "  - {trigger: go, source: a, dest: c, unless: [ok]}\n"
        "  - {trigger: go, source: a, dest: c}\n"
    )
    spec, _ = read_machine_text(text, file="m.yaml")
    assert [t.dest for t in spec.transitions if t.trigger == "go"] == ["b", "c", "c"]


def test_wildcard_source_does_not_count_as_leaving_a_final_state() -> None:
    spec, _ = read_machine_text(BASE + "  - {trigger: reset, source: '*', dest: a}\n")
    assert spec.transitions[-1].source == ("*",)


def test_parent_transitions_count_for_children() -> None:
    text = """\
name: nested
initial: work
states:
  - name: work
    initial: one
    children: [one, two]
  - {name: done, final: true}
transitions:
  - {trigger: next, source: work.one, dest: work.two}
  - {trigger: stop, source: work, dest: done}
"""
    spec, _ = read_machine_text(text)
    assert spec.state_names() == ["work", "work.one", "work.two", "done"]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        BASE.replace("initial: a", "initial: x").replace("trigger: go", "trigger: class")
        + "snapshot_every: 0\n"
    )
    assert problems(text) == [
        "m.yaml:2:10: initial state 'x' does not exist",
        "m.yaml:8:15: trigger 'class' is a Python keyword; choose another name",
        "m.yaml:10:17: snapshot_every must be at least 1 (got 0)",
    ]


def test_shape_problems_are_reported_together() -> None:
    text = BASE.replace("dest: b}", "dst: b}").replace("final: true", "final: yes")
    assert problems(text) == [
        "m.yaml:6:22: 'final' of state 'c' must be true or false, got string 'yes' "
        "(YAML 1.1 yes/no/on/off are plain strings in machine files)",
        "m.yaml:8:5: missing key 'dest' in transition; add 'dest: <state>' "
        "(or 'dest: null' for an internal transition)",
        "m.yaml:8:30: unknown key 'dst' in transition; did you mean 'dest'?",
    ]


def test_a_transition_shadowed_from_only_some_sources_is_not_reported() -> None:
    # 'go' from a is taken by the first transition, but from b the wildcard one fires
    text = BASE + "  - {trigger: go, source: '*', dest: c}\n"
    spec, _ = read_machine_text(text, file="m.yaml")
    assert spec.wildcard_sources() == ["a", "b"]
