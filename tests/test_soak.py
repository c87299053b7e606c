"""The soak test (benchmarks/soak.py), short: writer processes SIGKILLed at random on one
SQLite file; every acknowledged transition must be in the log, dense, never duplicated, and
the state record, the rebuild and the hash chain must agree. The long run's figures are in
docs/reliability.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


@pytest.mark.slow
def test_random_sigkills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = soak
    spec.loader.exec_module(soak)
    outcome = soak.run(
        kills=8, writers=3, instances=3, seed=7, db=tmp_path / "soak.db", max_seconds=120
    )
    assert outcome.ok, outcome.problems
    assert outcome.kills == 8
    assert outcome.acknowledged > 0 and outcome.events >= outcome.acknowledged
