"""SQLiteStore beyond the shared contract: several OS processes on one file, the file format
(WAL, schema version table), damaged rows, lock timeouts, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tai_fsm.errors import (
    IntegrityError,
    InvalidInput,
    SerializationError,
    StoreFailure,
    StoreUnavailable,
    TaiFsmError,
    VersionConflict,
)
from tai_fsm.records import Event, StateSnapshot, StoreStats
from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.stores.sqlite_schema import SCHEMA_VERSION, map_error

GOV = "g"

_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from tai_fsm.errors import StoreUnavailable, VersionConflict, StateNotFound
    from tai_fsm.records import Event, StateSnapshot
    from tai_fsm.stores.sqlite import SQLiteStore

    path, name, count, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

    async def main() -> None:
        async with SQLiteStore(path, busy_timeout=10.0) as store:
            (folder / f"ready-{name}").touch()
            while not (folder / "go").exists():
                time.sleep(0.001)
            retries = 0
            for i in range(count):
                while True:
                    try:
                        stored = await store.read_state("g", "counter")
                        version, total = stored.version, stored.snapshot.data["total"]
                    except StateNotFound:
                        version, total = 0, 0
                    state = StateSnapshot(id="counter", data={"total": total + 1})
                    event = Event(id=f"{name}-{i}", action="add", to_state=state)
                    try:
                        await store.append_events(
                            "g", "counter", [event], expected_version=version, state=state
                        )
                        break
                    except (VersionConflict, StoreUnavailable):
                        retries += 1
            print(retries)

    asyncio.run(main())
    """
)


def _event(stream_id: str, n: int, data: object = None) -> Event:
    state = StateSnapshot(id=stream_id, data={"n": n} if data is None else data)
    return Event(id=f"{stream_id}-{n}", action="inc", to_state=state)


def _race(script: str, path: Path, procs: int, count: int, folder: Path) -> list[int]:
    """Start ``procs`` OS processes running ``script`` on ``path``, release them together
    once all are ready, and return the number each printed (its retries/conflicts)."""
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), f"p{n}", str(count), str(folder)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(procs)
    ]
    deadline = time.monotonic() + 60
    while len(list(folder.glob("ready-*"))) < procs:
        assert time.monotonic() < deadline, "writers did not start"
        assert all(w.poll() is None for w in writers), [w.communicate() for w in writers]
        time.sleep(0.01)
    (folder / "go").touch()
    printed = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        printed.append(int(out.strip()))
    return printed


def test_several_processes_append_to_one_stream(tmp_path: Path) -> None:
    """4 OS processes x 50 read-modify-append cycles on one stream: every version exactly
    once, no gap, and no lost update (the counter in the state record reaches 200)."""
    path = tmp_path / "shared.db"
    asyncio.run(SQLiteStore(path).close())  # create the schema before the race
    procs, count = 4, 50
    retries = sum(_race(_WRITER, path, procs, count, tmp_path))
    asyncio.run(_check_counter(path, procs, count))
    assert retries > 0, "the writers never contended; the test proved nothing"


async def _check_counter(path: Path, procs: int, count: int) -> None:
    async with SQLiteStore(path) as store:
        events = [e async for e in store.read_events(GOV, "counter", batch_size=64)]
        assert [e.version for e in events] == list(range(1, procs * count + 1))
        ids = [e.id for e in events]
        assert sorted(ids) == sorted(f"p{n}-{i}" for n in range(procs) for i in range(count))
        assert [e.to_state.data["total"] for e in events] == list(range(1, procs * count + 1))
        state = await store.read_state(GOV, "counter")
        assert state.version == procs * count and state.snapshot.data == {"total": procs * count}


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


