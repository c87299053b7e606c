"""The YAML reader: safe loading, YAML 1.2 scalars, located errors, the full format."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tai_fsm.definition import yaml_nodes
from tai_fsm.definition.spec import FieldSpec, StateSpec, TimeoutSpec, TransitionSpec
from tai_fsm.definition.yaml_nodes import compose_text
from tai_fsm.definition.yaml_reader import read_machine_file, read_machine_text, to_plain
from tai_fsm.errors import DefinitionError

SWITCH = """\
name: switch
initial: off
states: [off, on, yes, no, y, n]
transitions:
  - {trigger: flip, source: off, dest: on}
  - {trigger: flop, source: on, dest: yes}
  - {trigger: flap, source: yes, dest: no}
  - {trigger: flup, source: no, dest: y}
  - {trigger: flep, source: y, dest: n}
  - {trigger: reset, source: n, dest: off}
"""


def error_lines(text: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        read_machine_text(text, file="f.yaml")
    return [str(p) for p in info.value.problems]


def test_yaml11_booleans_stay_strings() -> None:
    spec, _ = read_machine_text(SWITCH)
    assert spec.initial == "off"
    assert spec.state_names() == ["off", "on", "yes", "no", "y", "n"]
    assert spec.transitions[0].source == ("off",) and spec.transitions[0].dest == "on"


def test_yaml12_scalars() -> None:
    root = compose_text(
        "a: [true, False, 0777, 0o17, 0x1f, 1.5, 1e3, ~, null, '', 1:30, 2024-01-01]"
    )
    assert to_plain(root) == {
        "a": [True, False, 777, 15, 31, 1.5, 1000.0, None, None, "", "1:30", "2024-01-01"]
    }


@pytest.mark.parametrize(
    "payload",
    [
        "!!python/object/apply:os.system ['touch /tmp/tai-fsm-pwned']",
        "!!python/name:os.system",
        "!!python/object/new:os.system [x]",
        "!!binary aGVsbG8=",
        "!!set {a, b}",
        "!custom 1",
    ],
)
def test_tags_that_construct_objects_are_rejected(payload: str, tmp_path: Path) -> None:
    marker = Path("/tmp/tai-fsm-pwned")
    marker.unlink(missing_ok=True)
    found = error_lines(f"name: m\ndescription: {payload}\n")
    assert len(found) == 1
    assert found[0].startswith("f.yaml:2:14: unsupported YAML tag '")
    assert found[0].endswith(
        "': machine files hold plain data only (mappings, lists, strings, numbers, "
        "true/false, null)"
    )
    assert not marker.exists()


def test_python_tag_message_is_exact() -> None:
    assert error_lines("states: !!python/object/apply:os.system [ls]\n") == [
        "f.yaml:1:9: unsupported YAML tag '!!python/object/apply:os.system': machine files "
        "hold plain data only (mappings, lists, strings, numbers, true/false, null)"
    ]


def test_duplicate_and_non_string_keys() -> None:
    assert error_lines("name: a\nname: b\n") == ["f.yaml:2:1: duplicate key 'name'"]
    assert error_lines("name: a\n1: b\n") == [
        "f.yaml:2:1: mapping keys must be strings, got integer 1"
    ]
    assert error_lines("true: a\n") == [
        "f.yaml:1:1: mapping keys must be strings, got boolean true"
    ]


def test_syntax_errors_are_located() -> None:
    assert error_lines("name: m\n\tinitial: a\n") == [
        "f.yaml:2:1: invalid YAML: while scanning for the next token found character '\\t' "
        "that cannot start any token"
    ]
    assert error_lines("a: [1, 2\n") == [
        "f.yaml:2:1: invalid YAML: while parsing a flow sequence expected ',' or ']', "
        "but got '<stream end>'"
    ]
    assert error_lines("name: m\n---\nname: n\n") == [
        "f.yaml:2:1: invalid YAML: expected a single document in the stream but found "
        "another document"
    ]
    assert error_lines("a: *nowhere\n") == [
        "f.yaml:1:4: invalid YAML: found undefined alias 'nowhere'"
    ]


def test_non_printable_character() -> None:
    assert error_lines("name: m\x07\n") == [
        "f.yaml:1:8: invalid YAML: unacceptable character '\\x07' (special characters are "
        "not allowed); machine files must be printable text"
    ]


def test_empty_and_wrong_root() -> None:
    assert error_lines("") == [
        "f.yaml:1:1: machine file is empty; expected a mapping with name, initial and states"
    ]
    assert error_lines("# only a comment\n") == [
        "f.yaml:1:1: machine file is empty; expected a mapping with name, initial and states"
    ]
    assert error_lines("- a\n") == ["f.yaml:1:1: machine must be a mapping, got a list"]


def test_missing_keys_and_wrong_types() -> None:
    assert error_lines("name: m\n") == [
        "f.yaml:1:1: missing key 'initial' in machine; add 'initial: <state name>'",
        "f.yaml:1:1: missing key 'states' in machine; add 'states:' with a list of states",
    ]
    assert error_lines("name: 12\ninitial: a\nstates: [a]\n") == [
        "f.yaml:1:7: name must be a non-empty string, got integer 12"
    ]
    assert error_lines("name: m\ninitial: a\nstates: a\n") == [
        "f.yaml:3:9: states must be a list of states, got string 'a'"
    ]
    assert error_lines("name: m\ninitial: a\nstates: [a, 7]\n") == [
        "f.yaml:3:13: a state must be a name or a mapping, got integer 7"
    ]
    assert error_lines("name: m\ninitial: a\nversion: '2'\nstates: [a]\n") == [
        "f.yaml:3:10: version must be an integer, got string '2'"
    ]


def test_initial_true_on_a_state_is_explained() -> None:
    assert error_lines("name: m\ninitial: a\nstates: [{name: a, initial: true}]\n") == [
        "f.yaml:3:29: 'initial' of state 'a' names its first child state; the machine's "
        "initial state is set with the top-level 'initial:' key"
    ]


def test_unknown_keys_suggest_the_closest() -> None:
    text = "name: m\ninitial: a\nstates: [{name: a, finl: true}]\nsnapshot_evry: 3\n"
    assert error_lines(text) == [
        "f.yaml:3:20: unknown key 'finl' in state; did you mean 'final'?",
        "f.yaml:4:1: unknown key 'snapshot_evry' in machine; did you mean 'snapshot_every'?",
    ]
    assert error_lines("name: m\ninitial: a\nstates: [a]\nzzz: 1\n") == [
        "f.yaml:4:1: unknown key 'zzz' in machine; expected one of: name, version, initial, "
        "snapshot_every, snapshot_retention, description, data, states, transitions, "
        "ignore_invalid_triggers"
    ]


def test_full_format() -> None:
    text = """\
