"""``tai-fsm validate``, ``diagram`` and ``schema`` through ``tai_fsm.cli.main``."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tai_fsm.cli import main
from tai_fsm.records import StateSnapshot
from tai_fsm.stores.url import open_store

ROOT = Path(__file__).resolve().parent.parent
MACHINES = ROOT / "machines"
BROKEN = """\
name: broken
initial: a
states:
  - a
  - b
transitions:
  - {trigger: go, source: a, dst: b}
"""


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(MACHINES)]) == 0
    out = capsys.readouterr().out
    assert out == "OK: 3 machines in 3 files: batch_job, deployment, order\n"


def test_validate_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN)
    assert main(["validate", str(bad), str(MACHINES / "order.yaml"), str(tmp_path / "x")]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{tmp_path / 'x'}: no such file or folder",
        f"{bad}:7:5: missing key 'dest' in transition; add 'dest: <state>' "
        "(or 'dest: null' for an internal transition)",
        f"{bad}:7:30: unknown key 'dst' in transition; did you mean 'dest'?",
    ]
    assert captured.err == "3 problems in 1 of 2 files, 1 path with no machine file\n"


def test_validate_oversized_and_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as out:  # sparse: refused from its size, never read
        out.truncate(60 * 1024 * 1024)
    huge = tmp_path / "huge.yaml"
    huge.write_text(
        "name: huge\nversion: 99999999999999999999999999999\ninitial: a\n"
        "states: [a, {name: b, final: true}]\ntransitions: [{trigger: go, source: a, dest: b}]\n"
        "data:\n  ratio: {type: number, default: .nan}\n"
    )
    assert main(["validate", str(big), str(huge), str(MACHINES / "order.yaml")]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"{big}: machine file is too large: 62,914,560 bytes; the limit is 4,194,304 bytes (4 MiB)",
        f"{huge}:2:10: version is an integer beyond 64 bits, which the store cannot hold",
        f"{huge}:7:34: default of data field 'ratio' is nan, which JSON cannot represent "
        "(it would become null)",
    ]
    assert captured.err == "3 problems in 2 of 3 files\n"


def test_validate_duplicate_names_across_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "order_copy.yaml"
    copy.write_text((MACHINES / "order.yaml").read_text())
    assert main(["validate", str(MACHINES / "order.yaml"), str(copy)]) == 1
    line = capsys.readouterr().out.strip()
    assert line == (
        f"{copy}:3:7: machine name 'order' is also declared in {MACHINES / 'order.yaml'}; "
        "machine names must be unique"
    )


def test_validate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--json", str(MACHINES / "order.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert report["machines"] == [
        {
            "name": "order",
            "version": 1,
            "file": str(MACHINES / "order.yaml"),
            "states": 4,
            "transitions": 4,
            "triggers": ["pay", "ship", "cancel", "expire"],
        }
    ]
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN)
    assert main(["validate", "--json", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["problems"][1] == {
        "file": str(bad),
        "line": 7,
        "column": 30,
        "message": "unknown key 'dst' in transition; did you mean 'dest'?",
    }


def test_validate_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path}: no machine files (*.yaml, *.yml) in this folder\n"
    )


def test_diagram_svg_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "order.svg"
    code = main(["diagram", str(MACHINES / "order.yaml"), "--format", "svg", "-o", str(out)])
    assert code == 0
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert capsys.readouterr().err == f"wrote svg diagram of 'order' to {out}\n"


def test_diagram_mermaid_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--machines", str(MACHINES), "diagram", "batch_job"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stateDiagram-v2\n")
    assert "    running --> retrying : fail [can_retry] (after 1h)" in out.splitlines()


def test_diagram_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--machines", str(MACHINES), "diagram", "nope"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "tai-fsm: error: DefinitionError: 'nope' is neither a machine file nor a machine in "
        f"--machines {str(MACHINES)!r} (machines there: batch_job, deployment, order)\n"
    )
    assert main(["diagram", str(MACHINES / "order.yaml"), "--format", "png"]) == 1
    assert capsys.readouterr().err == (
        "tai-fsm: error: DiagramError: --format png writes binary data; give -o FILE\n"
    )


def _seed(url: str, governor: str, instance: str, machine: str, state: str) -> None:
    async def write() -> None:
        async with open_store(url) as store:
            snapshot = StateSnapshot(
                id=instance, data={"machine": machine, "state": state, "data": {}}
            )
            await store.write_state(governor, instance, snapshot, expected_version=None)

    asyncio.run(write())


def test_diagram_highlights_an_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    _seed(url, "shop", "d-1", "deployment", "deploying.canary")
    args = ["--store", url, "--governor", "shop", "diagram", str(MACHINES / "deployment.yaml")]
    assert main([*args, "--instance", "d-1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "    class deploying__canary current"

    assert main([*args, "--instance", "d-1", "--format", "dot"]) == 0
    assert '"deploying.canary" [style="rounded,filled,bold"' in capsys.readouterr().out

    assert main([*args, "--instance", "missing"]) == 1
    assert capsys.readouterr().err == (
        "tai-fsm: error: StateNotFound: instance 'missing' not found (governor shop)\n"
    )
    _seed(url, "shop", "o-1", "order", "paid")
    assert main([*args, "--instance", "o-1"]) == 1
    assert capsys.readouterr().err == (
        "tai-fsm: error: DiagramError: instance 'o-1' is a 'order' machine, not 'deployment'\n"
    )


def test_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "tai-fsm machine"
    target = tmp_path / "machine.schema.json"
    assert main(["schema", "-o", str(target)]) == 0
    assert json.loads(target.read_text()) == schema
