"""The inbox end to end in one process: ``Runtime.send`` stores a command once (a re-sent
id is recognised), a worker applies it exactly once in the same commit as its
acknowledgement, in order per instance; refused commands are recorded with the reason."""

from __future__ import annotations

import pytest
from worker_machines import MACHINES, Lamp, Ticket
from worker_support import until, worker

from tai_fsm.errors import InvalidInput, StateNotFound
from tai_fsm.runtime import inbox
from tai_fsm.runtime.extras import CommitExtras
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store

GOV = "inbox"


async def _inbox_ids(store: Store, kind: str = inbox.INBOX) -> list[str]:
    return [i async for i in store.list_records(GOV, kind=kind)]


async def test_send_stores_once_and_recognises_a_resent_id(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        first = await rt.send("t-1", "note", {"n": 1}, command_id="cmd-1", actor="alice")
        again = await rt.send("t-1", "note", {"n": 1}, command_id="cmd-1")
        assert not first.duplicate and again.duplicate
        assert again.status is not None and again.status.status == "pending"
        assert again.seq == first.seq
        assert await _inbox_ids(store) == ["cmd-1"]
        with pytest.raises(InvalidInput, match="already used"):
            await rt.send("t-2", "note", {"n": 1}, command_id="cmd-1")
        with pytest.raises(InvalidInput, match="payload"):
            await rt.send("t-1", "note", {"n": float("nan")})
        with pytest.raises(InvalidInput, match="instance id"):
            await rt.send("a/b", "note")
        assert await _inbox_ids(store) == ["cmd-1"]
        status = await rt.command("cmd-1")
        assert (status.status, status.instance, status.trigger) == ("pending", "t-1", "note")
        with pytest.raises(StateNotFound):
            await rt.command("never-sent")


async def test_worker_applies_in_order_exactly_once_and_records_refusals(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        for n in range(3):
            await rt.create(Ticket, f"t-{n}")
        sent = {f"t-{n}": [] for n in range(3)}
        for i in range(10):
            for n in range(3):
                receipt = await rt.send(f"t-{n}", "note", {"n": i})
                sent[f"t-{n}"].append(receipt.command_id)
        await rt.send("t-0", "close", command_id="close-0")
        await rt.send("t-0", "note", {"n": 99}, command_id="late-note")  # final state
        await rt.send("ghost", "note", command_id="to-ghost")  # no such instance
        await rt.send("t-1", "explode", command_id="boom")  # a callback raises

        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as w:
            async def drained() -> bool:
                return not await _inbox_ids(store)

            await until(drained, what="the inbox to drain")
        assert w.counters["applied"] == 31  # counted after each commit: read once stopped
        assert (w.counters["rejected"], w.counters["failed"]) == (2, 1)

        for n in range(3):
            instance = await rt.get(f"t-{n}")
            assert instance.data["log"] == list(range(10))  # in order, each once
            events = [e async for e in rt.history(f"t-{n}")]
            assert [e.version for e in events] == list(range(1, len(events) + 1))
            applied = [e.metadata.context.get("command_id") for e in events[1:]]
            assert applied[:10] == sent[f"t-{n}"]
            assert all(e.metadata.context.get("fencing_token") for e in events[1:])
            for event, command_id in zip(events[1:], applied, strict=True):
                status = await rt.command(command_id)
                assert (status.status, status.event_id, status.version) == (
                    "applied", event.id, event.version
                )
        assert (await rt.get("t-0")).state == "closed"
        late = await rt.command("late-note")
        assert late.status == "rejected" and "final state" in (late.reason or "")
        assert (await rt.command("to-ghost")).status == "rejected"
        boom = await rt.command("boom")
        assert boom.status == "failed" and "always fails" in (boom.reason or "")
        refused = await inbox.rejections_of(store, GOV, "t-0")
        assert [(r["command_id"], r["state"]) for r in refused] == [("late-note", "closed")]
        # a re-sent command that is done is recognised, not applied again
        again = await rt.send("t-2", "note", {"n": 0}, command_id=sent["t-2"][0])
        assert again.duplicate and again.status is not None
        assert again.status.status == "applied"
        assert await _inbox_ids(store) == []


async def test_extra_ops_commit_with_the_trigger_or_not_at_all(store: Store) -> None:
    """The runtime hook the worker uses: a failing extra op leaves no event behind."""
    async with Runtime(store, MACHINES, node_id="n", governor=GOV, own_store=False) as rt:
        ticket = await rt.create(Ticket, "t-x")
        committer = ticket._binding
        gone = CommitExtras(ops=lambda _e: [ops.Delete("missing", 1, kind=inbox.INBOX)])
        with pytest.raises(StateNotFound):
            await committer.commit_trigger(ticket, "note", extras=gone, payload={"n": 1})
        assert (ticket.version, ticket.data) == (1, {})
        assert await store.stream_version(GOV, "t-x") == 1
        marker = fsm_snapshot("t-x")
        put = CommitExtras(ops=lambda e: [ops.Put("mark", marker, 0, kind="marks")])
        event = await committer.commit_trigger(ticket, "note", extras=put, payload={"n": 2})
        assert event.version == 2
        assert (await store.read_record(GOV, "mark", kind="marks")).version == 1


def fsm_snapshot(note: str):  # type: ignore[no-untyped-def]
    from tai_fsm.records import StateSnapshot

    return StateSnapshot(id="mark", data={"note": note})


async def test_at_most_max_resident_instances_are_kept(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        for n in range(12):
            await rt.create(Ticket, f"r-{n}")
            await rt.send(f"r-{n}", "note", {"n": 1})
        async with worker(store, MACHINES, governor=GOV, worker_id="w1",
                          max_resident=4) as w:
            async def drained() -> bool:
                return not await _inbox_ids(store)

            await until(drained, what="the inbox to drain")
            assert len(w.resident) <= 4 and w.resident.evictions >= 8
            await rt.send("r-0", "note", {"n": 2})  # evicted: simply loaded again

            async def again() -> bool:
                return (await rt.get("r-0")).data["log"] == [1, 2]

            await until(again, what="the evicted instance to be reloaded")


async def test_an_ignored_command_is_recorded_not_retried(store: Store) -> None:
    """``ignore_invalid_triggers``: the trigger commits nothing; the command is done."""
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        await rt.create(Lamp, "l-2")
        await rt.send("l-2", "switch_off", command_id="off-in-off")
        await rt.send("l-2", "switch_on", command_id="on")
        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as w:
            async def drained() -> bool:
                return not await _inbox_ids(store)

            await until(drained, what="the inbox to drain")
        assert (await rt.command("off-in-off")).status == "ignored"
        assert (await rt.command("on")).status == "applied"
        assert (w.counters["ignored"], w.counters["applied"]) == (1, 1)
        lamp = await rt.get("l-2")
        assert (lamp.state, lamp.version) == ("on", 2)
