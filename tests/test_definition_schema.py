"""The JSON Schema of machine files accepts every shipped machine and rejects bad shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tai_fsm.definition.schema import machine_schema
from tai_fsm.definition.yaml_nodes import compose_text
from tai_fsm.definition.yaml_reader import to_plain

ROOT = Path(__file__).resolve().parent.parent
MACHINE_FILES = sorted((ROOT / "machines").glob("*.yaml"))


def _plain(text: str) -> Any:
    return to_plain(compose_text(text))


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(machine_schema())


@pytest.mark.parametrize("path", MACHINE_FILES, ids=[p.stem for p in MACHINE_FILES])
def test_every_machine_file_validates(path: Path) -> None:
    jsonschema.Draft202012Validator(machine_schema()).validate(_plain(path.read_text()))


@pytest.mark.parametrize(
    "text",
    [
        "name: m\ninitial: a\nstates: [a]\nextra: 1\n",
        "name: m\nstates: [a]\n",
        "name: m\ninitial: a\nstates: [{name: a, final: yes}]\n",
        "name: m\ninitial: a\nstates: [a]\ntransitions: [{trigger: t, source: a, dst: a}]\n",
        "name: m\ninitial: a\nstates: [{name: a, timeout: {after: soon, trigger: t}}]\n",
        "name: m\ninitial: a\nstates: [a]\nsnapshot_every: 0\n",
        "name: m\ninitial: a\nstates: [a]\ndata: {n: {type: int}}\n",
        f"name: m\ninitial: a\nstates: [a, {'b' * 257}]\n",  # names: at most 256 characters
        f"name: m\ninitial: a\nstates: [a]\ndata: {{{'n' * 257}: integer}}\n",
    ],
)
def test_bad_shapes_are_rejected(text: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(machine_schema()).validate(_plain(text))


def test_schema_is_a_fresh_copy() -> None:
    first = machine_schema()
    first["properties"].clear()
    assert machine_schema()["properties"]
