"""Limits on what a definition may hold, each with its exact, located message: the file size
(checked before parsing), YAML values, states, names and paths; and numbers the store
cannot hold (versions and defaults beyond 64 bits, NaN/Infinity), in YAML and the class DSL.
"""

from __future__ import annotations

import importlib
import inspect
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import tai_fsm as fsm
from tai_fsm.definition import validate as validate_function
from tai_fsm.definition import yaml_nodes, yaml_reader
from tai_fsm.definition.dsl import fields_from_model
from tai_fsm.definition.spec import FieldSpec, MachineSpec, StateSpec, TransitionSpec
from tai_fsm.definition.yaml_nodes import compose_text
from tai_fsm.definition.yaml_reader import (
    MAX_FILE_BYTES,
    MAX_NAME_LENGTH,
    read_machine_file,
    read_machine_text,
)
from tai_fsm.errors import DefinitionError

MACHINE = """\
name: m
initial: a
states:
  - a
  - {name: b, final: true}
transitions:
  - {trigger: go, source: a, dest: b}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        read_machine_text(text, file="m.yaml")
    return [str(p) for p in info.value.problems]


def class_problems(make: Any) -> list[str]:
    """Problems raised while ``make()`` declares a class, and the class line they point at."""
    with pytest.raises(DefinitionError) as info:
        make()
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------------- file size
def test_the_file_size_limit_is_4_mib() -> None:
    assert MAX_FILE_BYTES == 4 * 1024 * 1024


def test_a_file_over_the_limit_is_refused_from_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as out:  # a sparse file: its size, not its bytes, is what counts
        out.truncate(MAX_FILE_BYTES + 1)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("an oversized file must not be parsed")

    with monkeypatch.context() as patch:
        patch.setattr(yaml_reader, "compose_text", never)
        for read in (read_machine_file, fsm.load_machine):
            with pytest.raises(DefinitionError) as info:
                read(big)
            assert str(info.value) == (
                f"{big}: machine file is too large: 4,194,305 bytes; "
                "the limit is 4,194,304 bytes (4 MiB)"
            )
            assert info.value.file == str(big)
    # exactly at the limit: read
    small = tmp_path / "m.yaml"
    small.write_text(MACHINE)
    monkeypatch.setattr(yaml_reader, "MAX_FILE_BYTES", len(MACHINE))
    assert fsm.load_machine(small).spec.name == "m"
    small.write_text(MACHINE + "\n")
    limit = len(MACHINE)
    with pytest.raises(
        DefinitionError, match=f"too large: {limit + 1} bytes; the limit is {limit} bytes$"
    ):
        fsm.load_machine(small)


def test_a_stream_without_a_size_is_read_only_up_to_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("needs /dev/zero")
    monkeypatch.setattr(yaml_reader, "MAX_FILE_BYTES", 1000)
    with pytest.raises(DefinitionError) as info:
        read_machine_file("/dev/zero")
    assert str(info.value) == (
        "/dev/zero: machine file is too large: more than 1,000 bytes; the limit is 1,000 bytes"
    )


def test_text_over_the_limit_is_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DefinitionError) as info:
        read_machine_text("#" * MAX_FILE_BYTES + "\u00e9", file="t.yaml")  # é: two bytes
    assert str(info.value) == (
        "t.yaml: machine file is too large: 4,194,306 bytes; the limit is 4,194,304 bytes (4 MiB)"
    )
    text = MACHINE + "#\u00e9\n"  # 4 bytes in 3 characters
    limit = len(text.encode())
    monkeypatch.setattr(yaml_reader, "MAX_FILE_BYTES", limit)
    assert read_machine_text(text)[0].name == "m"
    with pytest.raises(DefinitionError, match=f"^machine file is too large: {limit + 1} bytes;"):
        read_machine_text(text.replace("#", "##"))


# ---------------------------------------------------------------------- values, states, names
def test_the_node_cap_stops_composing_at_the_first_value_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(yaml_nodes, "MAX_NODES", 50)
    # The syntax error comes after the 51st value: composing must stop before reaching it.
    text = "a: [" + ", ".join(["1"] * 48) + "]\nb: [unclosed\n"
    with pytest.raises(DefinitionError) as info:
        compose_text(text, "f.yaml")
    assert str(info.value) == "f.yaml:1:146: machine file is too large (more than 50 values)"


def test_aliases_copied_into_defaults_share_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_reader, "MAX_NODES", 25)
    text = MACHINE + (
        "data:\n"
        "  f1: {default: &big [1, 2, 3, 4, 5, 6, 7, 8, 9]}\n"
        "  f2: {default: *big}\n"
        "  f3: {default: *big}\n"
    )
    # f3's copy exceeds what is left; the value is located where it is written (anchored)
    assert problems(text) == [
        "m.yaml:9:17: YAML value is nested too deeply, recursive, or too large once aliases "
        "are expanded"
    ]


def test_too_many_states(monkeypatch: pytest.MonkeyPatch) -> None:
    assert yaml_reader.MAX_STATES >= 16_000
    monkeypatch.setattr(yaml_reader, "MAX_STATES", 2)
    assert problems(MACHINE.replace("  - a\n", "  - a\n  - c\n")) == [
        "m.yaml:6:5: more than 2 states declared"
    ]


def test_names_and_paths_are_limited() -> None:
    assert MAX_NAME_LENGTH == 256
    long = "s" * 257
    shown = "'" + "s" * 39 + "...(259 chars)"
    limit = "names and state paths are limited to 256 characters"
    assert problems(MACHINE.replace("  - a\n", f"  - a\n  - {long}\n")) == [
        f"m.yaml:5:5: state name {shown} is too long (257 characters); {limit}"
    ]
    assert problems(MACHINE.replace("trigger: go", f"trigger: {long}")) == [
        f"m.yaml:7:15: trigger {shown} is too long (257 characters); {limit}"
    ]
    assert problems(MACHINE + f"data:\n  {long}: integer\n") == [
        f"m.yaml:9:3: data field name {shown} is too long (257 characters); {limit}"
    ]
    # a path too long only once nested: the child is refused, not its parent
    parent, child = "p" * 200, "c" * 56
    nested = MACHINE.replace(
        "  - a\n", f"  - a\n  - name: {parent}\n    initial: {child}\n    children: [{child}]\n"
    )
    path = f"{parent}.{child}"
    assert problems(nested) == [
        f"m.yaml:7:16: state path '{path[:39]}...(259 chars) is too long (257 characters); {limit}"
    ]
    # at the limit: fine (and reported by validation, not the reader)
    assert problems(MACHINE.replace("  - a\n", f"  - a\n  - {'s' * 256}\n"))[0].startswith(
        f"m.yaml:5:5: state '{'s' * 256}' is unreachable"
    )


# ---------------------------------------------------------------------- numbers
BEYOND = "is an integer beyond 64 bits, which the store cannot hold"


def test_version_and_snapshot_settings_beyond_64_bits() -> None:
    assert read_machine_text(MACHINE + f"version: {2**63 - 1}\n")[0].version == 2**63 - 1
    assert problems(MACHINE + f"version: {2**64}\n") == [f"m.yaml:8:10: version {BEYOND}"]
    assert problems(
        MACHINE.replace("name: m\n", "name: m\nversion: 99999999999999999999999999999\n")
        + "snapshot_every: 1000000000000000000000\nsnapshot_retention: 100000000000000000000\n"
    ) == [
        f"m.yaml:2:10: version {BEYOND}",
        f"m.yaml:9:17: snapshot_every {BEYOND}",
        f"m.yaml:10:21: snapshot_retention {BEYOND}",
    ]
    assert problems(MACHINE + "version: -99999999999999999999\n") == [
        "m.yaml:8:10: version must be at least 1 (got -99999999999999999999)"
    ]


def test_defaults_beyond_64_bits_or_not_finite() -> None:
    text = MACHINE + (
        "data:\n"
        "  n: {type: integer, default: 99999999999999999999}\n"
        "  ok: {type: integer, default: -9223372036854775808}\n"
        "  r: {type: number, default: .nan}\n"
        "  i: {type: number, default: .inf}\n"
        "  nested:\n"
        "    default: {limits: [1, -.Inf]}\n"
    )
    assert problems(text) == [
        f"m.yaml:9:31: default of data field 'n' {BEYOND}",
        "m.yaml:11:30: default of data field 'r' is nan, which JSON cannot represent "
        "(it would become null)",
        "m.yaml:12:30: default of data field 'i' is inf, which JSON cannot represent "
        "(it would become null)",
        "m.yaml:14:14: default of data field 'nested'['limits'][1] is -inf, which JSON "
        "cannot represent (it would become null)",
    ]
    # a default of the wrong type keeps its own message (and only that one)
    assert problems(MACHINE + "data:\n  n: {type: integer, default: .nan}\n") == [
        "m.yaml:9:6: default of data field 'n' is nan, which is not of type integer"
    ]


def _line_of(make: Any) -> int:
    """The line of the first ``class`` statement in ``make``'s source."""
    lines, first = inspect.getsourcelines(make)
    return first + next(i for i, line in enumerate(lines) if line.lstrip().startswith("class "))


