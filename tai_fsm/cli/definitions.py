"""Definition commands of ``tai-fsm``: ``validate``, ``diagram`` and ``schema``.

* ``validate PATH... [--json]`` — machine files or folders of them. Every problem is printed as
  ``file:line:column: message`` (exit 1); otherwise a one-line OK summary (exit 0). Machine
  names must be unique across everything validated together.
* ``diagram PATH [--format mermaid|dot|svg|png] [-o FILE] [--instance ID]`` — PATH is a
  machine file or the name of a machine in ``--machines``. ``--instance`` reads that
  instance's current state from ``--store`` / ``--governor`` and highlights it.
* ``schema [-o FILE]`` — the JSON Schema of machine files.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tai_fsm.cli.common import open_output
from tai_fsm.definition.loader import (
    YAML_SUFFIXES,
    load_machine,
    load_machines_from_target,
    machine_files,
)
from tai_fsm.definition.machine import Machine
from tai_fsm.definition.schema import machine_schema
from tai_fsm.definition.spec import MachineSpec
from tai_fsm.definition.yaml_reader import read_machine_file
from tai_fsm.diagram import FORMATS, DiagramError, DiagramFormat, render
from tai_fsm.errors import DefinitionError, DefinitionProblem, StateNotFound, shown

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``validate``, ``diagram`` and ``schema`` to the ``tai-fsm`` sub-parsers."""
    p = sub.add_parser(
        "validate",
        help="check machine files; print file:line:column: message per problem",
        description="Check machine YAML files (or folders of them). Exit 1 on any problem.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a machine file or a folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_validate)

    p = sub.add_parser(
        "diagram",
        help="draw a machine (mermaid, dot, svg, png)",
        description="Draw a machine from its file, or by name from --machines.",
    )
    p.add_argument("path", metavar="PATH", help="a machine file, or a machine name")
    p.add_argument("--format", "-f", choices=FORMATS, default="mermaid", dest="format")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--instance", metavar="ID", help="highlight this instance's current state")
    p.set_defaults(handler=_diagram)

    p = sub.add_parser("schema", help="print the JSON Schema of machine files")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(handler=_schema)


# ---------------------------------------------------------------------- validate
def _collect(paths: list[str]) -> tuple[list[Path], list[DefinitionProblem]]:
    """The files to check, each once — a file named twice, or reached through a symlinked
    folder, is still one file — and the paths that are not there."""
    files: dict[Path, Path] = {}
    problems: list[DefinitionProblem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = machine_files(path)
            if not found:
                problems.append(
                    DefinitionProblem(
                        "no machine files (*.yaml, *.yml) in this folder", file=str(path)
                    )
                )
        elif path.is_file():
            found = [path]
        else:
            problems.append(DefinitionProblem("no such file or folder", file=str(path)))
            continue
        for file in found:
            files.setdefault(file.resolve(), file)
    return list(files.values()), problems


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _summary_line(files: list[Path], problems: list[DefinitionProblem]) -> str:
    """``2 problems in 1 of 3 files`` (+ paths that were not found)."""
    checked = {str(f) for f in files}
    broken = {p.file for p in problems if p.file in checked}
    missing = len(problems) - sum(1 for p in problems if p.file in checked)
    text = f"{_plural(len(problems), 'problem')} in {len(broken):,} of "
    text += _plural(len(files), "file")
    if missing:
        text += f", {_plural(missing, 'path')} with no machine file"
    return text


def _validate(args: argparse.Namespace) -> int:
    files, problems = _collect(args.paths)
    machines: list[type[Machine]] = []
    names: dict[str, type[Machine]] = {}
    for file in files:
        try:
            cls = load_machine(file)
        except DefinitionError as exc:
            problems.extend(exc.problems)
            continue
        first = names.get(cls.spec.name)
        if first is not None:
            source = getattr(cls, "_tai_source_map", None)
            line, column = source.position(("name",)) if source else (None, None)
            problems.append(
                DefinitionProblem(
                    f"machine name '{cls.spec.name}' is also declared in {first.source_file}; "
                    "machine names must be unique",
                    file=str(file),
                    line=line,
                    column=column,
                )
            )
            continue
        names[cls.spec.name] = cls
        machines.append(cls)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not problems,
                    "files": [str(f) for f in files],
                    "machines": [_summary(cls) for cls in machines],
                    "problems": [
                        {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
                        for p in problems
                    ],
                },
                indent=2,
            )
        )
        return 1 if problems else 0
    for problem in problems:
        print(str(problem))
    if problems:
        print(_summary_line(files, problems), file=sys.stderr)
        return 1
    listed = ", ".join(sorted(names))
    print(f"OK: {_plural(len(machines), 'machine')} in {_plural(len(files), 'file')}: {listed}")
    return 0


