"""Every ```python block in README.md and docs/*.md runs, as written, in a fresh directory
that has the repo's machines/ folder (so the docs cannot drift from the code)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


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
