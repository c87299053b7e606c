"""The runtime CLI commands end to end on a real SQLite file, and the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tai_fsm.cli import main


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    store = f"sqlite:///{tmp_path / 'cli.db'}"

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--store", store, "--governor", "shop",
                     "--machines", "tai_fsm.demo_classes", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_create_send_show_history_state_at(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("create", "order", "o-1", "--data", '{"items": 2}')[0] == 0
    code, out, _ = cli("send", "o-1", "pay", "--actor", "alice", "--reason", "checkout")
    assert code == 0 and "state=paid v2" in out
    code, out, _ = cli("show", "o-1", "--json")
    shown = json.loads(out)
    assert (shown["state"], shown["version"], shown["data"]["items"]) == ("paid", 2, 2)
    assert [t["trigger"] for t in shown["timers"]] == ["expire"]
    code, out, _ = cli("history", "o-1")
    assert "pending -> paid  by alice  (checkout)" in out
    code, out, _ = cli("history", "o-1", "--json")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["version"] for e in lines] == [1, 2] and lines[1]["action"] == "pay"
    code, out, _ = cli("state-at", "o-1", "--version", "1")
    assert code == 0 and "state=pending" in out and "version=1" in out
    code, out, _ = cli("state-at", "o-1", "--time", lines[1]["timestamp"], "--json")
    assert json.loads(out)["version"] == 2


def test_errors_are_one_line_and_non_zero(cli) -> None:  # type: ignore[no-untyped-def]
    cli("create", "order", "o-2", "--data", '{"items": 0}')
    code, _, err = cli("send", "o-2", "pay")
    assert code == 1 and "condition 'has_items' failed" in err
    code, _, err = cli("show", "missing")
    assert code == 1 and "StateNotFound" in err
    code, _, err = cli("create", "order", "o-3", "--data", "{not json")
    assert code == 1 and "--data is not valid JSON" in err
    code, _, err = cli("state-at", "o-2", "--time", "yesterday")
    assert code == 1 and "ISO-8601" in err


def test_verify_stats_export_cleanup(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli("create", "batch_job", "job-1")
    for trigger in ("start", "progress", "succeed"):
        assert cli("send", "job-1", trigger)[0] == 0
    code, out, _ = cli("verify")
    assert code == 0 and "verify OK: 1 stream(s), 4 event(s)" in out
    code, out, _ = cli("stats", "--json")
    stats = json.loads(out)
    assert (stats["total_states"], stats["total_events"], stats["max_version"]) == (1, 4, 4)
    target = tmp_path / "events.jsonl"
    code, _, err = cli("export", "-o", str(target))
    assert code == 0 and "exported 4 events" in err
    assert [json.loads(x)["action"] for x in target.read_text().splitlines()] == [
        "@create", "start", "progress", "succeed"
    ]
    code, out, _ = cli("cleanup", "--older-than", "30d", "--json")
    assert code == 0 and json.loads(out)["deleted_events"] == 0
    code, _, err = cli("cleanup", "--older-than", "soon")
    assert code == 1 and "soon" in err


def test_demo_runs_from_any_directory_and_verifies(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAI_FSM_")}
    result = subprocess.run(
        [sys.executable, "-m", "tai_fsm.cli", "demo", "--instances", "8",
         "--transitions", "80"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "child killed (kill -9)" in out
    assert "all present" in out and "verify OK" in out
    assert "worker killed (kill -9)" in out and "lost 0, doubled 0" in out  # the worker half
    assert "in the order sent: yes" in out and "exit code 0" in out
    assert str(tmp_path / "tai_fsm.db") in out  # says where it left its database
    governor = out.split("governor: ")[1].split()[0]
    check = subprocess.run(
        [sys.executable, "-m", "tai_fsm.cli", "--governor", governor, "verify"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )
    assert check.returncode == 0 and "verify OK" in check.stdout


@pytest.mark.firestore
def test_demo_runs_on_the_firestore_emulator(
    tmp_path: Path, firestore_emulator: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAI_FSM_")}
    env["FIRESTORE_EMULATOR_HOST"] = firestore_emulator
    store = f"firestore://demo-project?prefix=demo{os.getpid()}"
    result = subprocess.run(
        [sys.executable, "-m", "tai_fsm.cli", "demo", "--store", store,
         "--instances", "6", "--transitions", "40"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "child killed (kill -9)" in result.stdout and "verify OK" in result.stdout
    assert f"--store {store}" in result.stdout


def test_send_and_create_refuse_bad_data_and_write_nothing(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("create", "order", "o-9", "--data", '{"items": 2}')[0] == 0
    bad = [
        ("[1,2]", "--data must be a JSON object"),
        ('"hello"', "--data must be a JSON object"),
        ("5", "--data must be a JSON object"),
        ('{"x": NaN}', "NaN is not JSON"),
        ('{"x": Infinity}', "Infinity is not JSON"),
        ('{"x": 123456789012345678901234567890}', "beyond 64 bits"),
        ('{"x": "\\ud800"}', "lone surrogate"),
        ("{not json", "--data is not valid JSON"),
    ]
    for data, message in bad:
        code, _, err = cli("send", "o-9", "pay", "--data", data)
        assert code == 1 and message in err, (data, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        code, _, err = cli("create", "order", "o-10", "--data", data)
        assert code == 1 and message in err, (data, err)
    code, _, err = cli("send", "o-9", "pay", "--actor", "\udcff")
    assert code == 1 and "--actor" in err and "not valid UTF-8" in err
    code, _, err = cli("send", "o-9", "pay", "--reason", "r" * 5000)
    assert code == 1 and "--reason" in err and "longer than 1024" in err
    code, _, err = cli("send", "missing", "pay")
    assert code == 1 and "instance 'missing' not found (governor shop)" in err
    code, _, err = cli("state-at", "o-9", "--version", "99999999999999999999999")
    assert code == 1 and "--version must be an integer from 1 to" in err
    code, out, _ = cli("history", "o-9", "--json")
    assert [json.loads(line)["version"] for line in out.splitlines()] == [1]
    code, _, err = cli("show", "o-10")
    assert code == 1 and "not found" in err
    assert cli("send", "o-9", "pay", "--data", '{"note": "ok"}')[0] == 0
    code, out, _ = cli("verify")
    assert code == 0 and "verify OK: 1 stream(s), 2 event(s)" in out
