"""Distributed locks on every store: leases, fencing tokens, expiry, renewal, release by
token, the ``async with tm.lock(...)`` form, and mutual exclusion checked through fenced
commits."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tai_fsm as fsm
from tai_fsm.coordination import WAITS, Lease, Transaction, TransactionManager
from tai_fsm.errors import (
    IntegrityError,
    InvalidInput,
    LockNotHeld,
    OperationTimeout,
    StateNotFound,
)
from tai_fsm.records import DistributedLock, StateSnapshot
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store

GOV = "locks"


async def _waits(store: Store, governor: str = GOV) -> list[str]:
    return [r async for r in store.list_records(governor, kind=WAITS)]


async def _lease(store: Store, resource: str) -> Lease:
    stored = await store.read_record(GOV, resource, kind=ops.LOCKS)
    return Lease.of(resource, stored.snapshot)


# ---------------------------------------------------------------------- seed scenario
async def test_seed_scenario_second_client_refused_until_release(store: Store) -> None:
    tm = fsm.TransactionManager(store, governor=GOV)
    first = await tm.acquire_lock("resource", "client1", ttl=30.0)
    assert isinstance(first, DistributedLock)
    assert (first.resource, first.client_id, first.fencing_token) == ("resource", "client1", 1)
    assert first.expires_at - first.acquired_at == timedelta(seconds=30)
    with pytest.raises(OperationTimeout):
        await tm.acquire_lock("resource", "client2", ttl=30.0, wait=0)
    with pytest.raises(OperationTimeout):
        await tm.acquire_lock("resource", "client2", ttl=30.0, wait=0.2)
    await tm.release_lock("resource", first.lock_token)
    second = await tm.acquire_lock("resource", "client2", ttl=30.0, wait=0)
    assert second.client_id == "client2" and second.fencing_token == 2
    assert second.lock_token != first.lock_token
    assert await _waits(store) == []  # every wait record withdrawn


async def test_a_waiter_gets_the_lock_once_it_is_released(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    first = await tm.acquire_lock("r", "a")

    async def release_soon() -> None:
        await asyncio.sleep(0.2)
        await tm.release_lock("r", first.lock_token)

    releaser = asyncio.create_task(release_soon())
    started = time.monotonic()
    second = await tm.acquire_lock("r", "b", wait=10)
    await releaser
    assert second.fencing_token == 2 and time.monotonic() - started < 8
    assert await _waits(store) == []


# ---------------------------------------------------------------------- the lease record
async def test_the_lease_record_layout_and_tokens_increasing_forever(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    tokens = []
    for n in range(4):
        held = await tm.acquire_lock("res", f"c{n % 2}", ttl=5)
        tokens.append(held.fencing_token)
        data = (await store.read_record(GOV, "res", kind=ops.LOCKS)).snapshot.data
        assert data["client_id"] == f"c{n % 2}" and data["lock_token"] == held.lock_token
        assert data["fencing_token"] == held.fencing_token and data["ttl"] == 5
        assert datetime.fromisoformat(data["expires_at"]) == held.expires_at
        assert datetime.fromisoformat(data["acquired_at"]) == held.acquired_at
        await tm.release_lock("res", held.lock_token)
        freed = (await store.read_record(GOV, "res", kind=ops.LOCKS)).snapshot.data
        assert freed["client_id"] is None and freed["lock_token"] is None
        assert freed["fencing_token"] == held.fencing_token  # kept, never deleted
        assert freed["last_client_id"] == f"c{n % 2}"
    assert tokens == [1, 2, 3, 4]
    assert await tm.holder("res") is None


async def test_holder_reports_the_live_lease(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    assert await tm.holder("free") is None
    held = await tm.acquire_lock("busy", "me", ttl=10)
    assert await tm.holder("busy") == held


# ---------------------------------------------------------------------- expiry and fencing
async def test_a_holder_that_stops_renewing_loses_the_lease_and_its_fenced_writes(
    store: Store,
) -> None:
    tm = TransactionManager(store, governor=GOV)
    await store.save_state(GOV, "shared", StateSnapshot(id="shared", data=0))
    stale = await tm.acquire_lock("job", "paused-client", ttl=0.4)
    await tm.fenced_commit(stale, [ops.Put("shared", StateSnapshot(id="shared", data=1))])
    started = time.monotonic()
    successor = await tm.acquire_lock("job", "next-client", ttl=30, wait=10)
    assert time.monotonic() - started < 8
    assert successor.fencing_token > stale.fencing_token
    await tm.fenced_commit(successor, [ops.Put("shared", StateSnapshot(id="shared", data=2))])
    with pytest.raises(LockNotHeld):  # the paused client wakes up and tries to write
        await tm.fenced_commit(stale, [ops.Put("shared", StateSnapshot(id="shared", data=3))])

    async def stale_tx(tx: Transaction) -> None:
        tx.save_state("shared", StateSnapshot(id="shared", data=4))

    with pytest.raises(LockNotHeld):  # not retried: permanent
        await tm.execute_transaction(GOV, stale_tx, fence=stale)
    with pytest.raises(LockNotHeld):
        await tm.renew(stale)
    with pytest.raises(LockNotHeld):
        await tm.release_lock("job", stale.lock_token)
    assert (await store.get_state(GOV, "shared"))[0].data == 2
    await tm.execute_transaction(GOV, stale_tx, fence=successor)
    assert (await store.get_state(GOV, "shared"))[0].data == 4


async def test_an_expired_lease_cannot_be_renewed_or_released(store: Store) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    tm = TransactionManager(store, governor=GOV, clock=lambda: now[0])
    held = await tm.acquire_lock("r", "c", ttl=10)
    now[0] += timedelta(seconds=9)
    renewed = await tm.renew(held)
    assert renewed.expires_at == now[0] + timedelta(seconds=10)
    assert (renewed.lock_token, renewed.fencing_token) == (held.lock_token, 1)
    assert renewed.acquired_at == held.acquired_at
    longer = await tm.renew(renewed, ttl=60)
    assert longer.expires_at == now[0] + timedelta(seconds=60)
    now[0] += timedelta(seconds=59)
    assert (await tm.renew(longer)).expires_at == now[0] + timedelta(seconds=60)  # keeps 60
    now[0] += timedelta(seconds=60)
    assert await tm.holder("r") is None
    with pytest.raises(LockNotHeld, match="expired"):
        await tm.renew(longer)
    with pytest.raises(LockNotHeld, match="expired"):
        await tm.release_lock("r", held.lock_token)
    again = await tm.acquire_lock("r", "other", wait=0)
    assert again.fencing_token == 2


async def test_wrong_tokens_raise_lock_not_held(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    with pytest.raises(LockNotHeld):
        await tm.release_lock("never-taken", "token")
    held = await tm.acquire_lock("r", "c")
    with pytest.raises(LockNotHeld, match="held by 'c'"):
        await tm.release_lock("r", "not-the-token")
    forged = held.model_copy(update={"lock_token": "forged"})
    with pytest.raises(LockNotHeld):
        await tm.renew(forged)
    await tm.release_lock("r", held.lock_token)
    with pytest.raises(LockNotHeld, match="free"):
        await tm.release_lock("r", held.lock_token)  # twice


async def test_fence_on_a_resource_never_locked_is_refused(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    ghost = DistributedLock(
        resource="nothing", client_id="c", lock_token="t", fencing_token=1,
        acquired_at=datetime.now(UTC), expires_at=datetime.now(UTC),
    )
    with pytest.raises(LockNotHeld):
        await tm.fenced_commit(ghost, [ops.Put("x", StateSnapshot(id="x"))])
    assert not await store.exists(GOV, "x")
    with pytest.raises(InvalidInput, match="governor"):  # fences are checked in GOV only
        await tm.execute_transaction("elsewhere", lambda tx: None, fence=ghost)


# ---------------------------------------------------------------------- async with
async def test_lock_context_releases_on_exit_and_on_error(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    async with tm.lock("r", "a", ttl=5) as held:
        assert (await tm.holder("r")) == held
    assert await tm.holder("r") is None
    with pytest.raises(RuntimeError, match="inside"):
        async with tm.lock("r", "a", ttl=5):
            raise RuntimeError("inside")
    assert await tm.holder("r") is None
    with pytest.raises(LockNotHeld):  # the lease was lost inside: exclusivity not assured
        async with tm.lock("r", "a", ttl=5) as held:
            stolen = await _lease(store, "r")
            await store.commit(GOV, [ops.Put(
                "r", stolen.freed(datetime.now(UTC)).snapshot(), kind=ops.LOCKS
            )])
    async with tm.lock("r", "b", ttl=5) as held:
        assert held.fencing_token == 4


async def test_two_clients_are_never_both_inside(store: Store, store_backend: str) -> None:
    """Each client enters by a fenced transaction that finds ``inside == 0`` and sets it to
    1, and leaves by setting it back: a second client inside would find 1."""
    tm = TransactionManager(store, governor=GOV, poll_cap=0.05)
    await store.save_state(GOV, "inside", StateSnapshot(id="inside", data=0))
    rounds = 3 if store_backend == "firestore" else 8
    violations: list[str] = []

    async def client(name: str) -> int:
        entered = 0
        for _ in range(rounds):
            async with tm.lock("critical", name, ttl=30, wait=30) as held:

                async def enter(tx: Transaction) -> None:
                    snap, version = await tx.get_state("inside")
                    if snap.data != 0:
                        violations.append(name)
                    tx.update_state("inside", StateSnapshot(id="inside", data=1),
                                    expected_version=version)

                await tm.execute_transaction(GOV, enter, fence=held)
                entered += 1
                await asyncio.sleep(0.01)

                async def leave(tx: Transaction) -> None:
                    _, version = await tx.get_state("inside")
                    tx.update_state("inside", StateSnapshot(id="inside", data=0),
                                    expected_version=version)

                await tm.execute_transaction(GOV, leave, fence=held)
        return entered

    assert await asyncio.gather(client("a"), client("b")) == [rounds, rounds]
    assert violations == []
    assert (await _lease(store, "critical")).fencing_token == 2 * rounds
    assert await _waits(store) == []


# ---------------------------------------------------------------------- input and records
async def test_bad_lock_arguments_are_refused(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    for kwargs in (
        {"resource": "a/b", "client_id": "c"},
        {"resource": "r", "client_id": ""},
        {"resource": "r", "client_id": "c", "ttl": 0},
        {"resource": "r", "client_id": "c", "ttl": float("inf")},
        {"resource": "r", "client_id": "c", "ttl": True},
        {"resource": "r", "client_id": "c", "wait": -1},
        {"resource": "r", "client_id": "c", "wait": float("nan")},
    ):
        with pytest.raises(InvalidInput):
            await tm.acquire_lock(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await tm.release_lock("r", "")
    with pytest.raises(InvalidInput):
        await tm.renew("not a lock")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await tm.fenced_commit("not a lock", [])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        TransactionManager(store, governor="bad/gov")
    assert [r async for r in store.list_records(GOV, kind=ops.LOCKS)] == []


async def test_a_damaged_lease_record_is_not_trusted(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    await store.commit(GOV, [ops.Put(
        "r", StateSnapshot(id="r", data={"fencing_token": "seven"}), kind=ops.LOCKS
    )])
    with pytest.raises(IntegrityError, match="fencing_token"):
        await tm.acquire_lock("r", "c", wait=0)
    # a record with only a fencing token (written by other tools) counts as free
    await store.commit(GOV, [ops.Put(
        "s", StateSnapshot(id="s", data={"holder": "x", "fencing_token": 3}), kind=ops.LOCKS
    )])
    assert (await tm.acquire_lock("s", "c", wait=0)).fencing_token == 4


async def test_locks_live_in_the_managers_governor(store: Store) -> None:
    one = TransactionManager(store, governor="g1")
    two = TransactionManager(store, governor="g2")
    a = await one.acquire_lock("r", "c", wait=0)
    b = await two.acquire_lock("r", "c", wait=0)  # another governor: another lock
    assert a.fencing_token == b.fencing_token == 1
    with pytest.raises(StateNotFound):
        await store.read_record(GOV, "r", kind=ops.LOCKS)


@given(
    base=st.floats(min_value=0.001, max_value=1.0),
    cap=st.floats(min_value=0.001, max_value=2.0),
    attempt=st.integers(min_value=0, max_value=200),
)
def test_lock_poll_backoff_is_bounded_and_never_negative(
    base: float, cap: float, attempt: int
) -> None:
    """The poll policy a waiting acquire uses: never negative, never above its cap."""
    from tai_fsm.coordination.locks import _Busy
    from tai_fsm.retry import RetryPolicy

    policy = RetryPolicy(max_attempts=2**31, base=base, cap=max(base, cap), max_elapsed=5)
    delay = policy.delay(_Busy(Lease("r")), attempt)
    assert 0.0 <= delay <= max(base, cap)


async def test_a_cancelled_waiter_withdraws_its_wait_record(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    await tm.acquire_lock("r", "holder", ttl=60)
    waiting = asyncio.create_task(tm.acquire_lock("r", "waiter", wait=30))
    deadline = time.monotonic() + 10
    while await _waits(store) != ["waiter"]:
        assert time.monotonic() < deadline, "the waiter never recorded its wait"
        await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await _waits(store) == []


async def test_an_error_in_the_block_wins_over_a_failed_release(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    with pytest.raises(KeyError) as caught:
        async with tm.lock("r", "a", ttl=5):
            stolen = await _lease(store, "r")
            await store.commit(GOV, [ops.Put(
                "r", stolen.freed(datetime.now(UTC)).snapshot(), kind=ops.LOCKS
            )])
            raise KeyError("inside")
    assert any("releasing lock 'r' failed" in note for note in caught.value.__notes__)
