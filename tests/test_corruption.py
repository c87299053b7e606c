"""Damage applied to a real SQLite file: each kind must raise ``IntegrityError`` on read (or be
reported by ``verify``) naming the instance and version — never come back as silently wrong
data. The damage is done with plain ``sqlite3`` behind the store's back, as a disk fault, a
bad restore or a hand edit would."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from rt_machines import Counter

from tai_fsm.errors import IntegrityError, TaiFsmError
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.recordcodec import seal, unseal
from tai_fsm.stores.sqlite import SQLiteStore

GOV = "default"


async def _history(path: Path, events: int = 30) -> None:
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        for name in ("c0", "c1"):
            counter = await rt.create("counter", name)
            for _ in range(events - 1):
                await counter.trigger("increment")


def _sql(path: Path, statement: str, *args: Any) -> list[Any]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def _edit_row(path: Path, table: str, where: str, change: Callable[[dict[str, Any]], None],
              *, reseal: bool) -> None:
    """Decode one row's JSON, change it, store it back (re-sealed like a forger would, or not,
    like a hand edit)."""
    (raw,) = _sql(path, f"SELECT data FROM {table} WHERE {where}")[0]
    body = unseal(raw) if raw.startswith(b'{"_crc"') else raw
    assert body is not None
    document = orjson.loads(body)
    change(document)
    edited = orjson.dumps(document)
    _sql(path, f"UPDATE {table} SET data = ? WHERE {where}", seal(edited) if reseal else edited)


def _truncate_half(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


async def _read_all(path: Path, instance: str) -> list[Any]:
    async with SQLiteStore(path) as store:
        return [e async for e in store.read_events(GOV, instance)]


def _names(error: BaseException, instance: str, version: int) -> None:
    text = str(error)
    assert repr(instance) in text and f"version {version}" in text, text


async def test_a_flipped_byte_in_an_event_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    (raw,) = _sql(path, "SELECT data FROM events WHERE stream_id = 'c0' AND version = 12")[0]
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    _sql(path, "UPDATE events SET data = ? WHERE stream_id = 'c0' AND version = 12",
         bytes(flipped))
    with pytest.raises(IntegrityError) as caught:
        await _read_all(path, "c0")
    _names(caught.value, "c0", 12)
    assert len(await _read_all(path, "c1")) == 30  # the other instance is untouched


@pytest.mark.parametrize("field", ["payload", "action", "timestamp"])
async def test_a_hand_edited_event_is_named_on_read(tmp_path: Path, field: str) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    values = {"payload": {"amount": 10**6}, "action": "stop", "timestamp": "2020-01-01T00:00:00Z"}
    _edit_row(path, "events", "stream_id = 'c0' AND version = 7",
              lambda doc: doc.__setitem__(field, values[field]), reseal=False)
    with pytest.raises(IntegrityError) as caught:
        await _read_all(path, "c0")
    _names(caught.value, "c0", 7)


async def test_a_forged_event_breaks_the_hash_chain_at_its_version(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    _edit_row(path, "events", "stream_id = 'c0' AND version = 7",
              lambda doc: doc.__setitem__("payload", {"forged": True}), reseal=True)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        report = await rt.verify("c0")
        assert not report.ok and report.broken_version == 7
        assert (await rt.verify("c1")).ok


async def test_a_deleted_event_is_a_named_gap(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    _sql(path, "DELETE FROM events WHERE stream_id = 'c0' AND version = 9")
    with pytest.raises(IntegrityError) as caught:
        await _read_all(path, "c0")
    _names(caught.value, "c0", 10)
    assert "version 9 is missing" in str(caught.value)


async def test_swapped_event_versions_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    _sql(path, "UPDATE events SET version = -1 WHERE stream_id = 'c0' AND version = 4")
    _sql(path, "UPDATE events SET version = 4 WHERE stream_id = 'c0' AND version = 5")
    _sql(path, "UPDATE events SET version = 5 WHERE stream_id = 'c0' AND version = -1")
    with pytest.raises(IntegrityError) as caught:
        await _read_all(path, "c0")
    _names(caught.value, "c0", 4)


async def test_a_hand_edited_state_record_is_named_by_get(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    _edit_row(path, "records", "kind = 'states' AND id = 'c0'",
              lambda doc: doc["data"]["data"].__setitem__("n", 999), reseal=False)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        with pytest.raises(IntegrityError) as caught:
            await rt.get("c0")
        _names(caught.value, "c0", 30)
        assert (await rt.get("c1")).data == {"n": 29}


async def test_a_forged_state_record_is_reported_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    _edit_row(path, "records", "kind = 'states' AND id = 'c0'",
              lambda doc: doc["data"]["data"].__setitem__("n", 999), reseal=True)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        report = await rt.verify("c0")
        assert not report.ok and report.broken_version == 30
        with pytest.raises(IntegrityError):
            await rt.recover("c0")


async def test_swapped_state_record_ids_are_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    _sql(path, "UPDATE records SET id = 'tmp' WHERE id = 'c0'")
    _sql(path, "UPDATE records SET id = 'c0' WHERE id = 'c1'")
    _sql(path, "UPDATE records SET id = 'c1' WHERE id = 'tmp'")
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        for name in ("c0", "c1"):
            with pytest.raises(IntegrityError) as caught:
                await rt.get(name)
            assert f"id {name!r}" in str(caught.value)


async def test_a_hand_edited_snapshot_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        await rt.snapshot(await rt.get("c0"))
    versions = [v for (v,) in _sql(path, "SELECT version FROM snapshots WHERE stream_id = 'c0'")]
    assert versions == [30]
    _edit_row(path, "snapshots", f"stream_id = 'c0' AND version = {versions[-1]}",
              lambda doc: doc["data"]["data"].__setitem__("n", -5), reseal=False)
    async with SQLiteStore(path) as store:
        with pytest.raises(IntegrityError) as caught:
            await store.load_snapshot(GOV, "c0")
        _names(caught.value, "c0", versions[-1])


async def test_a_truncated_file_is_never_read_as_data(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path, events=200)
    _sql(path, "PRAGMA wal_checkpoint(TRUNCATE)")
    _truncate_half(path)
    with pytest.raises(TaiFsmError) as caught:
        async with SQLiteStore(path) as store:
            for name in ("c0", "c1"):
                [e async for e in store.read_events(GOV, name)]
                await store.read_state(GOV, name)
    assert isinstance(caught.value, IntegrityError), caught.value


# ---------------------------------------------------------------------- forged snapshots
async def _snapshot_at(path: Path, instance: str, version: int) -> None:
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        past = await rt.state_at(instance, version=version)
        record = (await rt.store.read_state(GOV, instance)).snapshot
        events = [e async for e in rt.history(instance, after_version=version - 1)]
        event = events[0]
        assert past.version == version == event.version
        snapshot = event.to_state.model_copy(update={
            "version": version,
            "metadata": record.metadata.model_copy(
                update={"context": {"event_id": event.id, "event_hash": event.hash}}
            ),
        })
        await rt.store.save_snapshot(GOV, instance, snapshot)


@pytest.mark.parametrize("forge", ["data", "event_hash"])
async def test_a_forged_resealed_snapshot_is_caught_by_verify_and_ignored(
    tmp_path: Path, forge: str, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 15 §1: a snapshot edited in the file and sealed again (its CRC is right) must
    not pass verify, and state_at / recovery must replay the log instead of returning it."""
    path = tmp_path / "s.db"
    await _history(path)
    await _snapshot_at(path, "c0", 20)

    def change(doc: dict[str, Any]) -> None:
        if forge == "data":
            doc["data"]["data"]["n"] = -5
        else:
            doc["metadata"]["context"]["event_hash"] = "0" * 64

    _edit_row(path, "snapshots", "stream_id = 'c0' AND version = 20", change, reseal=True)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        report = await rt.verify("c0")
        assert not report.ok and report.broken_version == 20, report.problems
        assert "snapshot at version 20" in report.problems[0]
        assert (await rt.verify("c1")).ok
        with caplog.at_level("WARNING", logger="tai_fsm.runtime"):
            past = await rt.state_at("c0", version=25)
        assert (past.version, past.data) == (25, {"n": 24})
        assert "c0" in caplog.text and "replaying the event log instead" in caplog.text
        report_r = await rt.recover("c0")
        assert report_r.snapshot_version == 0 and report_r.instance.data == {"n": 29}
    from tai_fsm.cli import main

    code = await asyncio.to_thread(main, ["--store", f"sqlite:///{path}", "verify"])
    out = capsys.readouterr()
    assert code == 1 and "BROKEN c0 at version 20: the snapshot at version 20" in out.out


