"""verify over a governor (every instance, every problem, no traceback) and the retry rules
of the commit (conflicts with backoff and a clear give-up; transient errors; budgets)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from boundary_machines import ALL

from tai_fsm.cli import main
from tai_fsm.errors import StateNotFound, StoreUnavailable, VersionConflict
from tai_fsm.records import AppendResult
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.recordcodec import seal, unseal
from tai_fsm.stores.sqlite import SQLiteStore

GOV = "audit"


async def _fill(store: Store, ids: list[str]) -> None:
    async with Runtime(store, ALL, own_store=False, governor=GOV) as rt:
        for instance_id in ids:
            note = await rt.create("note", instance_id)
            for n in range(4):
                await note.trigger("edit", payload={"n": n})


async def test_verify_all_reports_every_instance(store: Store) -> None:
    await _fill(store, ["a", "b", "c"])
    async with Runtime(store, ALL, own_store=False, governor=GOV) as rt:
        reports = [r async for r in rt.verify_all()]
        assert [(r.stream_id, r.ok, r.events_checked) for r in reports] == [
            ("a", True, 5), ("b", True, 5), ("c", True, 5)
        ]
        with pytest.raises(StateNotFound):
            await rt.verify("nobody")


def _damage(db: Path) -> None:
    """b: an event row that is not JSON; c: a payload forged (the row re-sealed, so only
    the hash chain can tell); d: a state record that is not JSON; e: its whole event log
    deleted."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE events SET data=? WHERE governor=? AND stream_id='b' AND "
                     "version=3", (b"{not json", GOV))
        (raw,) = conn.execute("SELECT data FROM events WHERE governor=? AND stream_id='c' "
                              "AND version=4", (GOV,)).fetchone()
        doc = orjson.loads(unseal(raw))
        doc["payload"] = {"n": 1_000}
        conn.execute("UPDATE events SET data=? WHERE governor=? AND stream_id='c' AND "
                     "version=4", (seal(orjson.dumps(doc)), GOV))
        conn.execute("UPDATE records SET data=? WHERE governor=? AND id='d'", (b"\x00", GOV))
        conn.execute("DELETE FROM events WHERE governor=? AND stream_id='e'", (GOV,))


async def test_verify_all_never_stops_at_a_malformed_record(tmp_path: Path) -> None:
    db = tmp_path / "damaged.db"
    async with SQLiteStore(db) as store:
        await _fill(store, ["a", "b", "c", "d", "e", "f"])
    _damage(db)
    async with Runtime(SQLiteStore(db), ALL, governor=GOV) as rt:
        reports = {r.stream_id: r async for r in rt.verify_all()}
    assert sorted(reports) == ["a", "b", "c", "d", "e", "f"]
    assert [k for k, r in reports.items() if r.ok] == ["a", "f"]
    assert reports["b"].broken_version == 3 and "cannot be read" in reports["b"].problems[0]
    assert reports["c"].broken_version == 4 and "tampered" in reports["c"].problems[0]
    assert "state record cannot be read" in reports["d"].problems[0]
    assert "has no event log" in reports["e"].problems[0]


def test_cli_verify_lists_every_broken_instance_in_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "cli.db"

    async def fill() -> None:
        async with SQLiteStore(db) as store:
            await _fill(store, ["a", "b", "c", "d", "e", "f"])

    asyncio.run(fill())
    _damage(db)
    code = main(["--store", f"sqlite:///{db}", "--governor", GOV, "verify"])
    out, err = capsys.readouterr()
    assert code == 1
    broken = [line.split()[1] for line in out.splitlines() if line.startswith("BROKEN")]
    assert broken == ["b", "c", "d", "e"]
    assert "verify FAILED: 6 stream(s)" in out and "4 broken" in out
    assert "Traceback" not in err and err.startswith("tai-fsm: error: IntegrityError: 4 of 6")
    code = main(["--store", f"sqlite:///{db}", "--governor", GOV, "verify", "--json"])
    report = orjson.loads(capsys.readouterr().out)
    assert code == 1 and [b["stream_id"] for b in report["broken"]] == ["b", "c", "d", "e"]
    code = main(["--store", f"sqlite:///{db}", "--governor", GOV, "verify", "zzz"])
    assert code == 1 and "instance 'zzz' not found (governor audit)" in capsys.readouterr().err


