"""Coordination across OS processes on one SQLite file: transfers through
``execute_transaction`` and one lock shared by two processes (mutual exclusion checked
through fenced commits; a paused holder loses its lease and its fenced writes)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tai_fsm.coordination import WAITS, Lease, TransactionManager
from tai_fsm.errors import LockNotHeld
from tai_fsm.records import StateSnapshot
from tai_fsm.stores import ops
from tai_fsm.stores.sqlite import SQLiteStore

GOV = "g"
ACCOUNTS = [f"a{n}" for n in range(4)]

_TRANSFERS = textwrap.dedent(
    """
    import asyncio, random, sys, time
    from pathlib import Path
    from tai_fsm.coordination import TransactionManager
    from tai_fsm.records import StateSnapshot
    from tai_fsm.retry import RetryPolicy
    from tai_fsm.stores.sqlite import SQLiteStore

    path, name, count, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    ACCOUNTS = ["a0", "a1", "a2", "a3"]

    async def main() -> None:
        rng = random.Random(name)
        async with SQLiteStore(path, busy_timeout=10.0) as store:
            tm = TransactionManager(store, policy=RetryPolicy(max_attempts=200, cap=0.05))
            (folder / f"ready-{name}").touch()
            while not (folder / "go").exists():
                time.sleep(0.001)
            retries = 0
            for i in range(count):
                source, target = rng.sample(ACCOUNTS, 2)
                key = f"transfer-{name}-{i}"

                async def transfer(tx):
                    if await tx.exists(key):
                        return 0
                    got = await tx.batch_get_states([source, target])
                    (a, av), (b, bv) = got[source], got[target]
                    tx.update_state(source, StateSnapshot(
                        id=source, data={"balance": a.data["balance"] - 1}), expected_version=av)
                    tx.update_state(target, StateSnapshot(
                        id=target, data={"balance": b.data["balance"] + 1}), expected_version=bv)
                    tx.save_state(key, StateSnapshot(id=key, data={"from": source, "to": target}))
                    return tx.attempt - 1

                retries += await tm.execute_transaction("g", transfer)
            print(retries)

    asyncio.run(main())
    """
)


def _start(script: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_ready(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(procs):
        assert time.monotonic() < deadline, "children did not start"
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)


def test_several_processes_run_transfer_transactions(tmp_path: Path) -> None:
    """3 processes x 30 transfer transactions on 4 accounts: total invariant, each transfer
    applied exactly once, each account's version counts exactly its transfers."""
    path = tmp_path / "bank.db"

    async def open_accounts() -> None:
        async with SQLiteStore(path) as store:
            for account in ACCOUNTS:
                await store.save_state(GOV, account, StateSnapshot(id=account,
                                                                   data={"balance": 100}))

    asyncio.run(open_accounts())
    procs, count = 3, 30
    children = [_start(_TRANSFERS, tmp_path, str(path), f"p{n}", str(count), str(tmp_path))
                for n in range(procs)]
    _wait_ready(tmp_path, children)
    (tmp_path / "go").touch()
    retries = 0
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        retries += int(out.strip())

    async def check() -> None:
        async with SQLiteStore(path) as store:
            accounts = await store.batch_get_states(GOV, ACCOUNTS)
            assert sum(s.data["balance"] for s, _ in accounts.values()) == 400
            touched = dict.fromkeys(ACCOUNTS, 0)
            transfers = [sid async for sid in store.list_states(GOV) if sid.startswith("tr")]
            assert len(transfers) == procs * count
            for key in transfers:
                moved, version = await store.get_state(GOV, key)
                assert version == 1
                touched[moved.data["from"]] += 1
                touched[moved.data["to"]] += 1
            assert {a: v - 1 for a, (_, v) in accounts.items()} == touched

    asyncio.run(check())
    assert retries > 0, "the transactions never conflicted; the test proved nothing"


