"""Durable timers: a state's ``timeout: {after, trigger}`` is a pending timer stored in the
instance's state record (``timers: [{"state", "trigger", "due"}]``, written in the same
commit as the event that entered the state — :func:`tai_fsm.runtime.codec.next_timers`).
Leaving the state drops it (the next commit's record no longer holds it): a cancelled
timer can never fire.

The worker (:mod:`tai_fsm.worker`) finds due timers by scanning the state records of its
shards (:func:`scan_timers`) and fires each through the normal commit path
(:func:`fire_timer`) with a check that runs on the very record the trigger fires from: the
timer must still be pending there, and the commit's ``Append`` expects exactly that
version — so a timer fires at most once, and only while its state is active. The fired
timer is dropped from the new record even when its state stays active (an internal
transition). A timer that came due while no worker ran is due when one starts: it fires
then (late, never lost).

**Cost of the scan**: listing every state id of the governor (ids only, pages of 1,000)
plus reading the records of the worker's own shards (batches of :data:`SCAN_BATCH`). The
worker scans on start-up and when it takes over a shard, then every
``timer_scan_interval`` seconds (timers it commits itself are indexed at once). A future
index: a record of kind ``timers`` keyed by due time, written in the same commit as the
state record, would make finding due timers O(due) instead of O(instances).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from tai_fsm.definition.machine import Machine
from tai_fsm.errors import TaiFsmError, TimerNotPending
from tai_fsm.records import Event, parse_iso_utc
from tai_fsm.runtime.async_commit import AsyncCommitter as Committer
from tai_fsm.runtime.extras import CommitExtras
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Op

__all__ = [
    "SCAN_BATCH",
    "TimerNotPending",
    "due_at",
    "fire_timer",
    "pending_timers",
    "scan_timers",
    "timer_key",
]

#: State records read per round trip by :func:`scan_timers`.
SCAN_BATCH = 500

Timer = dict[str, Any]


def due_at(timer: Timer) -> datetime | None:
    """The timer's due time (aware UTC), or None when it is malformed."""
    return parse_iso_utc(timer.get("due"))


def timer_key(instance_id: str, timer: Timer) -> tuple[str, str, str, str]:
    return (instance_id, str(timer.get("state")), str(timer.get("trigger")),
            str(timer.get("due")))


def pending_timers(record: Any) -> list[Timer]:
    """The well-formed pending timers of an instance record."""
    if not isinstance(record, dict):
        return []
    timers = record.get("timers") or []
    return [t for t in timers if isinstance(t, dict) and isinstance(t.get("trigger"), str)
            and due_at(t) is not None]


async def scan_timers(
    store: Store, governor: str, wanted: Callable[[str], bool]
) -> AsyncIterator[tuple[str, int, list[Timer]]]:
    """``(instance id, record version, pending timers)`` of every state record whose id
    ``wanted`` accepts and that has timers (see the module docstring for the cost)."""
    batch: list[str] = []

    async def read(ids: list[str]) -> list[tuple[str, int, list[Timer]]]:
        found = await store.batch_read_states(governor, ids)
        out = []
        for state_id, stored in found.items():
            timers = pending_timers(stored.snapshot.data)
            if timers:
                out.append((state_id, stored.version, timers))
        return out

    async for state_id in store.list_states(governor):
        if wanted(state_id):
            batch.append(state_id)
            if len(batch) >= SCAN_BATCH:
                for item in await read(batch):
                    yield item
                batch = []
    if batch:
        for item in await read(batch):
            yield item


async def fire_timer(
    instance: Machine,
    timer: Timer,
    *,
    extra_ops: Callable[[Event], Sequence[Op]] | None = None,
    context: dict[str, Any] | None = None,
) -> Event:
    """Fire ``timer`` on ``instance`` through the normal commit path, only while it is
    still pending on the record the trigger fires from (``TimerNotPending`` otherwise,
    nothing written). ``extra_ops`` go into the same commit (the worker's fence);
    ``context`` is added to the event's context (which holds ``timer``)."""
    binding = getattr(instance, "_binding", None)
    if not isinstance(binding, Committer):
        raise TaiFsmError(f"{instance!r} is not a live runtime instance")

    def check(record: dict[str, Any]) -> None:
        if timer not in (record.get("timers") or []):
            raise TimerNotPending(
                f"timer {timer.get('trigger')!r} of state {timer.get('state')!r} due "
                f"{timer.get('due')} is no longer pending on {instance.id!r}"
            )

    return await binding.commit_trigger(
        instance,
        str(timer["trigger"]),
        extras=CommitExtras(check=check, ops=extra_ops, fired_timer=dict(timer)),
        actor="timer",
        reason=f"timeout of state {timer.get('state')} (due {timer.get('due')})",
        context={**(context or {}), "timer": dict(timer)},
    )
