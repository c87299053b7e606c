"""What a new user typed at the CLI and did not get (issue 13 items 6-10, issue 15 §1/§4):
one-line errors, ``--json`` anywhere, ``list``, read-only commands that never create a
store, machines bound only when used, wording, ``cleanup --vacuum``, the demo's checks."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tai_fsm.cli import main
from tai_fsm.cli.errors import one_line
from tai_fsm.demo import new_governor
from tai_fsm.errors import VersionConflict
from tai_fsm.retry import RetryPolicy, retry_sync

ROOT = Path(__file__).resolve().parent.parent

Run = Callable[..., tuple[int, str, str]]

# A machine folder as a user has it: 'light' needs no code, 'order' names callbacks that
# only a Python class provides (none here).
LIGHT = """\
name: light
initial: "off"
states: ["off", "on"]
transitions:
  - {trigger: switch_on, source: "off", dest: "on"}
  - {trigger: switch_off, source: "on", dest: "off"}
"""

# A module whose callback raises KeyError (it reads a payload key the caller did not send).
PAYMENTS = '''
from typing import Any
import tai_fsm as fsm

class Payment(fsm.Machine):
    name = "payment"
    open = fsm.State(initial=True)
    paid = fsm.State(final=True)
    pay = open.to(paid, before=["record_amount"])

    def record_amount(self, event: Any) -> None:
        self.data["amount"] = event.payload["amount"]
'''


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    machines = tmp_path / "machines"
    machines.mkdir()
    (machines / "light.yaml").write_text(LIGHT)
    (machines / "order.yaml").write_text((ROOT / "machines" / "order.yaml").read_text())
    (tmp_path / "payments.py").write_text(PAYMENTS)
    monkeypatch.chdir(tmp_path)
    for name in ("TAI_FSM_STORE", "TAI_FSM_GOVERNOR", "TAI_FSM_MACHINES"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def run(workdir: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    def call(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as exc:  # usage errors (argparse)
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    return call


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("tai-fsm"), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------------- item 9: machines
def test_create_and_send_with_the_default_machines_folder(run: Run) -> None:
    """'order' in ./machines names callbacks nobody defines: that matters only for 'order'."""
    assert run("create", "light", "l-1") == (0, "created light 'l-1': state=off v1\n", "")
    code, out, _ = run("send", "l-1", "switch_on")
    assert (code, out) == (0, "l-1: switch_on -> state=on v2\n")
    code, _, err = run("create", "order", "o-1")
    line = _one_error_line(err)
    assert code == 1 and "callback 'stamp_paid_at' (on_enter of state 'paid')" in line
    assert "(+3 more; --traceback shows all)" in line
    code, _, err = run("create", "lamp", "x")
    assert code == 1 and "machine 'lamp' is not declared in --machines './machines' (it " \
        "declares: light, order)" in _one_error_line(err)


# ---------------------------------------------------------------------- item 7: one line
def test_a_callback_exception_is_one_line_and_traceback_shows_more(run: Run) -> None:
    assert run("--machines", "payments", "create", "payment", "p-1")[0] == 0
    code, _, err = run("--machines", "payments", "send", "p-1", "pay")
    line = _one_error_line(err)
    assert code == 1
    assert line.startswith("tai-fsm: error: KeyError: 'amount' (raised in record_amount at ")
    assert "payments.py:12; --traceback shows more)" in line
    for args in (("--traceback", "send", "p-1", "pay"), ("send", "p-1", "pay", "--traceback")):
        code, _, err = run("--machines", "payments", *args)
        assert code == 1 and "Traceback (most recent call last)" in err
        assert 'self.data["amount"] = event.payload["amount"]' in err
    code, out, _ = run("--machines", "payments", "send", "p-1", "pay", "--data", '{"amount": 5}')
    assert (code, out) == (0, "p-1: pay -> state=paid v2\n")


def test_usage_errors_are_one_line(run: Run) -> None:
    code, _, err = run("show")
    assert code == 2 and _one_error_line(err) == (
        "tai-fsm show: error: the following arguments are required: id "
        "(see 'tai-fsm show --help')"
    )
    code, _, err = run("lst")
    assert code == 2 and "invalid choice: 'lst'" in _one_error_line(err)


def test_a_conflict_after_the_retries_says_how_many_in_its_one_line() -> None:
    attempts = 0

    def always() -> None:
        nonlocal attempts
        attempts += 1
        raise VersionConflict("o-1", 3, 4)

    with pytest.raises(VersionConflict) as caught:
        retry_sync(always, RetryPolicy(max_attempts=3, base=0.0, cap=0.0))
    line = one_line(caught.value)
    assert line.startswith("VersionConflict: version conflict on 'o-1': expected version 3")
    assert "(gave up after 3 attempts over " in line and "\n" not in line


# ---------------------------------------------------------------------- item 8: --json
def test_json_before_or_after_the_command(run: Run, workdir: Path) -> None:
    run("create", "light", "l-1")
    run("send", "l-1", "switch_on")
    commands = [
        ("show", "l-1"), ("history", "l-1"), ("list",), ("stats",), ("export",),
        ("validate", "machines/light.yaml"), ("verify",), ("state-at", "l-1", "--version", "1"),
    ]
    for command in commands:
        before = run("--json", *command)
        after = run(*command, "--json")
        assert before[0] == after[0] == 0, (command, before, after)
        assert before[1] == after[1], command
        if command[0] == "validate":
            json.loads(before[1])  # one report
        else:
            for line in before[1].splitlines():
                json.loads(line)  # JSON lines
    assert json.loads(run("--json", "show", "l-1")[1])["state"] == "on"
    assert json.loads(run("--json", "validate", "machines/light.yaml")[1])["ok"] is True


# ---------------------------------------------------------------------- item 6: list
def test_list_by_machine_and_state(run: Run) -> None:
    for n in range(1, 6):
        run("create", "light", f"l-{n}")
    for n in (2, 3, 5):
        run("send", f"l-{n}", "switch_on")
    code, out, _ = run("list", "--state", "on")
    assert (code, out) == (0, "l-2  light  on  v2\nl-3  light  on  v2\nl-5  light  on  v2\n"
                              "3 instances in state 'on' in governor 'default'\n")
    code, out, _ = run("list", "--machine", "light", "--state", "off", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["machine"], r["state"], r["version"]) for r in rows] == [
        ("l-1", "light", "off", 1), ("l-4", "light", "off", 1)
    ]
    code, out, _ = run("list", "--limit", "2")
    assert out.splitlines()[-1] == "2 instances in governor 'default' (--limit reached)"
    code, out, _ = run("list", "-m", "order")
    assert (code, out) == (0, "0 instances of machine 'order' in governor 'default'\n")
    code, _, err = run("list", "--state", "")
    assert code == 1 and "--state must be 1 to 512 UTF-8 bytes" in _one_error_line(err)


# ---------------------------------------------------------------------- issue 15: no store
@pytest.mark.parametrize(
    "command",
    [("show", "x"), ("history", "x"), ("state-at", "x", "--version", "1"), ("verify",),
     ("verify", "x"), ("stats",), ("export",), ("list",), ("send", "x", "switch_on"),
     ("cleanup", "--older-than", "1d"), ("diagram", "machines/light.yaml", "--instance", "x")],
)
def test_commands_that_need_a_store_never_create_one(
    run: Run, workdir: Path, command: tuple[str, ...]
) -> None:
    path = workdir / "sub" / "dir" / "store.db"
    code, _, err = run("--store", f"sqlite:///{path}", *command)
    assert code == 1
    assert _one_error_line(err) == (
        f"tai-fsm: error: StoreFailure: no store at {path} (no such file)"
    )
    assert not (workdir / "sub").exists()
    empty = workdir / "empty.db"
    empty.touch()
    code, _, err = run("--store", f"sqlite:///{empty}", *command)
    assert code == 1 and "no store at" in _one_error_line(err) and "an empty file" in err
    assert empty.stat().st_size == 0 and not Path(f"{empty}-wal").exists()


def test_only_writing_commands_create_the_store(run: Run, workdir: Path) -> None:
    path = workdir / "new" / "store.db"
    assert run("--store", f"sqlite:///{path}", "create", "light", "l-1")[0] == 0
    assert path.exists()
    code, out, _ = run("--store", f"sqlite:///{path}", "show", "l-1")
    assert code == 0 and out.startswith("l-1  (light)  state=off  version=1")


def test_output_files_that_cannot_be_written_are_one_line(run: Run, workdir: Path) -> None:
    run("create", "light", "l-1")
    for command in (("export", "-o", "/missing/dir/f"), ("schema", "-o", "/missing/dir/f"),
                    ("diagram", "machines/light.yaml", "-o", "/missing/dir/f")):
        code, _, err = run(*command)
        assert code == 1, command
        assert _one_error_line(err) == (
            "tai-fsm: error: InvalidInput: cannot write '/missing/dir/f': "
            "No such file or directory"
        )


def test_demo_checks_its_numbers_first_and_governors_differ(run: Run, workdir: Path) -> None:
    for args, message in ((("--transitions", "-1"), "--transitions must be an integer from 10"),
                          (("--instances", "0"), "--instances must be an integer from 1 ")):
        code, out, err = run("demo", *args)
        assert code == 1 and message in _one_error_line(err) and out == ""
    assert not (workdir / "tai_fsm.db").exists()
    governors = {new_governor() for _ in range(50)}  # all in the same second or two
    assert len(governors) == 50
    assert all(g.startswith("demo-2") and len(g) == len("demo-20260101-120000-abcdef")
               for g in governors)


# ---------------------------------------------------------------------- item 10: wording
def test_a_missing_instance_is_named_the_same_everywhere(run: Run) -> None:
    run("create", "light", "l-1")
    expected = "tai-fsm: error: StateNotFound: instance 'zzz' not found (governor default)"
    for command in (("show", "zzz"), ("history", "zzz"), ("state-at", "zzz", "--version", "1"),
                    ("verify", "zzz"), ("send", "zzz", "switch_on"),
                    ("diagram", "machines/light.yaml", "--instance", "zzz")):
        code, _, err = run(*command)
        assert (code, _one_error_line(err)) == (1, expected), command
    code, _, err = run("create", "light", "l-1")
    assert _one_error_line(err) == (
        "tai-fsm: error: InstanceExists: instance 'l-1' already exists (version 1)"
    )


def test_long_user_input_is_cut_in_error_messages(run: Run) -> None:
    run("create", "light", "l-1")
    code, _, err = run("show", "x" * 5000)
    assert code == 1 and _one_error_line(err) == (
        "tai-fsm: error: InvalidInput: instance id is 5000 UTF-8 bytes; the limit is 512"
    )
    code, _, err = run("state-at", "l-1", "--time", "t" * 5000)
    line = _one_error_line(err)
    assert code == 1 and len(line) < 300 and "chars)" in line
    code, _, err = run("diagram", "y" * 5000)
    assert code == 1 and len(_one_error_line(err)) < 400


def test_validate_counts_each_file_once(run: Run, workdir: Path) -> None:
    (workdir / "linked").symlink_to(workdir / "machines")
    code, out, _ = run("validate", "machines", "linked", "machines/light.yaml",
                       "./machines/light.yaml")
    assert (code, out) == (0, "OK: 2 machines in 2 files: light, order\n")
    (workdir / "machines" / "bad.yaml").write_text(
        "name: bad\ninitial: a\nstates: [a, b]\ntransitions:\n  - {trigger: go, source: *, "
        "dest: b}\n"
    )
    code, out, err = run("validate", "machines", "nowhere")
    assert code == 1
    assert out.splitlines() == [
        "nowhere: no such file or folder",
        "machines/bad.yaml:5:28: invalid YAML: while scanning an alias expected alphabetic or "
        "numeric character, but found ','; a bare * starts a YAML alias: quote it, e.g. "
        "source: '*'",
    ]
    assert err == "2 problems in 1 of 3 files, 1 path with no machine file\n"


# ---------------------------------------------------------------------- cleanup --vacuum
def test_cleanup_vacuum_reports_the_bytes_freed_on_disk(run: Run, workdir: Path) -> None:
    import asyncio

    from rt_machines import Counter

    from tai_fsm.runtime.runtime import Runtime
    from tai_fsm.stores.sqlite import SQLiteStore

    path = workdir / "big.db"

    async def fill() -> None:
        async with Runtime(SQLiteStore(path, synchronous="NORMAL"), [Counter]) as rt:
            for n in range(4):
                counter = await rt.create("counter", f"c{n}")
                for _ in range(250):
                    await counter.trigger("increment", payload={"pad": "x" * 400})
                await rt.snapshot(counter)

    asyncio.run(fill())
    url = f"sqlite:///{path}"
    code, out, _ = run("--store", url, "cleanup", "--older-than", "0s")
    assert code == 0 and "removed 1,000 events and 8 snapshots (" in out
    assert "add --vacuum to give the space back to the disk" in out
    size = sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
    code, out, _ = run("--store", url, "cleanup", "--older-than", "0s", "--vacuum", "--json")
    report = json.loads(out)
    assert code == 0 and report["deleted_events"] == 0
    assert report["file_bytes_before"] == pytest.approx(size, rel=0.1)
    assert report["freed_bytes"] == report["file_bytes_before"] - report["file_bytes_after"]
    assert report["freed_bytes"] > 400_000
    assert os.path.getsize(path) == report["file_bytes_after"]  # WAL emptied
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    code, out, _ = run("--store", url, "--machines", "rt_machines", "verify")
    assert code == 0 and "verify OK: 4 stream(s)" in out
    code, out, _ = run("--store", "memory://", "cleanup", "--older-than", "1d", "--vacuum")
    assert code == 0 and "vacuum: nothing to do" in out


def test_a_store_that_cannot_be_written_is_opened_read_only(
    run: Run, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read-only commands work on a read-only copy (issue 15 §3): when opening for writing
    is refused as read-only, they open the file read-only."""
    from tai_fsm.cli import common
    from tai_fsm.errors import StoreFailure

    run("create", "light", "l-1")
    opened: list[dict[str, bool]] = []
    real = common.open_store

    def read_only_medium(url: str, *, create: bool = True, read_only: bool = False) -> object:
        opened.append({"create": create, "read_only": read_only})
        if not read_only:
            raise StoreFailure("the file is read-only", condition="read_only")
        return real(url, create=create, read_only=read_only)

    monkeypatch.setattr(common, "open_store", read_only_medium)
    for command in (("show", "l-1"), ("history", "l-1"), ("verify",), ("list",)):
        assert run(*command)[0] == 0, command
    assert opened[:2] == [{"create": False, "read_only": False},
                          {"create": False, "read_only": True}]
