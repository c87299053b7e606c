"""load_machine / load_machines / load_machines_from_target."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tai_fsm.definition import Machine, load_machine, load_machines, load_machines_from_target
from tai_fsm.definition.loader import machine_files
from tai_fsm.errors import DefinitionError

ROOT = Path(__file__).resolve().parent.parent

SMALL = "name: {name}\ninitial: a\nstates: [a, {{name: b, final: true}}]\n" + (
    "transitions:\n  - {{trigger: go, source: a, dest: b}}\n"
)


def test_load_machine_returns_a_machine_subclass() -> None:
    cls = load_machine(ROOT / "machines" / "batch_job.yaml")
    assert issubclass(cls, Machine) and cls is not Machine
    assert cls.__name__ == "BatchJob"
    assert cls.spec.name == "batch_job"
    assert cls.source_file == str(ROOT / "machines" / "batch_job.yaml")
    assert cls.data_model is None
    assert load_machine(ROOT / "machines" / "batch_job.yaml").spec == cls.spec


def test_load_machines_folder() -> None:
    machines = load_machines(ROOT / "machines")
    assert set(machines) >= {"order", "batch_job", "deployment"}
    assert all(cls.spec.name == name for name, cls in machines.items())


def test_load_machines_reports_every_file_and_duplicates(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SMALL.format(name="same"))
    (tmp_path / "b.yml").write_text(SMALL.format(name="same"))
    (tmp_path / "c.yaml").write_text("name: c\n")
    (tmp_path / "notes.txt").write_text("ignored")
    with pytest.raises(DefinitionError) as info:
        load_machines(tmp_path)
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'b.yml'}:1:7: machine name 'same' is declared twice: in "
        f"{tmp_path / 'a.yaml'}:1 and in {tmp_path / 'b.yml'}:1; machine names must be unique",
        f"{tmp_path / 'c.yaml'}:1:1: missing key 'initial' in machine; add 'initial: <state name>'",
        f"{tmp_path / 'c.yaml'}:1:1: missing key 'states' in machine; "
        "add 'states:' with a list of states",
    ]


def test_machine_files_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="not a folder"):
        machine_files(tmp_path / "missing")


def test_target_folder_file_and_errors(tmp_path: Path) -> None:
    assert set(load_machines_from_target(str(ROOT / "machines"))) >= {"order"}
    single = load_machines_from_target(str(ROOT / "machines" / "order.yaml"))
    assert list(single) == ["order"]
    with pytest.raises(DefinitionError) as info:
        load_machines_from_target(str(tmp_path / "nope"))
    assert str(info.value) == (
        f"--machines {str(tmp_path / 'nope')!r} is not an existing folder, a YAML file, or a "
        "Python import path package.module[:attr]"
    )
    with pytest.raises(DefinitionError, match="cannot import machines from 'no_such_module_x'"):
        load_machines_from_target("no_such_module_x")


def test_target_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "door.yaml").write_text(SMALL.format(name="door"))
    package = tmp_path / "shop_machines"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            f"""
            from typing import Any
            import tai_fsm.definition as fsm

            DoorBase = fsm.load_machine({str(tmp_path / "door.yaml")!r})

            class Door(DoorBase):
                def helper(self, event: Any) -> None: ...

            class Lamp(fsm.Machine):
                off = fsm.State(initial=True)
                gone = fsm.State(final=True)
                smash = off.to(gone)

            ALL = [Lamp]
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        found = load_machines_from_target("shop_machines")
        assert set(found) == {"door", "lamp"}
        assert found["door"].__name__ == "Door"  # the subclass wins over its YAML base
        assert list(load_machines_from_target("shop_machines:ALL")) == ["lamp"]
        assert list(load_machines_from_target("shop_machines:Lamp")) == ["lamp"]
        with pytest.raises(DefinitionError, match="has no attribute 'Nope'"):
            load_machines_from_target("shop_machines:Nope")
        with pytest.raises(DefinitionError, match="no Machine classes with a spec"):
            load_machines_from_target("shop_machines:fsm")
    finally:
        sys.modules.pop("shop_machines", None)