class _Conflicting:
    """A real store whose appends always report a conflict (another writer always won)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.appends = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("inner", "appends", "append_events"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    async def append_events(self, governor: str, stream_id: str, events: Any, **kw: Any
                            ) -> AppendResult:
        if kw.get("expected_version") == 0:  # let creates through
            return await self.inner.append_events(governor, stream_id, events, **kw)
        self.appends += 1
        raise VersionConflict(stream_id, kw["expected_version"], kw["expected_version"] + 1)


async def test_a_trigger_gives_up_after_its_conflict_budget_and_says_so() -> None:
    store = _Conflicting(MemoryStore())
    async with Runtime(store, ALL, max_conflict_retries=3) as rt:  # type: ignore[arg-type]
        note = await rt.create("note", "n")
        with pytest.raises(VersionConflict) as err:
            await note.trigger("edit", payload={"x": 1})
    assert store.appends == 4
    assert err.value.attempts == 4 and err.value.elapsed > 0
    assert any("gave up after 4 attempts over" in n for n in err.value.__notes__)
    assert (note.version, note.data) == (1, {})


async def test_conflicts_back_off_with_full_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, *args: Any) -> Any:
        waits.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr("tai_fsm.retry.asyncio.sleep", record)
    store = _Conflicting(MemoryStore())
    async with Runtime(store, ALL, max_conflict_retries=6) as rt:  # type: ignore[arg-type]
        note = await rt.create("note", "n")
        with pytest.raises(VersionConflict):
            await note.trigger("edit")
    assert len(waits) == 6
    ceilings = [min(VersionConflict.backoff_cap, VersionConflict.backoff_base * 2**i)
                for i in range(6)]
    assert all(0 <= w <= c for w, c in zip(waits, ceilings, strict=True))


class _Unavailable:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.appends = 0

    def __getattribute__(self, name: str) -> Any:
        if name in ("inner", "appends", "append_events"):
            return object.__getattribute__(self, name)
        return getattr(object.__getattribute__(self, "inner"), name)

    async def append_events(self, *args: Any, **kw: Any) -> AppendResult:
        self.appends += 1
        raise StoreUnavailable("the network is down")


async def test_transient_errors_are_retried_within_their_own_budget() -> None:
    inner = MemoryStore()
    async with Runtime(inner, ALL, own_store=False) as rt:
        await rt.create("note", "n")
    store = _Unavailable(inner)
    async with Runtime(store, ALL, max_transient_retries=2,  # type: ignore[arg-type]
                       max_conflict_retries=9, own_store=False) as rt:
        note = await rt.get("n")
        with pytest.raises(StoreUnavailable) as err:
            await note.trigger("edit")
    assert store.appends == 3 and err.value.attempts == 3  # not multiplied by the conflicts
    assert note.version == 1 and await inner.stream_version("default", "n") == 1


async def test_many_writers_on_one_instance_all_commit(store: Store) -> None:
    """Contention inside one process: every task has its own (stale) instance object."""
    writers, sends = (4, 3) if "Firestore" in type(store).__name__ else (8, 6)
    async with Runtime(store, ALL, own_store=False, governor=GOV) as rt:
        await rt.create("note", "hot")

        async def writer(w: int) -> None:
            mine = await rt.get("hot")
            for n in range(sends):
                await mine.trigger("edit", payload={"w": w, "n": n})

        await asyncio.gather(*(writer(w) for w in range(writers)))
        final = await rt.get("hot")
        assert final.version == 1 + writers * sends
        assert final.data["edits"] == writers * sends
        assert (await rt.verify("hot")).ok
