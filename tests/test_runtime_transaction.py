"""Triggers on several instances committed atomically (``rt.transaction()``), on every store:
a transfer between two accounts is all or nothing, hooks run only after the whole commit,
and a conflict leaves every instance exactly as it was."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import tai_fsm as fsm
from tai_fsm.stores.base import Store

HOOKS: list[str] = []


class Purse(fsm.Machine):
    name = "purse"
    active = fsm.State(initial=True)
    closed = fsm.State(final=True)
    debit = active.to(None, conditions=["covers"], before=["take"],
                      after_commit=["debited"])
    credit = active.to(None, before=["give"])
    close = active.to(closed)

    def covers(self, event: Any) -> bool:
        return bool(self.data["balance"] >= event.payload["amount"])

    def take(self, event: Any) -> None:
        self.data["balance"] -= event.payload["amount"]

    def give(self, event: Any) -> None:
        self.data["balance"] += event.payload["amount"]

    def debited(self, event: Any) -> None:
        HOOKS.append(f"{self.id}:{event.version}")


async def _accounts(rt: fsm.Runtime) -> tuple[fsm.Machine, fsm.Machine]:
    return (await rt.create("purse", "alice", data={"balance": 10}),
            await rt.create("purse", "bob", data={"balance": 0}))


async def test_a_transfer_commits_both_events_or_neither(store: Store) -> None:
    HOOKS.clear()
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        alice, bob = await _accounts(rt)
        async with rt.transaction() as tx:
            out = await tx.trigger(alice, "debit", payload={"amount": 4})
            into = await tx.trigger(bob, "credit", payload={"amount": 4})
            assert HOOKS == []  # nothing committed yet
        assert (out.version, into.version) == (2, 2)
        assert HOOKS == ["alice:2"]  # hooks run after the whole commit
        fresh_a, fresh_b = await rt.get("alice"), await rt.get("bob")
        assert (fresh_a.data, fresh_b.data) == ({"balance": 6}, {"balance": 4})
        assert (alice.version, bob.version) == (2, 2)
        assert (await rt.verify("alice")).ok and (await rt.verify("bob")).ok


async def test_a_failed_condition_or_error_in_the_block_writes_nothing(store: Store) -> None:
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        alice, bob = await _accounts(rt)
        with pytest.raises(fsm.TransitionNotAllowed):
            async with rt.transaction() as tx:
                await tx.trigger(bob, "credit", payload={"amount": 50})
                await tx.trigger(alice, "debit", payload={"amount": 50})  # not covered
        with pytest.raises(RuntimeError):
            async with rt.transaction() as tx:
                await tx.trigger(alice, "debit", payload={"amount": 1})
                raise RuntimeError("changed my mind")
        for instance, balance in ((alice, 10), (bob, 0)):
            assert (instance.version, instance.data) == (1, {"balance": balance})
            stored = await rt.get(instance.id)
            assert (stored.version, stored.data) == (1, {"balance": balance})
        await alice.trigger("debit", payload={"amount": 1})  # the instances still work
        assert alice.version == 2


async def test_a_conflict_rolls_every_instance_back(store: Store) -> None:
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        alice, bob = await _accounts(rt)
        other = await rt.get("bob")
        await other.trigger("credit", payload={"amount": 1})  # bob moves on elsewhere
        with pytest.raises(fsm.VersionConflict):
            async with rt.transaction() as tx:
                await tx.trigger(alice, "debit", payload={"amount": 4})
                await tx.trigger(bob, "credit", payload={"amount": 4})
        assert (alice.version, alice.data) == (1, {"balance": 10})
        assert (bob.version, bob.data) == (1, {"balance": 0})
        assert (await rt.get("alice")).version == 1


async def test_run_transaction_retries_on_conflict(store: Store) -> None:
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        alice, bob = await _accounts(rt)
        other = await rt.get("bob")
        await other.trigger("credit", payload={"amount": 1})
        attempts = 0

        async def transfer(tx: Any) -> int:
            nonlocal attempts
            attempts += 1
            await tx.trigger(alice, "debit", payload={"amount": 4})
            await tx.trigger(bob, "credit", payload={"amount": 4})
            return attempts

        assert await rt.run_transaction(transfer) == 2
        assert (await rt.get("bob")).data == {"balance": 5}
        assert (await rt.get("alice")).data == {"balance": 6}


async def test_several_triggers_on_one_instance_chain(store: Store) -> None:
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        alice, bob = await _accounts(rt)
        async with rt.transaction() as tx:
            for _ in range(3):
                await tx.trigger(alice, "debit", payload={"amount": 2})
            await tx.trigger(bob, "credit", payload={"amount": 6})
        assert alice.version == 4 and alice.data == {"balance": 4}
        versions = [e.version async for e in rt.history("alice")]
        assert versions == [1, 2, 3, 4]
        assert (await rt.verify("alice")).ok


async def test_concurrent_transfers_keep_the_total(store: Store) -> None:
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        await rt.create("purse", "alice", data={"balance": 5})
        await rt.create("purse", "bob", data={"balance": 5})

        async def transfer(source: str, target: str) -> None:
            a, b = await rt.get(source), await rt.get(target)

            async def body(tx: Any) -> None:
                await tx.trigger(a, "debit", payload={"amount": 1})
                await tx.trigger(b, "credit", payload={"amount": 1})

            await rt.run_transaction(body)

        await asyncio.gather(*(transfer("alice", "bob") for _ in range(4)),
                             transfer("bob", "alice"))
        total = (await rt.get("alice")).data["balance"] + (await rt.get("bob")).data["balance"]
        assert total == 10


async def test_instances_of_two_governors_are_refused(store: Store) -> None:
    async with fsm.Runtime(store, [Purse], own_store=False) as rt:
        a = await rt.create("purse", "a", data={"balance": 1}, governor="g1")
        b = await rt.create("purse", "b", data={"balance": 1}, governor="g2")
        with pytest.raises(fsm.InvalidInput, match="one governor"):
            async with rt.transaction() as tx:
                await tx.trigger(a, "credit", payload={"amount": 1})
                await tx.trigger(b, "credit", payload={"amount": 1})
        assert a.version == 1 and (await rt.get("a", governor="g1")).version == 1