def test_class_dsl_version_beyond_64_bits() -> None:
    def make() -> None:
        class Huge(fsm.Machine):
            version = 10**29
            a = fsm.State(initial=True)
            b = fsm.State(final=True)
            go = a.to(b)

    assert class_problems(make) == [f"{__file__}:{_line_of(make)}:1: version {BEYOND}"]


def test_class_dsl_defaults_beyond_64_bits_or_not_finite() -> None:
    def make() -> None:
        class Odd(fsm.Machine):
            class Data(BaseModel):
                n: int = 2**64
                ratio: float = float("nan")
                fine: int = -(2**63)

            a = fsm.State(initial=True)
            b = fsm.State(final=True)
            go = a.to(b)

    where = f"{__file__}:{_line_of(make)}:1"
    assert class_problems(make) == [
        f"{where}: default of data field 'n' {BEYOND}",
        f"{where}: default of data field 'ratio' is nan, which JSON cannot represent "
        "(it would become null)",
    ]


def test_class_dsl_defaults_are_declared_in_their_json_form() -> None:
    class Data(BaseModel):
        pair: tuple[int, int] = (1, 2)
        at: datetime = datetime(2024, 1, 2, 3, 4, 5)
        tags: list[str] = ["a"]

    assert fields_from_model(Data) == (
        FieldSpec(name="pair", type="array", default=[1, 2]),
        FieldSpec(name="at", type="any", default="2024-01-02T03:04:05"),
        FieldSpec(name="tags", type="array", default=["a"]),
    )

    class Stamped(fsm.Machine):  # a tuple default is fine: it is stored as a list
        data_model = Data
        a = fsm.State(initial=True)
        b = fsm.State(final=True)
        go = a.to(b)

    assert Stamped.spec.data_fields[0].default == [1, 2]


