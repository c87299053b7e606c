"""Durable timers fired by workers: a timer due while no worker ran fires once when one
starts (and never again); leaving the state cancels it; a timer whose transition keeps
its state active fires once; a timer set by another process is found by the scan."""

from __future__ import annotations

import asyncio

from worker_machines import MACHINES, Beeper, Lamp, Ticket
from worker_support import until, worker

from tai_fsm.runtime import inbox
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.stores.base import Store

GOV = "timers"


async def test_timer_due_while_no_worker_ran_fires_once_at_start(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        ticket = await rt.create(Ticket, "t-1")
        await ticket.trigger("wait")  # due in 300 ms; no worker is running
        await asyncio.sleep(0.5)
        assert (await rt.get("t-1")).state == "waiting"

        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as first:
            async def fired() -> bool:
                return (await rt.get("t-1")).state == "open"

            await until(fired, what="the overdue timer to fire")
        assert first.counters["timers"] == 1  # counted after its commit: read once stopped
        async with worker(store, MACHINES, governor=GOV, worker_id="w2") as second:
            await asyncio.sleep(1.0)
            assert second.counters["timers"] == 0
        after = await rt.get("t-1")
        assert (after.version, after.data["expired"]) == (3, 1)
        events = [e async for e in rt.history("t-1")]
        assert events[-1].action == "expire" and events[-1].metadata.changed_by == "timer"
        assert events[-1].metadata.context["timer"]["state"] == "waiting"
        assert "timers" not in (await store.read_state(GOV, "t-1")).snapshot.data


async def test_leaving_the_state_cancels_the_timer(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as w:
            ticket = await rt.create(Ticket, "t-2")
            await ticket.trigger("hold")  # timer due in 400 ms ...
            await ticket.trigger("release")  # ... cancelled by leaving the state
            await asyncio.sleep(1.2)
            assert w.counters["timers"] == 0
        after = await rt.get("t-2")
        assert (after.state, after.version, after.data.get("expired")) == ("open", 3, None)


async def test_a_timer_fires_once_even_when_its_state_stays_active(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        beeper = await rt.create(Beeper, "b-1")
        await beeper.trigger("arm")
        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as w:
            async def ticked() -> bool:
                return (await rt.get("b-1")).data.get("ticks") == 1

            await until(ticked, what="the tick")
            await asyncio.sleep(0.8)
            assert w.counters["timers"] == 1
        after = await rt.get("b-1")
        assert (after.state, after.data["ticks"], after.version) == ("armed", 1, 3)


async def test_a_timer_set_by_another_process_is_found_by_the_scan(store: Store) -> None:
    async with (
        Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt,
        worker(store, MACHINES, governor=GOV, worker_id="w1"),
    ):
        await asyncio.sleep(0.1)
        ticket = await rt.create(Ticket, "t-3")
        await ticket.trigger("wait")

        async def fired() -> bool:
            return (await rt.get("t-3")).data.get("expired") == 1

        await until(fired, seconds=10, what="the scanned timer")


async def test_a_timer_whose_trigger_is_refused_is_recorded_once(store: Store) -> None:
    async with Runtime(store, MACHINES, node_id="web", governor=GOV, own_store=False) as rt:
        lamp = await rt.create(Lamp, "l-1")
        await lamp.trigger("warm")  # its timer's transition has a condition that fails
        async with worker(store, MACHINES, governor=GOV, worker_id="w1") as w:
            async def refused() -> bool:
                return bool(await inbox.rejections_of(store, GOV, "l-1"))

            await until(refused, what="the refused timer to be recorded")
            await asyncio.sleep(1.2)  # two more scans: not offered again
        [entry] = await inbox.rejections_of(store, GOV, "l-1")
        assert entry["timer"]["trigger"] == "ready" and "never" in entry["reason"]
        assert w.counters["timers"] == 0
        assert (await rt.get("l-1")).version == 2  # nothing committed