async def test_a_snapshot_that_agrees_with_the_log_is_used(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    await _snapshot_at(path, "c0", 20)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        assert (await rt.verify("c0")).ok
        report = await rt.recover("c0")
        assert (report.snapshot_version, report.replayed_events) == (20, 10)


async def test_a_damaged_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    await _history(path)
    await _snapshot_at(path, "c0", 10)
    await _snapshot_at(path, "c0", 20)
    _edit_row(path, "snapshots", "stream_id = 'c0' AND version = 20",
              lambda doc: doc["data"]["data"].__setitem__("n", -5), reseal=False)
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        report = await rt.recover("c0")  # the broken seal is logged, never raised
        assert (report.snapshot_version, report.instance.data) == (10, {"n": 29})
        past = await rt.state_at("c0", version=22)
        assert past.data == {"n": 21}


async def test_after_compaction_a_snapshot_is_checked_against_the_next_event(
    tmp_path: Path,
) -> None:
    """Its own event compacted away, a snapshot must still agree with the event after it:
    that event's prev_hash (hash-covered) and the from_state compaction kept on it."""
    path = tmp_path / "s.db"
    await _history(path)
    await _snapshot_at(path, "c0", 20)
    async with SQLiteStore(path) as store:
        result = await store.compact_stream(GOV, "c0", up_to_version=20)
        assert result.deleted_events == 20
    async with Runtime(SQLiteStore(path), [Counter]) as rt:
        assert (await rt.verify("c0")).ok
        assert (await rt.state_at("c0", version=21)).data == {"n": 20}
        assert (await rt.recover("c0")).snapshot_version == 20
    for forge in ("data", "event_hash"):
        copy = tmp_path / f"{forge}.db"
        copy.write_bytes(path.read_bytes())

        def change(doc: dict[str, Any], forge: str = forge) -> None:
            if forge == "data":
                doc["data"]["data"]["n"] = -5
            else:
                doc["metadata"]["context"]["event_hash"] = "0" * 64

        _edit_row(copy, "snapshots", "stream_id = 'c0' AND version = 20", change, reseal=True)
        async with Runtime(SQLiteStore(copy), [Counter]) as rt:
            report = await rt.verify("c0")
            assert not report.ok and report.broken_version == 20, (forge, report.problems)
            assert "the snapshot at version 20" in report.problems[0]
            with pytest.raises(IntegrityError, match="compacted and no snapshot covers"):
                await rt.state_at("c0", version=21)  # never the forged data
            with pytest.raises(IntegrityError):
                await rt.recover("c0")