@pytest.mark.parametrize(
    ("garbage", "why"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"id": 1}', "action"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
async def test_corrupted_rows_raise_integrity_error_naming_the_record(
    tmp_path: Path, garbage: bytes, why: str
) -> None:
    path = tmp_path / "damaged.db"
    async with SQLiteStore(path) as store:
        await store.append_events(GOV, "s1", [_event("s1", 1), _event("s1", 2)], expected_version=0)
        await store.save_state(GOV, "s1", StateSnapshot(id="s1"))
        await store.save_snapshot(GOV, "s1", StateSnapshot(id="s1", version=2))
    with _raw(path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE version = 2", (garbage,))
        conn.execute("UPDATE records SET data = ?", (garbage,))
        conn.execute("UPDATE snapshots SET data = ?", (garbage,))
    async with SQLiteStore(path) as store:
        with pytest.raises((IntegrityError, SerializationError)) as caught:
            [e async for e in store.read_events(GOV, "s1")]
        message = str(caught.value)
        assert "'g'" in message and "'s1'" in message and "version 2" in message
        if why != "action":
            assert why in message
        with pytest.raises(IntegrityError, match="'s1', version 1"):
            await store.read_state(GOV, "s1")
        with pytest.raises(IntegrityError, match="snapshot"):
            await store.load_snapshot(GOV, "s1")
        one = [e async for e in store.read_events(GOV, "s1", up_to_version=1)]
        assert [e.version for e in one] == [1]  # intact rows still read


async def test_row_recording_another_version_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "moved.db"
    async with SQLiteStore(path) as store:
        await store.append_events(GOV, "s", [_event("s", 1), _event("s", 2)], expected_version=0)
    with _raw(path) as conn:
        conn.execute("DELETE FROM events WHERE version = 2")
        conn.execute("UPDATE events SET version = 2 WHERE version = 1")
    async with SQLiteStore(path) as store:
        with pytest.raises(IntegrityError, match="records 's' version 1"):
            [e async for e in store.read_events(GOV, "s")]


async def test_schema_version_table_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    async with SQLiteStore(path) as store:
        settings = await store.pragmas()
    assert settings["journal_mode"] == "wal"
    assert settings["synchronous"] == "FULL"
    assert settings["schema_version"] == SCHEMA_VERSION
    with _raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"records", "events", "snapshots", "schema_version"} <= tables
    async with SQLiteStore(path, synchronous="normal", busy_timeout=2.5) as store:
        settings = await store.pragmas()
    assert (settings["synchronous"], settings["busy_timeout"]) == ("NORMAL", 2500)
    async with SQLiteStore(path, synchronous="EXTRA") as store:
        assert (await store.pragmas())["synchronous"] == "EXTRA"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    async with SQLiteStore(path) as store:
        await store.save_state(GOV, "s", StateSnapshot(id="s"))
    with _raw(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(InvalidInput, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        SQLiteStore(path)


async def test_foreign_or_damaged_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with _raw(other) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(InvalidInput, match="not a tai-fsm store"):
        SQLiteStore(other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IntegrityError, match="damaged or not a tai-fsm store"):
        SQLiteStore(junk)


def test_invalid_settings_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="synchronous"):
        SQLiteStore(tmp_path / "a.db", synchronous="OFF")
    for bad in (-1, "5", True, float("nan"), float("inf")):
        with pytest.raises(InvalidInput, match="busy_timeout"):
            SQLiteStore(tmp_path / "a.db", busy_timeout=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "a.db").exists()


async def test_write_lock_timeout_is_store_unavailable_and_loop_stays_free(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.db"
    async with SQLiteStore(path, busy_timeout=0.3) as store:
        blocker = _raw(path)
        blocker.execute("BEGIN IMMEDIATE")
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="locked") as caught:
                await store.append_events(GOV, "s", [_event("s", 1)], expected_version=0)
            waited = time.monotonic() - started
        finally:
            ticking.cancel()
            blocker.execute("ROLLBACK")
            blocker.close()
        assert caught.value.is_transient()
        assert waited >= 0.25
        assert ticks >= 10, "the event loop was blocked while SQLite waited for the lock"
        assert (await store.append_events(GOV, "s", [_event("s", 1)], expected_version=0)).version


async def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "durable.db"
    async with SQLiteStore(path) as store:
        await store.append_events(
            GOV, "s", [_event("s", 1)], expected_version=0, state=StateSnapshot(id="s", data=1)
        )
    async with SQLiteStore(path) as store:
        assert (await store.read_state(GOV, "s")).version == 1
        assert await store.stream_version(GOV, "s") == 1


async def test_close_is_idempotent_and_a_closed_store_refuses(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    thread = store._thread
    await store.close()
    await store.close()
    assert not thread.is_alive()
    with pytest.raises(TaiFsmError, match="closed"):
        await store.read_state(GOV, "s")


async def test_a_dropped_store_stops_its_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d.db")
    await store.save_state(GOV, "s", StateSnapshot(id="s"))
    thread = store._thread
    del store
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


async def test_parent_folders_are_created_and_paths_accept_pathlike(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    async with SQLiteStore(path) as store:
        assert store.path == str(path) and store.url == f"sqlite:///{path}"
        await store.save_state(GOV, "s", StateSnapshot(id="s"))
    assert path.exists()


async def test_several_stores_in_one_process_share_a_file(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    async with SQLiteStore(path) as first, SQLiteStore(path) as second:
        await first.append_events(GOV, "s", [_event("s", 1)], expected_version=0)
        results = await asyncio.gather(
            first.append_events(GOV, "s", [_event("s", 2)], expected_version=1),
            second.append_events(
                GOV,
                "s",
                [Event(id="other", action="x", to_state=StateSnapshot(id="s"))],
                expected_version=1,
            ),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["AppendResult", "VersionConflict"]
        assert await second.stream_version(GOV, "s") == 2


def _wal_frames(path: Path) -> int:
    with _raw(path) as conn:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


async def test_queued_writes_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    """Writes queued while the worker is busy are group-committed (one transaction, one
    fsync) with a savepoint each: a failing write is rolled back alone."""
    path = tmp_path / "group.db"
    async with SQLiteStore(path) as store:
        await store.append_events(GOV, "taken", [_event("taken", 1)], expected_version=0)
        frames_before = _wal_frames(path)
        gate = threading.Event()
        blocked = asyncio.ensure_future(store._run(lambda conn: gate.wait(10)))
        await asyncio.sleep(0.05)  # the worker is now inside the gate job
        good = [
            store.append_events(
                GOV,
                f"s{n}",
                [_event(f"s{n}", 1)],
                expected_version=0,
                state=StateSnapshot(id=f"s{n}", data=n),
            )
            for n in range(20)
        ]
        conflict = store.append_events(GOV, "taken", [_event("taken", 9)], expected_version=0)
        bad_data = store.append_events(
            GOV, "bad", [_event("bad", 1, data={"x": object()})], expected_version=None
        )
        direct = store.write_state(GOV, "direct", StateSnapshot(id="direct"), expected_version=None)
        tasks = [asyncio.ensure_future(c) for c in [*good, conflict, bad_data, direct]]
        await asyncio.sleep(0.05)  # every write is queued behind the gate
        gate.set()
        await blocked
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert [r.version for r in results[:20]] == [1] * 20  # type: ignore[union-attr]
        assert isinstance(results[20], VersionConflict) and results[20].actual == 1
        assert isinstance(results[21], SerializationError)
        assert results[22] == 1
        stats = await store.get_stats(GOV)
        assert (stats.total_events, stats.total_states) == (21, 21)
        assert await store.stream_version(GOV, "bad") == 0
        assert await store.stream_version(GOV, "taken") == 1
        for n in range(20):
            assert (await store.read_state(GOV, f"s{n}")).snapshot.data == n
        # 21 separate commits would append well over 21 WAL frames; one group commit few.
        assert _wal_frames(path) - frames_before < 21


async def test_a_group_that_cannot_lock_fails_every_member(tmp_path: Path) -> None:
    path = tmp_path / "group-locked.db"
    async with SQLiteStore(path, busy_timeout=0.2) as store:
        blocker = _raw(path)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            results = await asyncio.gather(
                *(
                    store.append_events(GOV, f"s{n}", [_event(f"s{n}", 1)], expected_version=0)
                    for n in range(5)
                ),
                return_exceptions=True,
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert len({id(r) for r in results}) == 5  # each caller gets its own exception
        assert await store.get_stats() == StoreStats()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sqlite3.OperationalError("database is locked"), StoreUnavailable),
        (sqlite3.OperationalError("disk I/O error"), StoreFailure),
        (sqlite3.OperationalError("attempt to write a readonly database"), StoreFailure),
        (sqlite3.OperationalError("database or disk is full"), StoreFailure),
        (sqlite3.OperationalError("unable to open database file"), StoreFailure),
        (sqlite3.OperationalError("no such table: events"), IntegrityError),
        (sqlite3.DatabaseError("database disk image is malformed"), IntegrityError),
        (sqlite3.DatabaseError("file is not a database"), IntegrityError),
        (sqlite3.IntegrityError("UNIQUE constraint failed: events.version"), IntegrityError),
        (sqlite3.InterfaceError("bad parameter"), TaiFsmError),
    ],
)
def test_every_sqlite_error_maps_into_the_error_tree(
    error: sqlite3.Error, expected: type[TaiFsmError]
) -> None:
    mapped = map_error(error, "/data/x.db", 1.5)
    assert type(mapped) is expected
    assert "/data/x.db" in str(mapped) and str(error) in str(mapped)
    assert mapped.is_transient() == (expected is StoreUnavailable)


_TRANSFERS = textwrap.dedent(
    """
    import asyncio, random, sys, time
    from pathlib import Path
    from tai_fsm.errors import StoreUnavailable, VersionConflict
    from tai_fsm.records import Event, StateSnapshot
    from tai_fsm.stores import ops
    from tai_fsm.stores.sqlite import SQLiteStore

    path, name, count, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    ACCOUNTS = ["a0", "a1", "a2", "a3", "a4"]

    async def main() -> None:
        rng = random.Random(name)
        async with SQLiteStore(path, busy_timeout=10.0) as store:
            (folder / f"ready-{name}").touch()
            while not (folder / "go").exists():
                time.sleep(0.001)
            conflicts = 0
            for i in range(count):
                source, target = rng.sample(ACCOUNTS, 2)
                while True:
                    got = await store.batch_read_states("g", [source, target])
                    a, b = got[source], got[target]
                    moved = {"from": source, "to": target, "by": name, "i": i}
                    entry = Event(id=f"{name}-{i}", action="transfer",
                                  to_state=StateSnapshot(id=f"ledger-{name}", data=moved))
                    try:
                        await store.commit("g", [
                            ops.Put(source, StateSnapshot(id=source, data={
                                "balance": a.snapshot.data["balance"] - 1}), a.version),
                            ops.Put(target, StateSnapshot(id=target, data={
                                "balance": b.snapshot.data["balance"] + 1}), b.version),
                            ops.Append(f"ledger-{name}", [entry], i),
                        ])
                        break
                    except (VersionConflict, StoreUnavailable):
                        conflicts += 1
            print(conflicts)

    asyncio.run(main())
    """
)


def test_several_processes_commit_transfers_atomically(tmp_path: Path) -> None:
    """4 OS processes x 40 transfers between 5 accounts, each transfer one commit of two
    conditional puts and a ledger append: the total balance never changes, every transfer
    is applied exactly once, and each account's version counts exactly its transfers."""
    path = tmp_path / "bank.db"

    async def open_accounts() -> None:
        async with SQLiteStore(path) as store:
            for n in range(5):
                account = StateSnapshot(id=f"a{n}", data={"balance": 100})
                await store.save_state(GOV, f"a{n}", account)

    asyncio.run(open_accounts())
    procs, count = 4, 40
    conflicts = sum(_race(_TRANSFERS, path, procs, count, tmp_path))

    async def check() -> None:
        async with SQLiteStore(path) as store:
            accounts = await store.batch_read_states(GOV, [f"a{n}" for n in range(5)])
            assert sum(s.snapshot.data["balance"] for s in accounts.values()) == 500
            touched = {f"a{n}": 0 for n in range(5)}
            for p in range(procs):
                ledger = [e async for e in store.read_events(GOV, f"ledger-p{p}")]
                assert [e.version for e in ledger] == list(range(1, count + 1))
                for entry in ledger:
                    touched[entry.to_state.data["from"]] += 1
                    touched[entry.to_state.data["to"]] += 1
            assert {k: s.version - 1 for k, s in accounts.items()} == touched

    asyncio.run(check())
    assert conflicts > 0, "the writers never contended; the test proved nothing"


async def test_a_full_database_is_a_permanent_failure_and_writes_nothing(tmp_path: Path) -> None:
    """SQLITE_FULL for real (the file may not grow past max_page_count): the error names
    the condition, is not transient, and the commit leaves nothing behind."""
    path = tmp_path / "full.db"
    async with SQLiteStore(path) as store:
        await store.save_state(GOV, "small", StateSnapshot(id="small", data=1))
    with _raw(path) as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    async with SQLiteStore(path) as store:
        await store._run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 2}"))
        big = StateSnapshot(id="big", data="x" * 200_000)
        with pytest.raises(StoreFailure) as caught:
            await store.save_state(GOV, "big", big)
        assert caught.value.condition == "disk_full" and "the disk is full" in str(caught.value)
        assert not caught.value.is_transient() and caught.value.backoff_duration(0) == 0
        assert not await store.exists(GOV, "big")
        assert (await store.read_state(GOV, "small")).snapshot.data == 1


_FILE_LIMIT = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from tai_fsm.errors import StoreFailure
    from tai_fsm.records import StateSnapshot
    from tai_fsm.stores.sqlite import SQLiteStore

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # EFBIG instead of a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    async def main() -> None:
        async with SQLiteStore(sys.argv[1]) as store:
            try:
                for n in range(100):
                    big = StateSnapshot(id=f"s{n}", data="x" * 50_000)
                    await store.save_state("g", f"s{n}", big)
            except StoreFailure as exc:
                print(exc.condition, exc.is_transient())
                return
            print("no error")

    asyncio.run(main())
    """
)


def test_the_file_size_limit_is_named_not_retried(tmp_path: Path) -> None:
    """EFBIG for real: a child process whose file-size limit (ulimit -f) is 400 KB."""
    done = subprocess.run(
        [sys.executable, "-c", _FILE_LIMIT, str(tmp_path / "limited.db")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["file_too_large", "False"], done.stdout


async def test_read_only_commands_never_create_a_store(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "store.db"
    with pytest.raises(StoreFailure, match="no store at") as caught:
        SQLiteStore(missing, create=False)
    assert caught.value.condition == "missing" and not (tmp_path / "no").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreFailure, match=r"no store at .*empty\.db \(an empty file\)"):
        SQLiteStore(empty, read_only=True)
    assert empty.stat().st_size == 0


async def test_a_store_opens_read_only_for_reading(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    async with SQLiteStore(path) as store:
        await store.append_events(GOV, "s", [_event("s", 1), _event("s", 2)], expected_version=0)
        await store.save_state(GOV, "s", StateSnapshot(id="s", data={"n": 2}))
    async with SQLiteStore(path, read_only=True) as store:
        assert [e.version async for e in store.read_events(GOV, "s")] == [1, 2]
        assert (await store.read_state(GOV, "s")).snapshot.data == {"n": 2}
        with pytest.raises(StoreFailure, match="read-only") as caught:
            await store.save_state(GOV, "t", StateSnapshot(id="t"))
        assert caught.value.condition == "read_only"
    async with SQLiteStore(path) as store:
        assert not await store.exists(GOV, "t")


def test_a_store_on_a_read_only_medium_can_be_read(tmp_path: Path) -> None:
    """A read-only bind mount (needs root, which CI and these machines run as): the WAL
    side files cannot be created there, so the store opens the file immutable."""
    source, mounted = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()

    async def write() -> None:
        async with SQLiteStore(source / "s.db") as store:
            await store.save_state(GOV, "s", StateSnapshot(id="s", data={"n": 1}))

    async def read() -> None:
        async with SQLiteStore(mounted / "s.db", read_only=True) as store:
            assert (await store.read_state(GOV, "s")).snapshot.data == {"n": 1}
            with pytest.raises(StoreFailure, match="read-only"):
                await store.save_state(GOV, "t", StateSnapshot(id="t"))

    asyncio.run(write())
    bind = subprocess.run(["mount", "--bind", str(source), str(mounted)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(mounted)], capture_output=True, check=False
        )
        assert remount.returncode == 0, remount.stderr
        asyncio.run(read())
        with pytest.raises(StoreFailure) as caught:
            SQLiteStore(mounted / "s.db")  # a writer cannot open it: named, not retried
        assert caught.value.condition in ("read_only", "cannot_open")
    finally:
        subprocess.run(["umount", str(mounted)], check=False)


async def test_a_batched_group_decides_each_commit_alone(tmp_path: Path) -> None:
    """A group of commits on distinct streams is checked first and written at once (no
    savepoints): a conflict and a landed retry get their own outcomes; two commits on one
    stream in one group fall back to a savepoint each."""
    async with SQLiteStore(tmp_path / "batched.db") as store:
        landed = _event("again", 1)
        await store.append_events(GOV, "again", [landed], expected_version=0)
        await store.append_events(GOV, "taken", [_event("taken", 1)], expected_version=0)
        results = await asyncio.gather(
            *(store.append_events(GOV, f"b{n}", [_event(f"b{n}", 1)], expected_version=0,
                                  state=StateSnapshot(id=f"b{n}", data=n)) for n in range(30)),
            store.append_events(GOV, "taken", [_event("taken", 7)], expected_version=0),
            store.append_events(GOV, "again", [landed], expected_version=0),
            return_exceptions=True,
        )
        assert [r.version for r in results[:30]] == [1] * 30  # type: ignore[union-attr]
        assert isinstance(results[30], VersionConflict)
        assert results[31].already_applied  # type: ignore[union-attr]
        for n in range(30):
            assert (await store.read_state(GOV, f"b{n}")).snapshot.data == n
        same = await asyncio.gather(
            store.append_events(GOV, "same", [_event("same", 1)], expected_version=0),
            store.append_events(GOV, "same", [_event("same", 2)], expected_version=0),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in same) == ["AppendResult", "VersionConflict"]
        assert await store.stream_version(GOV, "same") == 1
