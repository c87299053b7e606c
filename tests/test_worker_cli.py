"""The worker commands of the CLI on a real SQLite file: ``send --queue`` (re-sent ids
recognised), ``worker`` (SIGTERM: in-flight work finished, leases released, exit 0;
refused with another shard count), ``workers --json``, ``timers --json``, ``show`` listing
refused commands."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from worker_support import TESTS, start_worker_process

from tai_fsm.cli import main

GOV = "cli"


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.syspath_prepend(str(TESTS))

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--store", store, "--governor", GOV, "--machines", "worker_machines",
                     *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    run.store = store  # type: ignore[attr-defined]
    return run


def _wait(check, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_queue_worker_status_and_graceful_stop(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("create", "ticket", "t-1")[0] == 0
    assert cli("create", "ticket", "t-2")[0] == 0
    code, out, _ = cli("send", "t-1", "note", "--queue", "--data", '{"n": 1}',
                       "--command-id", "c-1", "--json")
    receipt = json.loads(out)
    assert code == 0 and not receipt["duplicate"] and receipt["status"]["status"] == "pending"
    code, out, _ = cli("send", "t-1", "note", "--queue", "--data", '{"n": 1}',
                       "--command-id", "c-1")
    assert code == 0 and out.startswith("already known: command c-1")
    cli("send", "t-1", "close", "--queue", "--command-id", "c-2")
    cli("send", "t-1", "note", "--queue", "--command-id", "c-3")  # closed by then
    cli("send", "t-2", "wait")  # now, in this process: a timer due in 300 ms
    code, out, _ = cli("workers", "--json")
    status = json.loads(out)
    assert status["inbox"]["pending"] == 3 and status["workers"] == []
    code, out, _ = cli("timers", "--json")
    timers = json.loads(out)
    assert [(t["instance"], t["trigger"]) for t in timers["timers"]] == [("t-2", "expire")]

    proc = start_worker_process(cli.store, GOV, "w1", tmp_path / "w1.log")
    try:
        def drained() -> bool:
            _code, out, _ = cli("workers", "--json")
            status = json.loads(out)
            return status["inbox"]["pending"] == 0 and bool(status["workers"])

        _wait(drained)
        _wait(lambda: json.loads(cli("timers", "--json")[1])["timers"] == [])
        code, out, _ = cli("workers", "--json")
        status = json.loads(out)
        [live] = status["workers"]
        assert live["worker_id"] == "w1" and live["live"] and live["owned"] == [0, 1, 2, 3]
        assert all(lease["holder"] and lease["holder"].startswith("w1.")
                   for lease in status["leases"])
        code, out, _ = cli("workers")
        assert "1 live worker(s)" in out and "shard leases held: 4/4" in out
        # a worker with another shard count is refused while w1 runs
        code, _, err = cli("worker", "--id", "w9", "--shards", "8")
        assert code == 1 and "--shards 4" in err
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            proc.kill()
    log = (tmp_path / "w1.log").read_text()
    assert "event=stopped" in log and "event=timer_fired instance=t-2" in log
    code, out, _ = cli("workers", "--json")
    status = json.loads(out)
    assert status["workers"] == [] and not any(lease["holder"] for lease in status["leases"])
    code, out, _ = cli("show", "t-1", "--json")
    shown = json.loads(out)
    assert shown["state"] == "closed"
    assert [(r["command_id"], r["status"]) for r in shown["rejected"]] == [("c-3", "rejected")]
    code, out, _ = cli("show", "t-1")
    assert "rejected: note (command c-3) in state closed" in out
    code, out, _ = cli("send", "t-1", "note", "--queue", "--command-id", "c-3", "--wait", "1")
    assert code == 1 and "already known" in out and "rejected" in out


def test_timers_lists_due_and_pending(cli) -> None:  # type: ignore[no-untyped-def]
    cli("create", "ticket", "t-1")
    cli("create", "ticket", "t-2")
    cli("send", "t-1", "wait")
    time.sleep(0.4)  # due now (no worker)
    cli("send", "t-2", "hold")
    code, out, _ = cli("timers", "--json")
    timers = json.loads(out)
    assert code == 0 and timers["due"] == 1
    rows = {t["instance"]: t for t in timers["timers"]}
    assert rows["t-1"]["overdue_seconds"] > 0 and rows["t-2"]["overdue_seconds"] < 0
    assert datetime.fromisoformat(rows["t-1"]["due"]) < datetime.now(UTC) + timedelta(1)
    code, out, _ = cli("timers", "--due", "--json")
    assert [t["instance"] for t in json.loads(out)["timers"]] == ["t-1"]
    code, out, _ = cli("timers")
    assert "2 pending timer(s), 1 due" in out
