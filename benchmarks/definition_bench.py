"""Definition loading and validation time vs the definition's size.

Generated chains of N states (``s0 -> s1 -> ... -> s{N-1}``, the last one final, one
transition per step), written as a YAML machine file; for each N, the median of ``--runs``
runs (default 3) of:

* ``load_machine`` — ``fsm.load_machine(path)``: read, parse, build the spec, validate;
* ``tai-fsm validate`` — ``tai_fsm.cli.main(["validate", path])`` in-process, output captured;
* ``parse`` and ``validate()`` — the two halves of ``load_machine``: ``parse_machine_text``
  (PyYAML composing, shapes, the spec) and ``validate(spec, source)`` (every rule);
* ``class DSL`` — declaring the same chain as a ``Machine`` subclass (built with ``type()``,
  one ``State`` attribute per state, one transition attribute per step).

Each is timed as process CPU time (what the growth ratios use: on a machine shared with
other jobs, wall time also measures the waits) and as wall time; a full garbage collection
runs before each. Then the growth of each median per 4x more states: linear work grows ~4x,
quadratic ~16x. Time also grows with cache misses as the data outgrows the CPU caches, so a
last table counts the work itself, deterministically: Python and C function calls made
(``sys.setprofile``, one extra run each). Nothing here is a test assertion.

    .venv/bin/python benchmarks/definition_bench.py                 # 1k, 4k, 16k states
    .venv/bin/python benchmarks/definition_bench.py --sizes 500 2000 --runs 5
    .venv/bin/python benchmarks/definition_bench.py --update-docs   # also rewrite its section
                                                                     # of docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tai_fsm as fsm
from tai_fsm.cli import main as cli_main
from tai_fsm.definition.validate import validate
from tai_fsm.definition.yaml_reader import parse_machine_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## Definitions: validation time vs size"
START, END = "<!-- definition-bench:start -->", "<!-- definition-bench:end -->"
COLUMNS = ("load_machine", "tai-fsm validate", "parse", "validate()", "class DSL")
NOTES = """\
Before this work (commit d5b8ea7, this machine class) every graph rule rescanned every
transition for every state: `load_machine` took 3.3 s for a 1,000-state chain and 18.6 s for
2,000 (x5.6 for 2x), the issue measured 34 s for 4,000 states and 27 s in `tai-fsm validate`
for a 252 KB file; 16,000 states would have taken ~16x that (extrapolated). Now transitions
are indexed by source and each rule reads only the transitions that apply. Also fixed: the
class DSL located each class with `inspect.getsourcelines`, which parses the whole module per
class; importing a module of 200 small machine classes took 8.5 s and one of 800 took 281 s
(measured once, before and after, with `python -c "import many800"`); now 0.5 s and 0.8 s.

