"""Every ```python block in README.md and docs/*.md runs, as written, in a fresh directory
that has the repo's machines/ folder (so the docs cannot drift from the code).

Every ```console block is a CLI session, run the same way: each ``$ tai-fsm ARGS`` line is
run in-process (``tai_fsm.cli.main``) and what it prints — stdout, then stderr — must match
the lines under it; ``...`` matches anything (within a line, or whole lines), and a last
line ``(exit N)`` is the exit code expected (0 otherwise). The blocks of one file share one
directory, in order, so a later session sees what an earlier one created."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from tai_fsm.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
CONSOLE = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
EXIT = re.compile(r"^\(exit (\d+)\)$")


def _blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for number, match in enumerate(BLOCK.finditer(text), 1):
            line = text[: match.start()].count("\n") + 1
            found.append((f"{doc.name}:{line}#{number}", match.group(1)))
    return found


@pytest.mark.parametrize(("where", "code"), _blocks(), ids=[w for w, _ in _blocks()])
def test_doc_example_runs(where: str, code: str, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "machines").symlink_to(ROOT / "machines")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{where}"}
    exec(compile(code, where, "exec"), namespace)


def test_readme_has_runnable_examples() -> None:
    assert len([w for w, _ in _blocks() if w.startswith("README")]) >= 4
    assert os.path.exists(ROOT / "scripts" / "demo.sh")
    assert os.path.exists(ROOT / "scripts" / "test.sh")


def _sessions() -> list[tuple[str, list[str]]]:
    """(doc name, [block, ...]) for every doc with console blocks."""
    found = []
    for doc in DOCS:
        blocks = [m.group(1) for m in CONSOLE.finditer(doc.read_text(encoding="utf-8"))]
        if blocks:
            found.append((doc.name, blocks))
    return found


def _steps(block: str) -> list[tuple[list[str], str, int]]:
    """(argv, expected output, expected exit code) per ``$ tai-fsm`` line."""
    steps: list[tuple[list[str], str, int]] = []
    for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
        command, _, expected = chunk.partition("\n")
        argv = shlex.split(command)
        assert argv[0] == "tai-fsm", f"console blocks run tai-fsm only: {command}"
        lines = expected.splitlines()
        code = 0
        if lines and (match := EXIT.match(lines[-1])):
            code = int(match.group(1))
            lines = lines[:-1]
        steps.append((argv[1:], "\n".join(lines), code))
    return steps


def _matches(expected: str, actual: str) -> bool:
    pattern = re.escape(expected.strip("\n")).replace(re.escape("..."), ".*?")
    return re.fullmatch(pattern, actual.strip("\n"), re.S) is not None


@pytest.mark.parametrize(("doc", "blocks"), _sessions(), ids=[d for d, _ in _sessions()])
def test_doc_cli_sessions_print_what_they_say(
    doc: str, blocks: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "machines").symlink_to(ROOT / "machines")
    monkeypatch.chdir(tmp_path)
    for name in ("TAI_FSM_STORE", "TAI_FSM_GOVERNOR", "TAI_FSM_MACHINES"):
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    for number, block in enumerate(blocks, 1):
        for argv, expected, code in _steps(block):
            try:
                got = main(argv)
            except SystemExit as exc:
                got = int(exc.code or 0)
            out = capsys.readouterr()
            printed = out.out + out.err
            where = f"{doc} console block {number}: tai-fsm {shlex.join(argv)}"
            assert got == code, f"{where}: exit {got}, expected {code}\n{printed}"
            assert _matches(expected, printed), f"{where}: printed\n{printed}"


def test_the_cli_guide_has_sessions() -> None:
    assert any(doc == "cli.md" for doc, _ in _sessions())