# ---------------------------------------------------------------------- messages stay bounded
def test_a_transition_with_many_sources_is_named_with_ten() -> None:
    sources = [f"x{i}" for i in range(12)]
    spec = MachineSpec(
        name="m",
        initial="a",
        states=(StateSpec(name="a"), StateSpec(name="b", final=True)),
        transitions=(
            TransitionSpec(trigger="go", source=("a",), dest="b"),
            TransitionSpec(trigger="jump", source=tuple(sources), dest="b"),
        ),
    )
    found = [p.message for p in validate_function(spec)]
    shown = ", ".join(sources[:10]) + ", ... (12 sources)"
    assert found[0] == f"transition 'jump' ({shown} -> b): source state 'x0' does not exist"
    assert len(found) == 12


def test_hints_stop_when_their_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    validate_module = importlib.import_module("tai_fsm.definition.validate")
    text = MACHINE + (
        "  - {trigger: t1, source: aa, dest: b}\n  - {trigger: t2, source: a, dest: bb}\n"
    )
    full = problems(text)
    assert "did you mean 'a'?" in full[0] and "did you mean 'b'?" in full[1]
    # each hint costs (the states' names + (len(name) + 8) per state): room for one only
    monkeypatch.setattr(validate_module, "SUGGESTION_BUDGET", 25)
    assert problems(text) == [
        "m.yaml:8:27: transition 't1' (aa -> b): source state 'aa' does not exist; "
        "did you mean 'a'?",
        "m.yaml:9:36: transition 't2' (a -> bb): dest state 'bb' does not exist",
    ]