Reading the tables: the work (function calls, deterministic) grows x4.0 per 4x in every
column, for `validate()` and the class DSL as for the whole load. The seconds grow faster
than the work, for reasons outside these functions: other jobs share the 2 CPUs (runs an hour
apart gave x3.5 to x6.8 for the same 1,000 -> 4,000 step); and CPython's cyclic garbage
collector makes full collections, each traversing the whole heap (imported modules
included), more often as parsing allocates more: 2 during `parse` at 4,000 states (0.5 s),
6 at 16,000 (3.0 s); with the collector paused, `parse` grows x4.8 from 4,000 to 16,000
states. None of it is the x16 of quadratic work. Almost all of `load_machine` is `parse`,
i.e. PyYAML composing the file in pure Python (~25-30 µs per YAML value; the 16,000-state
chain is ~130,000 values); `validate()` is under a tenth of it. Machine files are capped at
4 MiB and 250,000 values ([machines.md](machines.md#the-yaml-dialect-and-safety)): a larger
file is refused from its size before it is read, and no accepted file holds more than ~2x
the values of the largest chain here."""


def chain_yaml(states: int) -> str:
    lines = ["name: chain", "version: 1", "initial: s0", "states:"]
    lines += [f"  - s{i}" for i in range(states - 1)]
    lines.append(f"  - {{name: s{states - 1}, final: true}}")
    lines.append("transitions:")
    lines += [f"  - {{trigger: t{i}, source: s{i}, dest: s{i + 1}}}" for i in range(states - 1)]
    return "\n".join(lines) + "\n"


def chain_class(states: int) -> type[fsm.Machine]:
    namespace: dict[str, Any] = {"name": "chain", "__module__": __name__}
    declared = [fsm.State(initial=i == 0, final=i == states - 1) for i in range(states)]
    for i, state in enumerate(declared):
        namespace[f"s{i}"] = state
    for i in range(states - 1):
        namespace[f"t{i}"] = declared[i].to(declared[i + 1])
    return type("Chain", (fsm.Machine,), namespace)


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of ``work()``."""
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    work()
    return time.process_time() - cpu, time.perf_counter() - wall


def calls(work: Callable[[], object]) -> int:
    """Python and C function calls made by ``work()``."""
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


def cli_validate(path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = cli_main(["validate", str(path)])
    if code != 0 or not out.getvalue().startswith("OK: 1 machine(s)"):
        raise SystemExit(f"tai-fsm validate failed ({code}): {out.getvalue()[:300]}")


Timings = dict[str, list[tuple[float, float]]]
Result = tuple[int, Timings, dict[str, int]]


def measure(states: int, runs: int, folder: Path) -> Result:
    text = chain_yaml(states)
    path = folder / f"chain_{states}.yaml"
    path.write_text(text)
    spec, source = parse_machine_text(text, file=str(path))
    if validate(spec, source):
        raise SystemExit(f"the generated {states}-state chain is not valid")
    work: dict[str, Callable[[], object]] = {
        "load_machine": lambda: fsm.load_machine(path),
        "tai-fsm validate": lambda: cli_validate(path),
        "parse": lambda: parse_machine_text(text, file=str(path)),
        "validate()": lambda: validate(spec, source),
        "class DSL": lambda: chain_class(states),
    }
    found: Timings = {name: [] for name in COLUMNS}
    for _ in range(runs):  # interleaved, so drift in the machine's load hits every column
        for name in COLUMNS:
            found[name].append(timed(work[name]))
    return len(text.encode()), found, {name: calls(work[name]) for name in COLUMNS}


def report(sizes: list[int], runs: int, results: list[Result]) -> list[str]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = [
        "| states | file | " + " | ".join(COLUMNS) + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]

    def table(rows: list[dict[str, float]], cell: str) -> list[str]:
        lines = list(header)
        for states, (size, _, _), row in zip(sizes, results, rows, strict=True):
            cells = " | ".join(format(row[name], cell) for name in COLUMNS)
            lines.append(f"| {states:,} | {size / 1024:,.0f} KB | {cells} |")
        for i in range(1, len(rows)):
            ratios = " | ".join(f"x{rows[i][k] / rows[i - 1][k]:.1f}" for k in COLUMNS)
            factor = sizes[i] / sizes[i - 1]
            lines.append(f"| growth x{factor:g} | {sizes[i - 1]:,} -> {sizes[i]:,} | {ratios} |")
        return lines

    cpu = [{k: statistics.median(t[0] for t in v) for k, v in f.items()} for _, f, _ in results]
    wall = [{k: statistics.median(t[1] for t in v) for k, v in f.items()} for _, f, _ in results]
    work = [{k: float(v) for k, v in c.items()} for _, _, c in results]
    return [
        f"Generated chains, median of {runs} runs. Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at the end.",
        "",
        "CPU seconds:",
        "",
        *table(cpu, ".3f"),
        "",
        "Wall seconds, same runs:",
        "",
        *table(wall, ".3f"),
        "",
        "Work: function calls made (deterministic):",
        "",
        *table(work, ",.0f"),
    ]


def update_docs(lines: list[str], command: str) -> None:
    """Write this benchmark's section at the end of docs/benchmarks.md (or rewrite it in
    place); other sections are untouched."""
    section = "\n".join(
        [
            START,
            HEADING,
            "",
            f"Command: `{command}` (add `--update-docs` to rewrite this section).",
            "",
            *lines,
            "",
            NOTES,
            END,
        ]
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 4_000, 16_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--update-docs", action="store_true", help=f"write the figures into {DOC.name}"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        measure(10, 1, Path(folder))  # warm up: imports, and this module's source for class_line
        results = [measure(states, args.runs, Path(folder)) for states in args.sizes]
    lines = report(args.sizes, args.runs, results)
    print("\n".join(lines))
    if args.update_docs:
        shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--update-docs"]
        update_docs(lines, " ".join([".venv/bin/python benchmarks/definition_bench.py", *shown]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
