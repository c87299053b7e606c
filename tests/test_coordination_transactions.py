"""TransactionManager.execute_transaction / read_write_transaction on every store: the seed
scenario, serialisability (every read checked at commit), retries, what is and is not
written on failure, and concurrent bank transfers (total invariant, no transfer applied
twice, every transaction fully visible or not at all)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tai_fsm as fsm
from tai_fsm.coordination import Transaction, TransactionManager
from tai_fsm.errors import (
    InvalidInput,
    StateNotFound,
    TransactionFailed,
    VersionConflict,
)
from tai_fsm.records import ChangeMetadata, StateSnapshot
from tai_fsm.retry import RetryPolicy
from tai_fsm.stores.base import Store
from tai_fsm.stores.memory import MemoryStore

GOV = "bank"
FAST = RetryPolicy(max_attempts=60, base=0.001, cap=0.05)


def _snap(state_id: str, data: Any) -> StateSnapshot:
    return StateSnapshot(id=state_id, data=data, metadata=ChangeMetadata(changed_by="test"))


async def _records(store: Store, governor: str = GOV) -> dict[str, tuple[int, Any]]:
    found = {}
    async for state_id in store.list_states(governor):
        snap, version = await store.get_state(governor, state_id)
        found[state_id] = (version, snap.data)
    return found


# ---------------------------------------------------------------------- the seed scenario
async def test_seed_scenario_read_then_update_with_expected_version(store: Store) -> None:
    await store.save_state(GOV, "counter", _snap("counter", {"count": 0}))
    tm = fsm.TransactionManager(store)

    async def increment(tx: Transaction) -> int:
        state, version = await tx.get_state("counter")
        new = _snap("counter", {"count": state.data["count"] + 1})
        await tx.update_state("counter", new, expected_version=version)
        return version

    assert await tm.execute_transaction(GOV, increment) == 1
    state, version = await store.get_state(GOV, "counter")
    assert (state.data, version) == ({"count": 1}, 2)


async def test_seed_scenario_retries_on_conflict(store: Store) -> None:
    await store.save_state(GOV, "counter", _snap("counter", {"count": 0}))
    tm = fsm.TransactionManager(store, policy=FAST)
    runs: list[int] = []

    async def increment(tx: Transaction) -> int:
        runs.append(tx.attempt)
        state, version = await tx.get_state("counter")
        if len(runs) == 1:  # another writer commits between our read and our commit
            await store.update_state(GOV, "counter", _snap("counter", {"count": 10}), version)
        new = _snap("counter", {"count": state.data["count"] + 1})
        await tx.update_state("counter", new, expected_version=version)
        return tx.attempt

    assert await tm.execute_transaction(GOV, increment) == 2
    assert runs == [1, 2]
    state, version = await store.get_state(GOV, "counter")
    assert (state.data, version) == ({"count": 11}, 3)


# ---------------------------------------------------------------------- semantics
async def test_every_read_is_checked_at_commit_even_if_not_written(store: Store) -> None:
    """Write skew is impossible: a record only read must be unchanged when the commit
    applies (an Expect), and a record read as absent must still be absent."""
    await store.save_state(GOV, "a", _snap("a", 1))
    tm = TransactionManager(store, policy=RetryPolicy(max_attempts=1))

    async def copy_a_to_b(tx: Transaction) -> None:
        a, _ = await tx.get_state("a")
        assert not await tx.exists("ghost")
        await store.save_state(GOV, "a", _snap("a", 2))  # changes a read-only dependency
        tx.save_state("b", _snap("b", a.data))

    with pytest.raises(TransactionFailed) as caught:
        await tm.execute_transaction(GOV, copy_a_to_b)
    assert isinstance(caught.value.cause, VersionConflict)
    assert caught.value.cause.doc_id == "a" and caught.value.attempts == 1
    assert not await store.exists(GOV, "b")

    async def create_if_absent(tx: Transaction) -> None:
        assert not await tx.exists("ghost")
        await store.save_state(GOV, "ghost", _snap("ghost", "boo"))
        tx.save_state("c", _snap("c", "no ghost"))

    with pytest.raises(TransactionFailed):
        await tm.execute_transaction(GOV, create_if_absent)
    assert not await store.exists(GOV, "c")


async def test_transaction_failed_after_the_last_attempt_carries_the_conflict(
    store: Store,
) -> None:
    await store.save_state(GOV, "hot", _snap("hot", 0))
    tm = TransactionManager(store, policy=RetryPolicy(max_attempts=3, base=0.001, cap=0.002))

    async def always_loses(tx: Transaction) -> None:
        state, version = await tx.get_state("hot")
        await store.save_state(GOV, "hot", _snap("hot", state.data + 1))
        tx.update_state("hot", _snap("hot", -1), expected_version=version)

    with pytest.raises(TransactionFailed) as caught:
        await tm.execute_transaction(GOV, always_loses)
    error = caught.value
    assert error.attempts == 3 and isinstance(error.cause, VersionConflict)
    assert error.__cause__ is error.cause
    state, version = await store.get_state(GOV, "hot")
    assert (state.data, version) == (3, 4)  # only the interfering writes landed


async def test_an_exception_from_fn_aborts_without_writing(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", 1))
    tm = TransactionManager(store)
    runs = 0

    async def fails(tx: Transaction) -> None:
        nonlocal runs
        runs += 1
        _, version = await tx.get_state("a")
        tx.update_state("a", _snap("a", 2), expected_version=version)
        tx.save_state("b", _snap("b", 2))
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await tm.execute_transaction(GOV, fails)
    assert runs == 1
    assert await _records(store) == {"a": (1, 1)}

    def missing(tx: Transaction) -> None:  # a permanent TaiFsmError is not retried either
        raise StateNotFound(GOV, "nope")

    with pytest.raises(StateNotFound):
        await tm.execute_transaction(GOV, missing)


async def test_sync_fn_and_return_value(store: Store) -> None:
    tm = TransactionManager(store)

    def create(tx: Transaction) -> str:
        tx.save_state("s", _snap("s", "sync"))
        return "done"

    assert await tm.execute_transaction(GOV, create) == "done"
    assert await _records(store) == {"s": (1, "sync")}


async def test_expected_version_disagreeing_with_the_read_raises_before_commit(
    store: Store,
) -> None:
    await store.save_state(GOV, "a", _snap("a", 1))
    tm = TransactionManager(store, policy=RetryPolicy(max_attempts=2, base=0.001))
    commits = 0
    original = store.commit

    async def counting(governor: str, ops: Any) -> Any:
        nonlocal commits
        commits += 1
        return await original(governor, ops)

    store.commit = counting  # type: ignore[method-assign]
    try:
        async def wrong(tx: Transaction) -> None:
            await tx.get_state("a")
            tx.update_state("a", _snap("a", 9), expected_version=7)

        with pytest.raises(TransactionFailed) as caught:
            await tm.execute_transaction(GOV, wrong)
        assert isinstance(caught.value.cause, VersionConflict)
        assert (caught.value.cause.expected, caught.value.cause.actual) == (7, 1)
        assert commits == 0
    finally:
        del store.commit  # type: ignore[method-assign]
    assert await _records(store) == {"a": (1, 1)}


async def test_reads_are_repeatable_and_see_the_transactions_own_writes(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", 1))
    await store.save_state(GOV, "gone", _snap("gone", 1))
    tm = TransactionManager(store)

    async def fn(tx: Transaction) -> list[Any]:
        seen: list[Any] = []
        first = await tx.get_state("a")
        assert await tx.get_state("a") == first  # repeatable
        await tx.update_state("a", _snap("a", 2), expected_version=1)
        snap, version = await tx.get_state("a")
        seen.append((snap.data, version))
        await tx.update_state("a", _snap("a", 3), expected_version=2)  # over our own write
        tx.save_state("new", _snap("new", "n"))
        seen.append(await tx.get_state("new"))
        tx.delete_state("gone")
        seen.append(await tx.exists("gone"))
        with pytest.raises(StateNotFound):
            await tx.get_state("gone")
        with pytest.raises(StateNotFound):
            tx.delete_state("gone")
        both = await tx.batch_get_states(["a", "gone", "new", "never"])
        seen.append(sorted((k, v[0].data, v[1]) for k, v in both.items()))
        return seen

    seen = await tm.execute_transaction(GOV, fn)
    assert seen[0] == (2, 2)
    assert seen[1][0].data == "n" and seen[1][1] == 1  # read first as absent, so version 1
    assert seen[2] is False
    assert seen[3] == [("a", 3, 2), ("new", "n", 1)]
    assert await _records(store) == {"a": (2, 3), "new": (1, "n")}


async def test_created_then_deleted_in_one_transaction_writes_nothing(store: Store) -> None:
    tm = TransactionManager(store)

    async def fn(tx: Transaction) -> None:
        assert not await tx.exists("tmp")
        tx.save_state("tmp", _snap("tmp", 1))
        tx.delete_state("tmp")
        tx.save_state("blind", _snap("blind", 1))  # never read: written unconditionally...
        tx.delete_state("blind")  # ...then deleted: the store decides at commit

    await tm.execute_transaction(GOV, fn)
    assert await _records(store) == {}
    await store.save_state(GOV, "blind", _snap("blind", 0))
    await tm.execute_transaction(GOV, fn)
    assert await _records(store) == {}


async def test_blind_writes_and_explicit_expected_versions(store: Store) -> None:
    await store.save_state(GOV, "x", _snap("x", 1))
    tm = TransactionManager(store, policy=RetryPolicy(max_attempts=1))

    def blind(tx: Transaction) -> None:
        tx.save_state("x", _snap("x", 2))  # unconditional, like store.save_state
        tx.update_state("y", _snap("y", 1), expected_version=0)  # create only

    await tm.execute_transaction(GOV, blind)
    assert await _records(store) == {"x": (2, 2), "y": (1, 1)}
    with pytest.raises(TransactionFailed):
        await tm.execute_transaction(GOV, blind)  # y exists now: the whole commit fails
    assert await _records(store) == {"x": (2, 2), "y": (1, 1)}

    def delete_at(tx: Transaction) -> None:
        tx.delete_state("x", expected_version=2)

    await tm.execute_transaction(GOV, delete_at)
    assert await _records(store) == {"y": (1, 1)}

    def blind_delete(tx: Transaction) -> None:
        tx.save_state("z", _snap("z", 1))
        tx.delete_state("x")  # never read, and absent: the commit finds out

    with pytest.raises(StateNotFound):
        await tm.execute_transaction(GOV, blind_delete)
    assert await _records(store) == {"y": (1, 1)}


async def test_a_transaction_is_bound_to_its_governor(store: Store) -> None:
    await store.save_state("other", "a", _snap("a", "other"))
    tm = TransactionManager(store, governor="locks-live-here")

    async def fn(tx: Transaction) -> bool:
        assert tx.governor == GOV
        tx.save_state("a", _snap("a", "mine"))
        return await tx.exists("a")

    assert await tm.execute_transaction(GOV, fn) is True
    assert (await store.get_state("other", "a"))[0].data == "other"
    assert (await store.get_state(GOV, "a"))[0].data == "mine"


async def test_bad_input_is_refused_before_anything_is_written(store: Store) -> None:
    tm = TransactionManager(store)
    with pytest.raises(InvalidInput):
        await tm.execute_transaction("bad/governor", lambda tx: None)
    with pytest.raises(InvalidInput):
        await tm.execute_transaction(GOV, "not callable")  # type: ignore[call-overload]
    kept: list[Transaction] = []

    def bad_id(tx: Transaction) -> None:
        kept.append(tx)
        tx.save_state("ok", _snap("ok", 1))
        tx.save_state("a/b", _snap("a", 1))

    with pytest.raises(InvalidInput):
        await tm.execute_transaction(GOV, bad_id)

    def bad_snapshot(tx: Transaction) -> None:
        tx.save_state("ok", {"not": "a snapshot"})  # type: ignore[arg-type]

    with pytest.raises(InvalidInput):
        await tm.execute_transaction(GOV, bad_snapshot)
    with pytest.raises(InvalidInput):  # a tx used after its attempt is over
        await kept[0].get_state("ok")
    with pytest.raises(InvalidInput):
        TransactionManager(store, policy="fast")  # type: ignore[arg-type]
    assert await _records(store) == {}


async def test_an_empty_transaction_commits_nothing(store: Store) -> None:
    tm = TransactionManager(store)
    assert await tm.execute_transaction(GOV, lambda tx: 42) == 42
    assert await store.list_governors() == []


# ---------------------------------------------------------------------- read_write_transaction
async def test_read_write_transaction_with_a_mapping_and_a_function(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", {"balance": 10}))
    await store.save_state(GOV, "b", _snap("b", {"balance": 0}))
    await store.save_state(GOV, "old", _snap("old", None))
    tm = TransactionManager(store)

    versions = await tm.read_write_transaction(
        GOV, ["a"], {"a": _snap("a", {"balance": 9}), "old": None}
    )
    assert versions == {"a": 2, "old": 0}

    def move(states: dict[str, tuple[StateSnapshot, int]]) -> dict[str, StateSnapshot | None]:
        (a, _), (b, _) = states["a"], states["b"]
        assert "missing" not in states
        return {
            "a": _snap("a", {"balance": a.data["balance"] - 4}),
            "b": _snap("b", {"balance": b.data["balance"] + 4}),
        }

    assert await tm.read_write_transaction(GOV, ["a", "b", "missing"], move) == {"a": 3, "b": 2}

    async def async_move(states: dict[str, Any]) -> dict[str, StateSnapshot | None]:
        return move(states)

    assert await tm.read_write_transaction(GOV, ["a", "b"], async_move) == {"a": 4, "b": 3}
    assert await _records(store) == {
        "a": (4, {"balance": 1}), "b": (3, {"balance": 8}),
    }
    with pytest.raises(InvalidInput):
        await tm.read_write_transaction(GOV, ["a"], lambda states: ["a"])  # type: ignore
    with pytest.raises(InvalidInput):
        await tm.read_write_transaction(GOV, "ab", {})

    async def one_string(tx: Transaction) -> None:
        await tx.batch_get_states("ab")

    with pytest.raises(InvalidInput):
        await tm.execute_transaction(GOV, one_string)


async def test_read_write_transaction_retries_with_fresh_reads(store: Store) -> None:
    await store.save_state(GOV, "n", _snap("n", 0))
    tm = TransactionManager(store, policy=FAST)
    calls = 0

    async def plus_one(states: dict[str, Any]) -> dict[str, StateSnapshot | None]:
        nonlocal calls
        calls += 1
        if calls == 1:
            await store.save_state(GOV, "n", _snap("n", 100))
        return {"n": _snap("n", states["n"][0].data + 1)}

    assert await tm.read_write_transaction(GOV, ["n"], plus_one) == {"n": 3}
    assert calls == 2 and (await store.get_state(GOV, "n"))[0].data == 101


# ---------------------------------------------------------------------- bank transfers
ACCOUNTS = ["acc-0", "acc-1", "acc-2", "acc-3"]


def transfer_fn(transfer_id: str, source: str, target: str, amount: int) -> Any:
    """A transfer that applies at most once: its id is recorded in the same commit."""

    async def transfer(tx: Transaction) -> str:
        if await tx.exists(f"transfer-{transfer_id}"):
            return "duplicate"
        got = await tx.batch_get_states([source, target])
        (src, src_v), (dst, dst_v) = got[source], got[target]
        await asyncio.sleep(0)  # let other transfers interleave between read and commit
        tx.update_state(source, _snap(source, {"balance": src.data["balance"] - amount}),
                        expected_version=src_v)
        tx.update_state(target, _snap(target, {"balance": dst.data["balance"] + amount}),
                        expected_version=dst_v)
        tx.save_state(f"transfer-{transfer_id}", _snap(
            f"transfer-{transfer_id}", {"from": source, "to": target, "amount": amount}
        ))
        return "applied"

    return transfer


async def _open_accounts(store: Store) -> None:
    for account in ACCOUNTS:
        await store.save_state(GOV, account, _snap(account, {"balance": 100}))


async def _check_bank(store: Store, applied: int) -> None:
    """Total invariant; every transfer applied once and fully: each account's balance and
    version are exactly what the recorded transfers explain."""
    records = await _records(store)
    transfers = {k: v[1] for k, v in records.items() if k.startswith("transfer-")}
    assert len(transfers) == applied
    assert sum(records[a][1]["balance"] for a in ACCOUNTS) == 100 * len(ACCOUNTS)
    balance = dict.fromkeys(ACCOUNTS, 100)
    touched = dict.fromkeys(ACCOUNTS, 0)
    for moved in transfers.values():
        balance[moved["from"]] -= moved["amount"]
        balance[moved["to"]] += moved["amount"]
        touched[moved["from"]] += 1
        touched[moved["to"]] += 1
    assert {a: records[a][1]["balance"] for a in ACCOUNTS} == balance
    assert {a: records[a][0] - 1 for a in ACCOUNTS} == touched
    assert all(version == 1 for k, (version, _) in records.items() if k.startswith("transfer-"))


async def test_concurrent_bank_transfers(store: Store, store_backend: str) -> None:
    """N concurrent transfers (each submitted twice, concurrently) between 4 accounts, and
    concurrent read-only transactions that read the accounts one by one: every read-only
    transaction that commits saw a consistent total."""
    await _open_accounts(store)
    tm = TransactionManager(store, policy=FAST)
    rng = random.Random(9)
    count = 6 if store_backend == "firestore" else 24
    planned = []
    for n in range(count):
        source, target = rng.sample(ACCOUNTS, 2)
        planned.append(transfer_fn(f"t{n}", source, target, rng.randint(1, 40)))
    submissions = planned + planned  # every transfer submitted twice

    async def audit(tx: Transaction) -> int:
        total = 0
        for account in ACCOUNTS:  # separate reads: only the commit's checks make them atomic
            snap, _ = await tx.get_state(account)
            total += snap.data["balance"]
            await asyncio.sleep(0)
        return total

    audits = [tm.execute_transaction(GOV, audit) for _ in range(count // 2)]
    results = await asyncio.gather(
        *(tm.execute_transaction(GOV, fn) for fn in submissions), *audits
    )
    outcomes, totals = results[: len(submissions)], results[len(submissions):]
    assert outcomes.count("applied") == count and outcomes.count("duplicate") == count
    assert set(totals) == {100 * len(ACCOUNTS)}
    await _check_bank(store, count)


# ---------------------------------------------------------------------- property: a model
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["get", "save", "blind", "update", "delete", "exists", "batch"]),
        st.sampled_from(["r0", "r1", "r2"]),
        st.integers(min_value=0, max_value=99),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.sets(st.sampled_from(["r0", "r1", "r2"])), steps=_OPS)
def test_a_transaction_behaves_like_a_dict_then_commits_all_of_it(
    initial: set[str], steps: list[tuple[str, str, int]]
) -> None:
    """Any sequence of reads and writes in one transaction sees what a plain dict would
    (a record written in the transaction shows the version it will have: one more than
    at the start, however often it is written), and the commit stores exactly the dict."""

    async def run() -> None:
        store = MemoryStore()
        for record in sorted(initial):
            await store.save_state(GOV, record, _snap(record, -1))
        start = {r: 1 for r in initial}  # record -> version at the start
        model: dict[str, int] = {r: -1 for r in initial}  # record -> value
        written: set[str] = set()
        tm = TransactionManager(store, policy=RetryPolicy(max_attempts=1))

        def version(record: str) -> int:
            return start.get(record, 0) + (record in written)

        async def fn(tx: Transaction) -> None:
            for op, record, value in steps:
                present = record in model
                if op == "get":
                    if present:
                        snap, seen = await tx.get_state(record)
                        assert (snap.data, seen) == (model[record], version(record))
                    else:
                        with pytest.raises(StateNotFound):
                            await tx.get_state(record)
                elif op == "batch":
                    got = await tx.batch_get_states(["r0", "r1", "r2"])
                    assert {k: (v[0].data, v[1]) for k, v in got.items()} == {
                        r: (model[r], version(r)) for r in model
                    }
                elif op == "exists":
                    assert await tx.exists(record) == present
                elif op in ("save", "blind"):
                    if op == "save":
                        await tx.exists(record)
                    tx.save_state(record, _snap(record, value))
                    model[record] = value
                    written.add(record)
                elif op == "update":
                    expected = version(record) if present else 0
                    tx.update_state(record, _snap(record, value), expected_version=expected)
                    model[record] = value
                    written.add(record)
                else:
                    if record not in written:  # a blind delete is only judged at commit
                        await tx.exists(record)
                    if present:
                        tx.delete_state(record)
                        del model[record]
                        written.add(record)
                    else:
                        with pytest.raises(StateNotFound):
                            tx.delete_state(record)

        await tm.execute_transaction(GOV, fn)
        stored = await _records(store)
        assert stored == {r: (version(r), value) for r, value in model.items()}

    asyncio.run(run())