name: full
version: 3
initial: idle
snapshot_every: 10
snapshot_retention: 2
description: every key
data:
  count: {type: integer, default: 0, description: how many}
  label: string
  blob:
  needed: {type: object, required: true}
states:
  - name: idle
    on_enter: enter_idle
    on_exit: [leave_idle, also_leave]
    tags: [quiet]
    description: waiting
  - name: busy
    initial: warm
    timeout: {after: 1h30m, trigger: give_up}
    children:
      - name: warm
        on_enter_committed: [notify]
      - hot
  - {name: gone, final: true}
transitions:
  - trigger: start
    source: idle
    dest: busy
    conditions: can_start
    unless: [paused]
    before: b
    after: [a1, a2]
    after_commit: [c]
    description: begin
  - {trigger: heat, source: busy.warm, dest: busy.hot}
  - {trigger: poke, source: busy, dest: null}
  - {trigger: give_up, source: [busy], dest: gone}
  - {trigger: start, source: busy.hot, dest: busy.warm}
  - {trigger: kill, source: '*', dest: gone}
"""
    spec, source = read_machine_text(text, file="full.yaml")
    assert spec.version == 3 and spec.snapshot_every == 10 and spec.snapshot_retention == 2
    assert spec.description == "every key"
    assert spec.data_fields == (
        FieldSpec(name="count", type="integer", default=0, description="how many"),
        FieldSpec(name="label", type="string"),
        FieldSpec(name="blob", type="any"),
        FieldSpec(name="needed", type="object", required=True),
    )
    idle, busy, gone = spec.states
    assert idle == StateSpec(
        name="idle",
        on_enter=("enter_idle",),
        on_exit=("leave_idle", "also_leave"),
        tags=("quiet",),
        description="waiting",
    )
    assert busy.timeout == TimeoutSpec(after=timedelta(hours=1, minutes=30), trigger="give_up")
    assert busy.initial == "warm"
    assert busy.children == (
        StateSpec(name="warm", on_enter_committed=("notify",)),
        StateSpec(name="hot"),
    )
    assert gone.final
    # Transitions are grouped by trigger (first appearance), order kept within a trigger.
    assert [t.trigger for t in spec.transitions] == [
        "start", "start", "heat", "poke", "give_up", "kill"
    ]  # fmt: skip
    assert spec.transitions[0] == TransitionSpec(
        trigger="start",
        source=("idle",),
        dest="busy",
        conditions=("can_start",),
        unless=("paused",),
        before=("b",),
        after=("a1", "a2"),
        after_commit=("c",),
        description="begin",
    )
    assert spec.transitions[1].source == ("busy.hot",)
    assert spec.transitions[3].internal
    # The source map follows the regrouping: transition 1 is the one written last but one.
    lines = text.splitlines()
    written = lines.index("  - {trigger: start, source: busy.hot, dest: busy.warm}") + 1
    assert source.position(("transition", 1)) == (written, 5)
    assert source.position(("state", "busy.warm")) == (lines.index("      - name: warm") + 1, 9)


def test_read_machine_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DefinitionError) as info:
        read_machine_file(missing)
    assert str(info.value) == f"{missing}: cannot read machine file: No such file or directory"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(DefinitionError) as info:
        read_machine_file(binary)
    assert str(info.value) == f"{binary}: machine file is not UTF-8 text (bad byte at offset 6)"


def test_aliases_are_shared_not_expanded() -> None:
    """A 'billion laughs' file composes to a small shared tree; expanding it is refused."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 30):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    root = compose_text("\n".join(lines) + "\n")
    assert root is not None and isinstance(root.value, dict) and len(root.value) == 30
    with pytest.raises(DefinitionError, match="too large once aliases are expanded"):
        to_plain(root)
    nested = "".join(f"      {line}\n" for line in lines)
    bomb = "name: m\ninitial: a\nstates: [a]\ndata:\n  f:\n    default:\n" + nested
    assert error_lines(bomb) == [
        "f.yaml:7:7: YAML value is nested too deeply, recursive, or too large once aliases "
        "are expanded"
    ]


def test_recursive_aliases_are_refused() -> None:
    text = "name: m\ninitial: a\nstates: &s [a, *s]\n"
    assert error_lines(text) == ["f.yaml:3:9: a state must be a name or a mapping, got a list"]


def test_node_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    assert yaml_nodes.MAX_NODES >= 10_000  # generous for real machines
    monkeypatch.setattr(yaml_nodes, "MAX_NODES", 50)
    compose_text("a: [" + ", ".join(["1"] * 47) + "]\n")  # 50 nodes: fine
    assert error_lines("a: [" + ", ".join(["1"] * 48) + "]\n") == [
        "f.yaml:1:146: machine file is too large (more than 50 values)"
    ]


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeff".encode() + SWITCH.encode())
    spec, _ = read_machine_file(path)
    assert spec.name == "switch"
