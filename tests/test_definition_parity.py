"""Every machine in machines/ and its class twin in examples/ compile to equal specs, and
the twin defines every callback the definition names."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

import tai_fsm.definition as fsm
from tai_fsm.definition import Machine, check_callbacks, load_machine

ROOT = Path(__file__).resolve().parent.parent
MACHINE_FILES = sorted((ROOT / "machines").glob("*.yaml"))


def _import_example(stem: str) -> ModuleType:
    path = ROOT / "examples" / f"{stem}.py"
    assert path.is_file(), f"machines/{stem}.yaml has no class twin at examples/{stem}.py"
    name = f"_tai_examples_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _twin(stem: str, machine_name: str) -> type[Machine]:
    module = _import_example(stem)
    twins = [
        v
        for v in vars(module).values()
        if isinstance(v, type)
        and issubclass(v, Machine)
        and v.__module__ == module.__name__
        and getattr(v, "spec", None) is not None
        and v.spec.name == machine_name
    ]
    assert len(twins) == 1, f"examples/{stem}.py must define one class for '{machine_name}'"
    return twins[0]


def test_there_are_at_least_three_machines() -> None:
    assert {p.stem for p in MACHINE_FILES} >= {"order", "batch_job", "deployment"}
    assert (ROOT / "machines").resolve() == (ROOT / "tai_fsm" / "demo_machines").resolve()


@pytest.mark.parametrize("path", MACHINE_FILES, ids=[p.stem for p in MACHINE_FILES])
def test_yaml_and_class_twin_compile_to_equal_specs(path: Path) -> None:
    from_yaml = load_machine(path).spec
    twin = _twin(path.stem, from_yaml.name)
    assert twin.spec == from_yaml
    assert twin.spec.model_dump() == from_yaml.model_dump()


@pytest.mark.parametrize("path", MACHINE_FILES, ids=[p.stem for p in MACHINE_FILES])
def test_class_twin_defines_every_callback(path: Path) -> None:
    spec = load_machine(path).spec
    twin = _twin(path.stem, spec.name)
    assert check_callbacks(spec, twin) == []
    # ... and the YAML-loaded base alone has none: the names really are checked.
    assert not any(True for _ in fsm.validate(spec))


def test_order_matches_design_example() -> None:
    spec = load_machine(ROOT / "machines" / "order.yaml").spec
    assert spec.initial == "pending"
    assert [s.name for s in spec.states] == ["pending", "paid", "shipped", "cancelled"]
    paid = spec.find_state("paid")
    assert paid is not None and paid.timeout is not None
    assert (paid.timeout.after.total_seconds(), paid.timeout.trigger) == (1800, "expire")
    assert paid.on_enter == ("stamp_paid_at",) and paid.on_enter_committed == ("send_receipt",)
    assert [(t.trigger, t.source, t.dest) for t in spec.transitions] == [
        ("pay", ("pending",), "paid"),
        ("ship", ("paid",), "shipped"),
        ("cancel", ("pending", "paid"), "cancelled"),
        ("expire", ("paid",), "cancelled"),
    ]
    assert spec.data_fields[0].name == "items" and spec.data_fields[0].default == 0