_LOCKER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from tai_fsm.coordination import TransactionManager
    from tai_fsm.records import StateSnapshot
    from tai_fsm.stores.sqlite import SQLiteStore

    path, name, rounds, folder = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])

    async def main() -> None:
        async with SQLiteStore(path, busy_timeout=10.0) as store:
            tm = TransactionManager(store, governor="g", poll_cap=0.05)
            (folder / f"ready-{name}").touch()
            while not (folder / "go").exists():
                time.sleep(0.001)
            violations = 0
            for _ in range(rounds):
                async with tm.lock("critical", name, ttl=30, wait=60) as held:
                    async def enter(tx):
                        snap, version = await tx.get_state("inside")
                        tx.update_state("inside", StateSnapshot(id="inside", data=name),
                                        expected_version=version)
                        return snap.data
                    if await tm.execute_transaction("g", enter, fence=held) is not None:
                        violations += 1
                    await asyncio.sleep(0.005)
                    async def leave(tx):
                        _, version = await tx.get_state("inside")
                        tx.update_state("inside", StateSnapshot(id="inside", data=None),
                                        expected_version=version)
                    await tm.execute_transaction("g", leave, fence=held)
            print(violations)

    asyncio.run(main())
    """
)


def test_two_processes_are_never_both_inside(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"

    async def setup() -> None:
        async with SQLiteStore(path) as store:
            await store.save_state(GOV, "inside", StateSnapshot(id="inside", data=None))

    asyncio.run(setup())
    rounds = 15
    children = [_start(_LOCKER, tmp_path, str(path), f"p{n}", str(rounds), str(tmp_path))
                for n in range(2)]
    _wait_ready(tmp_path, children)
    (tmp_path / "go").touch()
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        assert int(out.strip()) == 0, "a process found the other one inside"

    async def check() -> None:
        async with SQLiteStore(path) as store:
            lease = await store.read_record(GOV, "critical", kind=ops.LOCKS)
            assert Lease.of("critical", lease.snapshot).fencing_token == 2 * rounds
            assert (await store.get_state(GOV, "inside"))[1] == 1 + 4 * rounds
            assert [r async for r in store.list_records(GOV, kind=WAITS)] == []

    asyncio.run(check())


_PAUSED = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from tai_fsm.coordination import TransactionManager
    from tai_fsm.errors import LockNotHeld
    from tai_fsm.records import StateSnapshot
    from tai_fsm.stores import ops
    from tai_fsm.stores.sqlite import SQLiteStore

    path, folder = sys.argv[1], Path(sys.argv[2])

    async def main() -> None:
        async with SQLiteStore(path, busy_timeout=10.0) as store:
            tm = TransactionManager(store, governor="g")
            held = await tm.acquire_lock("job", "paused", ttl=0.5)
            await tm.fenced_commit(held, [ops.Put("out", StateSnapshot(id="out", data="paused"))])
            print(held.fencing_token)
            (folder / "ready-paused").touch()
            deadline = time.monotonic() + 60
            while not (folder / "taken").exists():  # "paused": no renewal meanwhile
                assert time.monotonic() < deadline
                time.sleep(0.01)
            results = []
            try:
                stale = StateSnapshot(id="out", data="stale")
                await tm.fenced_commit(held, [ops.Put("out", stale)])
                results.append("written")
            except LockNotHeld:
                results.append("rejected")
            try:
                await tm.release_lock("job", held.lock_token)
                results.append("released")
            except LockNotHeld:
                results.append("not-held")
            print(" ".join(results))

    asyncio.run(main())
    """
)


def test_a_paused_process_loses_its_lease_and_its_fenced_write(tmp_path: Path) -> None:
    path = tmp_path / "paused.db"
    asyncio.run(SQLiteStore(path).close())
    child = _start(_PAUSED, tmp_path, str(path), str(tmp_path))
    _wait_ready(tmp_path, [child])

    async def take_over() -> int:
        async with SQLiteStore(path, busy_timeout=10.0) as store:
            tm = TransactionManager(store, governor=GOV)
            successor = await tm.acquire_lock("job", "successor", ttl=30, wait=20)
            await tm.fenced_commit(successor, [ops.Put("out", StateSnapshot(id="out",
                                                                          data="successor"))])
            (tmp_path / "taken").touch()
            return successor.fencing_token

    token = asyncio.run(take_over())
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    first, results = out.strip().splitlines()
    assert token > int(first)
    assert results == "rejected not-held"

    async def check() -> None:
        async with SQLiteStore(path) as store:
            assert (await store.get_state(GOV, "out"))[0].data == "successor"
            tm = TransactionManager(store, governor=GOV)
            holder = await tm.holder("job")
            assert holder is not None and holder.client_id == "successor"
            try:
                await tm.release_lock("job", "wrong")
            except LockNotHeld:
                pass
            else:  # pragma: no cover
                raise AssertionError("a wrong token released the lock")

    asyncio.run(check())
