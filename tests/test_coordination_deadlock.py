"""Deadlock detection on every store: waiters record what they wait for; a cycle in the
wait-for graph makes its youngest waiter raise ``DeadlockDetected`` well before its wait
times out, and the others proceed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tai_fsm.coordination import WAITS, TransactionManager, WaitRecord
from tai_fsm.coordination.deadlock import Waiter, find_cycle
from tai_fsm.errors import DeadlockDetected, OperationTimeout
from tai_fsm.stores.base import Store
from tai_fsm.stores.memory import MemoryStore

GOV = "locks"
WAIT = 10.0  # every wait below would time out after this; detection must come well before


async def _waits(store: Store) -> list[str]:
    return [r async for r in store.list_records(GOV, kind=WAITS)]


async def test_two_clients_taking_a_b_and_b_a(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV, poll_cap=0.1)
    both_hold_first = asyncio.Barrier(2)
    outcome: dict[str, object] = {}

    async def client(name: str, first: str, second: str) -> None:
        async with tm.lock(first, name, ttl=60, wait=WAIT):
            await both_hold_first.wait()
            started = time.monotonic()
            try:
                async with tm.lock(second, name, ttl=60, wait=WAIT):
                    outcome[name] = "completed"
            except DeadlockDetected as exc:
                outcome[name] = (exc, time.monotonic() - started)

    await asyncio.gather(client("c1", "A", "B"), client("c2", "B", "A"))
    completed = [n for n, o in outcome.items() if o == "completed"]
    detected = {n: o for n, o in outcome.items() if o != "completed"}
    assert len(completed) == 1 and len(detected) == 1, outcome
    [(victim, (error, elapsed))] = detected.items()
    assert isinstance(error, DeadlockDetected)
    assert elapsed < WAIT / 2  # well under the wait timeout
    assert error.cycle[0] == victim and set(error.cycle) == {"c1", "c2", "A", "B"}
    assert error.is_transient()
    assert await _waits(store) == []
    assert await tm.holder("A") is None and await tm.holder("B") is None


async def test_waiting_for_a_lock_you_hold_is_a_deadlock(store: Store) -> None:
    tm = TransactionManager(store, governor=GOV)
    await tm.acquire_lock("r", "me", ttl=60)
    started = time.monotonic()
    with pytest.raises(DeadlockDetected) as caught:
        await tm.acquire_lock("r", "me", ttl=60, wait=WAIT)
    assert time.monotonic() - started < WAIT / 2
    assert caught.value.cycle == ["me", "r"]
    with pytest.raises(OperationTimeout):  # wait=0 never waits, so never deadlocks
        await tm.acquire_lock("r", "me", wait=0)
    assert await _waits(store) == []


async def test_three_clients_in_a_ring(store: Store, store_backend: str) -> None:
    tm = TransactionManager(store, governor=GOV, poll_cap=0.1)
    holding = asyncio.Barrier(3)
    detected: list[str] = []
    completed: list[str] = []

    async def client(name: str, first: str, second: str) -> None:
        async with tm.lock(first, name, ttl=60, wait=WAIT):
            await holding.wait()
            try:
                async with tm.lock(second, name, ttl=60, wait=WAIT):
                    completed.append(name)
            except DeadlockDetected:
                detected.append(name)

    started = time.monotonic()
    await asyncio.gather(client("x", "R1", "R2"), client("y", "R2", "R3"),
                         client("z", "R3", "R1"))
    assert time.monotonic() - started < WAIT
    assert len(detected) == 1 and sorted(detected + completed) == ["x", "y", "z"]
    assert await _waits(store) == []


async def test_a_chain_without_a_cycle_is_no_deadlock(store: Store) -> None:
    """c3 waits for c2 who waits for c1 (who waits for nothing): everyone gets through."""
    tm = TransactionManager(store, governor=GOV, poll_cap=0.05)
    first = await tm.acquire_lock("R1", "c1", ttl=60)
    order: list[str] = []

    async def client(name: str, have: str, want: str) -> None:
        async with tm.lock(have, name, ttl=60, wait=WAIT):
            await asyncio.sleep(0.1)
            async with tm.lock(want, name, ttl=60, wait=WAIT):
                order.append(name)

    async def c1_finishes() -> None:
        await asyncio.sleep(0.5)
        order.append("c1")
        await tm.release_lock("R1", first.lock_token)

    await asyncio.gather(client("c2", "R2", "R1"), client("c3", "R3", "R2"), c1_finishes())
    assert order == ["c1", "c2", "c3"]
    assert await _waits(store) == []


async def test_the_victim_is_the_youngest_waiter_then_the_larger_client_id() -> None:
    """Deterministic choice, computed from the stored records alone."""
    store = MemoryStore()
    now = datetime(2030, 1, 1, tzinfo=UTC)
    tm = TransactionManager(store, governor=GOV, clock=lambda: now)
    await tm.acquire_lock("A", "old", ttl=60)
    await tm.acquire_lock("B", "young", ttl=60)
    older = Waiter(store, GOV, "old", "B", 60, lambda: now)
    await older.check(None)  # records the wait, started at `now`
    younger = Waiter(store, GOV, "young", "A", 60, lambda: now + timedelta(seconds=1))
    await older.check("young")  # the older waiter sees the cycle, is not the victim
    with pytest.raises(DeadlockDetected):
        await younger.check("old")
    cycle = await find_cycle(
        store, GOV, WaitRecord("old", "B", now, now + timedelta(minutes=1)), "young", now
    )
    assert cycle is None  # the victim withdrew: no cycle left
    await older.withdraw()
    assert await _waits(store) == []


@given(starts=st.lists(st.integers(min_value=0, max_value=3), min_size=2, max_size=5))
def test_every_member_of_a_cycle_picks_the_same_victim(starts: list[int]) -> None:
    async def run() -> None:
        store = MemoryStore()
        now = datetime(2030, 1, 1, tzinfo=UTC)
        n = len(starts)
        tm = TransactionManager(store, governor=GOV, clock=lambda: now)
        for i in range(n):
            await tm.acquire_lock(f"R{i}", f"c{i}", ttl=60)
        for i, offset in enumerate(starts):  # c{i} holds R{i} and waits for R{i+1}
            when = now + timedelta(seconds=offset)
            waiter = Waiter(store, GOV, f"c{i}", f"R{(i + 1) % n}", 60,
                            lambda when=when: when)  # type: ignore[misc]
            await waiter.check(None)
        victims = []
        for i in range(n):
            record = WaitRecord(f"c{i}", f"R{(i + 1) % n}", now, now + timedelta(minutes=1))
            cycle = await find_cycle(store, GOV, record, f"c{(i + 1) % n}", now)
            assert cycle is not None and len(cycle) == n
            stored = [WaitRecord.of(w.client_id, (await store.read_record(
                GOV, w.client_id, kind=WAITS)).snapshot) for w in cycle]
            victims.append(max(stored, key=lambda w: (w.since, w.client_id)).client_id)  # type: ignore[union-attr]
        expected = max(range(n), key=lambda i: (starts[i], f"c{i}"))
        assert victims == [f"c{expected}"] * n

    asyncio.run(run())