def _summary(cls: type[Machine]) -> dict[str, Any]:
    spec = cls.spec
    return {
        "name": spec.name,
        "version": spec.version,
        "file": cls.source_file,
        "states": len(spec.state_names()),
        "transitions": len(spec.transitions),
        "triggers": spec.triggers(),
    }


# ---------------------------------------------------------------------- diagram
def _is(path: Path, kind: str) -> bool:
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except OSError:  # e.g. a name too long to be a path: then it is not one
        return False


def _spec_for(path_or_name: str, machines_target: str) -> MachineSpec:
    path = Path(path_or_name)
    if _is(path, "file"):
        if path.suffix not in YAML_SUFFIXES:
            raise DefinitionError(
                f"{shown(str(path))} is not a machine file (*.yaml, *.yml)", file=str(path)
            )
        return read_machine_file(path)[0]
    if _is(path, "dir"):
        raise DefinitionError(
            f"{shown(str(path))} is a folder; diagram draws one machine file", file=str(path)
        )
    machines = load_machines_from_target(machines_target)
    cls = machines.get(path_or_name)
    if cls is None:
        known = ", ".join(sorted(machines)) or "none"
        raise DefinitionError(
            f"{shown(path_or_name)} is neither a machine file nor a machine in --machines "
            f"{shown(machines_target)} (machines there: {known})"
        )
    return cls.spec


async def _current_state(store_url: str, governor: str, instance: str) -> tuple[str, str]:
    from tai_fsm.cli.common import open_reading  # the store layer is only needed here

    async with open_reading(store_url) as store:
        try:
            record = await store.read_state(governor, instance)
        except StateNotFound:
            raise StateNotFound(governor, instance, "instance") from None
    data = record.snapshot.data
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        raise DiagramError(
            f"record {shown(instance)} in governor {shown(governor)} is not a machine "
            "instance (no 'machine'/'state' in its data)"
        )
    return str(data.get("machine", "")), data["state"]


def _diagram(args: argparse.Namespace) -> int:
    spec = _spec_for(args.path, args.machines)
    fmt: DiagramFormat = args.format
    highlight = None
    if args.instance is not None:
        machine, highlight = asyncio.run(_current_state(args.store, args.governor, args.instance))
        if machine != spec.name:
            raise DiagramError(
                f"instance {shown(args.instance)} is a {shown(machine)} machine, not "
                f"{spec.name!r}"
            )
    if fmt == "png" and args.output is None:
        raise DiagramError("--format png writes binary data; give -o FILE")
    output = render(spec, fmt, highlight=highlight)
    if args.output is None:
        sys.stdout.write(output.decode())
        return 0
    with open_output(args.output, binary=True) as out:
        out.write(output)
    print(f"wrote {fmt} diagram of '{spec.name}' to {args.output}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------- schema
def _schema(args: argparse.Namespace) -> int:
    text = json.dumps(machine_schema(), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        with open_output(args.output) as out:
            out.write(text)
        print(f"wrote the machine JSON Schema to {args.output}", file=sys.stderr)
    return 0
