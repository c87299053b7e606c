"""Loading machines: YAML files -> ``Machine`` subclasses, and the CLI's ``--machines``.

* :func:`load_machine` reads one YAML file into a new ``Machine`` subclass named after the
  machine (``batch_job`` -> ``BatchJob``) with ``spec``, ``source_file`` and the source map
  set. Subclass it to add behaviour (callback methods); ``data`` stays a ``dict``.
* :func:`load_machines` loads every ``*.yaml``/``*.yml`` directly inside a folder (sorted by
  file name) and fails — with every problem of every file — if any file is invalid or two
  files declare the same machine name.
* :func:`load_machines_from_target` resolves the CLI's ``--machines``: a folder, a single YAML
  file, or a Python import path ``package.module[:attr]``. Only the operator chooses what code
  is imported; a YAML file never causes an import.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from tai_fsm.definition._common import camel_case
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.names import install_names
from tai_fsm.definition.yaml_reader import read_machine_file
from tai_fsm.errors import DefinitionError, DefinitionProblem

__all__ = [
    "YAML_SUFFIXES",
    "load_machine",
    "load_machines",
    "load_machines_from_target",
    "machine_files",
]

YAML_SUFFIXES = (".yaml", ".yml")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)?")


def load_machine(path: str | os.PathLike[str]) -> type[Machine]:
    """A new ``Machine`` subclass for the YAML machine file at ``path``.

    Raises ``DefinitionError`` (every problem, each at ``file:line:column``)."""
    spec, source = read_machine_file(path)
    namespace = {
        "spec": spec,
        "source_file": str(path),
        "_tai_source_map": source,
        "__doc__": spec.description or f"The '{spec.name}' machine, loaded from {path}.",
        "__module__": __name__,
        "__qualname__": camel_case(spec.name),
    }
    cls = type(camel_case(spec.name), (Machine,), namespace)
    install_names(cls, spec)  # Order.pay == "pay"; await order.pay() on an instance
    return cls


def machine_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The YAML files directly inside ``folder``, sorted by name."""
    base = Path(folder)
    if not base.is_dir():
        raise DefinitionError(f"not a folder: {base}", file=str(base))
    return sorted(p for p in base.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())


def load_machines(folder: str | os.PathLike[str]) -> dict[str, type[Machine]]:
    """Every machine in ``folder``'s YAML files, by machine name."""
    return _load_files(machine_files(folder))


def _load_files(files: Iterable[Path]) -> dict[str, type[Machine]]:
    problems: list[DefinitionProblem] = []
    loaded: dict[str, type[Machine]] = {}
    for file in files:
        try:
            cls = load_machine(file)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        name = cls.spec.name
        if name in loaded:
            problems.append(_duplicate(name, loaded[name], cls))
        else:
            loaded[name] = cls
    if problems:
        raise DefinitionError(problems)
    return loaded


def _duplicate(name: str, first: type[Machine], second: type[Machine]) -> DefinitionProblem:
    def where(cls: type[Machine]) -> str:
        source = getattr(cls, "_tai_source_map", None)
        line = source.position(("name",))[0] if source is not None else None
        location = cls.source_file or cls.__module__
        return f"{location}:{line}" if line else location

    source = getattr(second, "_tai_source_map", None)
    line, column = source.position(("name",)) if source is not None else (None, None)
    return DefinitionProblem(
        f"machine name '{name}' is declared twice: in {where(first)} and in {where(second)}; "
        "machine names must be unique",
        file=second.source_file,
        line=line,
        column=column,
    )


def load_machines_from_target(target: str) -> dict[str, type[Machine]]:
    """Machines named by the CLI's ``--machines`` value.

    * an existing folder: :func:`load_machines` (unless it holds no YAML files but is a
      Python package named by ``target`` — then it is imported as below);
    * an existing ``.yaml``/``.yml`` file: that one machine;
    * otherwise an import path ``package.module[:attr]``: the module is imported (the current
      directory is put on ``sys.path`` first, as ``uvicorn`` does) and every ``Machine``
      subclass with a spec found in it — or in ``attr``: a class, a mapping or a list of
      classes — is returned. When a class and its subclass declare the same machine (a loaded
      YAML base and the class adding behaviour), the most derived class wins.
    """
    path = Path(target)
    is_package = (path / "__init__.py").is_file() and bool(_IMPORT_PATH.fullmatch(target))
    if path.is_dir() and not (is_package and not machine_files(path)):
        return load_machines(path)
    if path.is_file() and path.suffix in YAML_SUFFIXES:
        cls = load_machine(path)
        return {cls.spec.name: cls}
    looks_like_path = os.sep in target or "/" in target or path.suffix in YAML_SUFFIXES
    if looks_like_path or not _IMPORT_PATH.fullmatch(target):
        raise DefinitionError(
            f"--machines {target!r} is not an existing folder, a YAML file, or a Python import "
            "path package.module[:attr]"
        )
    return _from_import(target)


def _from_import(target: str) -> dict[str, type[Machine]]:
    module_name, _, attr = target.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except DefinitionError:
        raise
    except Exception as exc:
        raise DefinitionError(
            f"cannot import machines from {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    found: object = module
    for part in attr.split(".") if attr else ():
        try:
            found = getattr(found, part)
        except AttributeError:
            raise DefinitionError(f"{module_name!r} has no attribute {attr!r}") from None
    if isinstance(found, type):
        candidates: list[object] = [found]
    elif isinstance(found, Mapping):
        candidates = list(found.values())
    elif isinstance(found, list | tuple):
        candidates = list(found)
    else:
        candidates = list(vars(found).values())
    classes = [
        c
        for c in candidates
        if isinstance(c, type) and issubclass(c, Machine) and hasattr(c, "spec")
    ]
    if not classes:
        raise DefinitionError(f"no Machine classes with a spec found in {target!r}")
    chosen: dict[str, type[Machine]] = {}
    for cls in classes:
        name = cls.spec.name
        other = chosen.get(name)
        if other is None or (issubclass(cls, other) and cls is not other):
            chosen[name] = cls
        elif not issubclass(other, cls):
            raise DefinitionError(
                f"machine name '{name}' is declared by both {other.__module__}."
                f"{other.__qualname__} and {cls.__module__}.{cls.__qualname__}"
            )
    return chosen
