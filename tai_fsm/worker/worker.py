"""``Worker``: a long-running host for the machines of its shards (DESIGN.md §6).

    async with fsm.Worker(store, [Order], governor="shop", worker_id="w1") as worker:
        await worker.run()          # until worker.stop() (or SIGTERM in `tai-fsm worker`)

What it does, in background loops on the running event loop:

* **membership** (every ``lease_ttl / 3``): heartbeat, read the live workers, compute the
  fair assignment, release shards it should no longer hold (after finishing their work),
  renew the others, take the free ones it should hold (:mod:`~tai_fsm.worker.membership`);
* **inbox** (every ``poll_interval``): pending commands of its shards, applied per
  instance in order, exactly once (:mod:`~tai_fsm.worker.items`);
* **timers**: a heap of the pending timers of its shards, filled by a scan on taking a
  shard and every ``timer_scan_interval``, and by its own commits; due timers fire through
  the commit path (:mod:`tai_fsm.runtime.timers`);
* **effects** (every ``effect_scan_interval``): durable effects still pending
  ``effect_grace`` seconds after their event run with their idempotency key
  (:mod:`tai_fsm.runtime.effects`);
* **janitor** (every minute): outcome records older than ``dedupe_window`` are deleted.

Work on one instance is serialised (one task per instance at a time; commands first, in
order, then timers and effects); up to ``concurrency`` instances are worked on at once.
Instances are loaded lazily and at most ``max_resident`` kept (LRU).

``stop()`` (graceful): stop taking work, let in-flight items finish (at most
``stop_timeout`` seconds), delete the heartbeat, release the leases, close the runtime.
Logs are ``key=value`` lines on the ``tai_fsm.worker`` logger.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from tai_fsm.definition.machine import Machine
from tai_fsm.errors import InvalidInput, TaiFsmError, WorkerReplaced
from tai_fsm.ids import validate_id
from tai_fsm.records import utc_now
from tai_fsm.runtime.core import core_of
from tai_fsm.runtime.effects import Effect
from tai_fsm.runtime.inbox import Command
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.runtime.timers import pending_timers
from tai_fsm.stores.base import Store
from tai_fsm.worker.feeds import EffectFeed, InboxFeed, TimerIndex, clean_outcomes
from tai_fsm.worker.items import Context, Outcome, apply_command, fire_due_timer, run_effect
from tai_fsm.worker.membership import Membership, ShardLeases
from tai_fsm.worker.resident import Resident
from tai_fsm.worker.shards import DEFAULT_SHARDS, MAX_SHARDS, assign, shard_of

__all__ = ["Worker"]

log = logging.getLogger("tai_fsm.worker")

#: Seconds before an instance whose item failed with a transient error is tried again.
_RETRY_AFTER = 1.0


def _positive(value: object, name: str, *, integer: bool = False) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else int | float)
    if not ok or not value > 0:  # type: ignore[operator]
        kind = "an integer" if integer else "seconds"
        raise InvalidInput(f"{name} must be {kind} > 0, got {value!r}", field=name)
    return value


@dataclass(slots=True)
class _Work:
    """What is queued for one instance."""

    commands: dict[str, Command] = field(default_factory=dict)
    timers: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    effects: dict[str, tuple[Effect, int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.commands or self.timers or self.effects)


class Worker:
    """Hosts ``machines`` for the instances of its shards (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        machines: Iterable[type[Machine]],
        *,
        governor: str = "default",
        worker_id: str | None = None,
        shards: int = DEFAULT_SHARDS,
        max_resident: int = 10_000,
        lease_ttl: float = 10.0,
        poll_interval: float = 0.1,
        timer_scan_interval: float = 5.0,
        effect_grace: float = 10.0,
        effect_max_attempts: int = 10,
        concurrency: int = 16,
        stop_timeout: float = 10.0,
        dedupe_window: timedelta = timedelta(days=7),
        own_store: bool = True,
    ) -> None:
        self.worker_id = validate_id(
            worker_id or f"{socket.gethostname()}-{os.getpid()}", "worker id"
        )
        if not isinstance(shards, int) or isinstance(shards, bool) or not (
            1 <= shards <= MAX_SHARDS
        ):
            raise InvalidInput(f"shards must be an integer from 1 to {MAX_SHARDS}, got "
                               f"{shards!r}", field="shards")
        self.shards = shards
        self.max_resident = _positive(max_resident, "max_resident", integer=True)
        self.lease_ttl = float(_positive(lease_ttl, "lease_ttl"))
        self.poll_interval = float(_positive(poll_interval, "poll_interval"))
        self.timer_scan_interval = float(_positive(timer_scan_interval, "timer_scan_interval"))
        self.effect_grace = float(effect_grace) if effect_grace >= 0 else 0.0
        self.effect_scan_interval = min(1.0, max(0.05, self.effect_grace / 2))
        self.concurrency = _positive(concurrency, "concurrency", integer=True)
        self.stop_timeout = float(_positive(stop_timeout, "stop_timeout"))
        self.dedupe_window = dedupe_window
        self.runtime = Runtime(store, machines, node_id=self.worker_id, governor=governor,
                               own_store=own_store)
        self.store = store
        self.governor = self.runtime.default_governor
        self.incarnation = uuid.uuid4().hex
        self.clock = utc_now
        self.membership = Membership(store, self.governor, self.worker_id, self.incarnation,
                                     shards, self.lease_ttl, self.clock)
        self.leases = ShardLeases(store, self.governor, f"{self.worker_id}.{self.incarnation[:12]}",
                                  self.lease_ttl, self.clock)
        self.resident = Resident(self.runtime, self.governor, self.max_resident)
        self.counters: dict[str, int] = {"applied": 0, "rejected": 0, "failed": 0,
                                         "ignored": 0, "timers": 0, "effects": 0}
        self.inbox = InboxFeed(store, self.governor)
        self.effects = EffectFeed(store, self.governor, self.effect_grace)
        self.timers = TimerIndex(store, self.governor)
        self._ctx = Context(
            store=store, governor=self.governor, worker_id=self.worker_id, leases=self.leases,
            instance=self._instance, forget=self.resident.drop, committed=self._index,
            count=self._count, clock=self.clock, timer_refused=self.timers.refused,
            effect_max_attempts=effect_max_attempts,
        )
        self._work: dict[str, _Work] = {}
        self._shards_of: dict[str, int] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._backoff: dict[str, float] = {}
        self._sem: asyncio.Semaphore | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._handovers: set[asyncio.Task[None]] = set()
        self._scan_now = asyncio.Event()
        self._started = False
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Join (heartbeat, shard-count check), take the first shards, start the loops."""
        if self._started:
            return
        self._started = True
        self._stopped = asyncio.Event()
        self._sem = asyncio.Semaphore(self.concurrency)
        await self.membership.join()
        log.info("worker=%s event=started governor=%s shards=%d lease_ttl=%g pid=%d",
                 self.worker_id, self.governor, self.shards, self.lease_ttl, os.getpid())
        await self._rebalance()
        for loop in (self._membership_loop, self._inbox_loop, self._timer_loop,
                     self._scan_loop, self._effect_loop, self._janitor_loop):
            self._loops.append(asyncio.get_running_loop().create_task(self._guard(loop)))

    async def run(self) -> None:
        """Start (if needed) and work until :meth:`stop`; re-raises what stopped it."""
        await self.start()
        assert self._stopped is not None
        await self._stopped.wait()
        if self.error is not None:
            raise self.error

    def request_stop(self) -> None:
        """Ask for a graceful stop from a signal handler or another task."""
        if not self._stopping:
            asyncio.get_running_loop().create_task(self.stop())

    async def stop(self) -> None:
        """Graceful stop (see the module docstring). Idempotent."""
        if self._stopping or not self._started:
            if self._stopped is not None:
                await self._stopped.wait()
            return
        self._stopping = True
        started = time.monotonic()
        log.info("worker=%s event=stopping in_flight=%d", self.worker_id, len(self._tasks))
        watchdog = asyncio.get_running_loop().call_later(
            self.stop_timeout, self._log_waits, "stop is slow"
        )
        current = asyncio.current_task()
        for loop in self._loops:
            if loop is not current:
                loop.cancel()
        await asyncio.gather(*(t for t in self._loops if t is not current),
                             return_exceptions=True)
        await self._finish_in_flight(self.stop_timeout)
        for handover in list(self._handovers):
            handover.cancel()
        await asyncio.gather(*self._handovers, return_exceptions=True)
        try:  # bounded: what is not given back expires by itself (heartbeat and leases)
            await asyncio.wait_for(self._give_back(), self.stop_timeout)
        except TimeoutError:
            log.warning("worker=%s event=stop_give_back_timeout held=%s (they expire within "
                        "%gs)", self.worker_id, self.owned_shards, self.lease_ttl)
        except TaiFsmError as exc:
            log.warning("worker=%s event=stop_give_back_failed error=%r", self.worker_id, exc)
        try:
            await asyncio.wait_for(self.runtime.close(), self.stop_timeout)
        except TimeoutError:
            log.warning("worker=%s event=stop_close_timeout", self.worker_id)
        log.info("worker=%s event=stopped seconds=%.2f applied=%d rejected=%d timers=%d "
                 "effects=%d", self.worker_id, time.monotonic() - started,
                 self.counters["applied"], self.counters["rejected"], self.counters["timers"],
                 self.counters["effects"])
        watchdog.cancel()
        assert self._stopped is not None
        self._stopped.set()

    def _log_waits(self, why: str) -> None:
        """Log where every task of this event loop waits (diagnostics of a slow stop)."""
        out = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(limit=6, file=out)
        log.warning("worker=%s event=diagnostics why=%r tasks:\n%s", self.worker_id, why,
                    out.getvalue())

    async def _give_back(self) -> None:
        await self.membership.leave()
        for shard in list(self.leases.held):
            await self.leases.release(shard)

    async def _finish_in_flight(self, seconds: float) -> None:
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("worker=%s event=stop_timeout cancelled=%d", self.worker_id,
                        len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    async def _guard(self, loop: Any) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a loop must not die silently: stop the worker
            log.error("worker=%s event=fatal error=%r", self.worker_id, exc)
            self.error = exc
            self.request_stop()

    @property
    def owned_shards(self) -> list[int]:
        return sorted(self.leases.held)

    @property
    def busy(self) -> int:
        return len(self._tasks)

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # ------------------------------------------------------------------ membership
    async def _membership_loop(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            await self._rebalance()

    async def _rebalance(self) -> None:
        """One membership tick: read the live workers, hand over / renew / take shards,
        then heartbeat (with the shards now held)."""
        peers = [r.worker_id for r in await self.membership.live_peers()]
        if self.worker_id not in peers:
            peers.append(self.worker_id)
        wanted = assign(peers, self.shards).get(self.worker_id, set())
        for shard in sorted(set(self.leases.held) - wanted - self.leases.draining):
            self.leases.draining.add(shard)  # no new work for it from here on
            task = asyncio.get_running_loop().create_task(self._hand_over(shard))
            self._handovers.add(task)
            task.add_done_callback(self._handovers.discard)
        for shard in await self.leases.renew_all():  # draining ones too, until handed over
            self._lost(shard)
        gained = [s for s in sorted(wanted - set(self.leases.held))
                  if await self.leases.acquire(s)]
        if gained:
            log.info("worker=%s event=shards_taken shards=%s owned=%s", self.worker_id,
                     gained, self.owned_shards)
            self.inbox.rehand()  # their pending commands, whatever was handed out before
            self._scan_now.set()
        try:
            await self.membership.beat(self.owned_shards, "running", dict(self.counters))
        except WorkerReplaced:
            raise
        except TaiFsmError as exc:
            if not exc.is_transient():
                raise
            log.warning("worker=%s event=heartbeat_failed error=%r", self.worker_id, exc)

    async def _hand_over(self, shard: int) -> None:
        """Hand a draining ``shard`` over: let its in-flight work finish, then release."""
        mine = [t for i, t in self._tasks.items() if shard_of(i, self.shards) == shard]
        if mine:
            await asyncio.wait(mine, timeout=self.stop_timeout)
        if shard not in self.leases.held:
            return  # lost meanwhile
        await self.leases.release(shard)
        self._forget_shard(shard)
        log.info("worker=%s event=shard_released shard=%d", self.worker_id, shard)

    def _lost(self, shard: int) -> None:
        if shard not in self.leases.held:
            return  # already known (several in-flight items may report it)
        log.warning("worker=%s event=shard_lost shard=%d", self.worker_id, shard)
        self.leases.held.pop(shard, None)
        self.leases.draining.discard(shard)
        self._forget_shard(shard)

    def _forget_shard(self, shard: int) -> None:
        def in_shard(instance_id: str) -> bool:
            return shard_of(instance_id, self.shards) == shard

        self.resident.drop_where(in_shard)
        self.timers.drop_where(in_shard)
        for instance_id in [i for i in self._work if in_shard(i)]:
            if instance_id not in self._tasks:
                self._drop_work(instance_id)

    def _mine(self, instance_id: str) -> bool:
        return self.leases.active(self._shard(instance_id))

    def _shard(self, instance_id: str) -> int:
        shard = self._shards_of.get(instance_id)
        if shard is None:
            if len(self._shards_of) > 4 * self.max_resident:
                self._shards_of.clear()
            shard = self._shards_of[instance_id] = shard_of(instance_id, self.shards)
        return shard

    def _mine_now(self) -> Callable[[str], bool]:
        """``_mine`` for one pass over many ids: the active shards are judged once."""
        active = {s for s in self.leases.held if self.leases.active(s)}
        return lambda instance_id: self._shard(instance_id) in active

    # ------------------------------------------------------------------ scheduling
    async def _instance(self, instance_id: str) -> Machine:
        return await self.resident.get(instance_id, self._tasks)

    def _submit(self, instance_id: str) -> None:
        if instance_id in self._tasks or self._stopping:
            return
        if self._backoff.get(instance_id, 0.0) > time.monotonic():
            return
        self._backoff.pop(instance_id, None)
        task = asyncio.get_running_loop().create_task(self._drain(instance_id))
        self._tasks[instance_id] = task

    async def _drain(self, instance_id: str) -> None:
        """Work one instance's queue: commands in order, then timers, then effects."""
        shard = shard_of(instance_id, self.shards)
        assert self._sem is not None
        retry = False
        try:
            while not self._stopping:
                work = self._work.get(instance_id)
                if not work:
                    break
                if not self.leases.active(shard):
                    self._drop_work(instance_id)
                    break
                async with self._sem:
                    outcome = await self._one(instance_id, work, shard)
                if outcome is Outcome.LOST:
                    self._lost(shard)
                    break
                if outcome is Outcome.RETRY:  # keep the work: nothing after it runs first
                    self._backoff[instance_id] = time.monotonic() + _RETRY_AFTER
                    retry = True
                    break
        finally:
            self._tasks.pop(instance_id, None)
            if not self._work.get(instance_id):
                self._work.pop(instance_id, None)
            self.resident.trim(self._tasks)  # what was busy while loading may go now
        if retry and not self._stopping:
            asyncio.get_running_loop().call_later(
                _RETRY_AFTER + 0.01, self._submit, instance_id
            )

    def _drop_work(self, instance_id: str) -> None:
        """Forget what is queued for ``instance_id`` (its shard is no longer active); its
        commands are handed out again if the shard comes back."""
        work = self._work.pop(instance_id, None)
        if work is not None:
            self.inbox.rehand(work.commands)

    async def _one(self, instance_id: str, work: _Work, shard: int) -> Outcome:
        """Do the next item of ``instance_id``: DONE removes it, LOST drops it (handed out
        again if the shard comes back), RETRY keeps it (and everything after it)."""
        if work.commands:
            command = min(work.commands.values(), key=lambda c: c.order)
            outcome = await apply_command(self._ctx, command, shard)
            if outcome is not Outcome.RETRY:
                work.commands.pop(command.command_id, None)
            if outcome is Outcome.DONE:
                self.inbox.finished(command.command_id)
            return outcome
        if work.timers:
            key, timer = next(iter(work.timers.items()))
            outcome = await fire_due_timer(self._ctx, instance_id, timer, shard)
            if outcome is not Outcome.RETRY:
                work.timers.pop(key, None)
            return outcome
        effect_id, (effect, version) = next(iter(work.effects.items()))
        outcome = await run_effect(self._ctx, effect, version, shard)
        if outcome is not Outcome.RETRY:
            work.effects.pop(effect_id, None)
        if outcome is Outcome.DONE:
            self.effects.finished(effect_id)
        return outcome

    # ------------------------------------------------------------------ feeds
    async def _every(self, seconds: float, work: Any, what: str) -> None:
        """Run ``work()`` every ``seconds``; transient store errors are logged, not fatal."""
        while True:
            try:
                await work()
            except TaiFsmError as exc:
                if not exc.is_transient():
                    raise
                log.warning("worker=%s event=%s_failed error=%r", self.worker_id, what, exc)
            await asyncio.sleep(seconds)

    async def _inbox_loop(self) -> None:
        await self._every(self.poll_interval, self._poll_inbox, "inbox_poll")

    async def _poll_inbox(self) -> None:
        if not self.leases.held:
            return
        for command in await self.inbox.poll(self._mine_now()):
            work = self._work.setdefault(command.instance, _Work())
            work.commands.setdefault(command.command_id, command)
            self._submit(command.instance)

    async def _effect_loop(self) -> None:
        await self._every(self.effect_scan_interval, self._poll_effects, "effect_poll")

    async def _poll_effects(self) -> None:
        if not self.leases.held:
            return
        for effect, version in await self.effects.poll(self._mine_now(), self.clock()):
            work = self._work.setdefault(effect.instance, _Work())
            work.effects.setdefault(effect.key, (effect, version))
            self._submit(effect.instance)

    def _index(self, instance: Machine) -> None:
        """Index the timers ``instance`` holds now (after a commit of this worker)."""
        core = core_of(instance)
        self.timers.set(instance.id, core.version, pending_timers(core.committed_record()))

    async def _timer_loop(self) -> None:
        while True:
            now = self.clock()
            for instance_id, key, timer in self.timers.pop_due(now, self._mine_now()):
                work = self._work.setdefault(instance_id, _Work())
                work.timers.setdefault(key, timer)
                self._submit(instance_id)
            delay, next_due = 0.25, self.timers.next_due()
            if next_due is not None:
                delay = max(0.005, min(delay, (next_due - now).total_seconds()))
            await asyncio.sleep(delay)

    async def _scan_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._scan_now.wait(), self.timer_scan_interval)
            except TimeoutError:
                pass
            self._scan_now.clear()
            if not self.leases.held:
                continue
            try:
                started = time.perf_counter()
                found = await self.timers.scan(self._mine_now(),
                                               keep=self._tasks.__contains__)
                log.debug("worker=%s event=timer_scan instances_with_timers=%d seconds=%.3f",
                          self.worker_id, found, time.perf_counter() - started)
            except TaiFsmError as exc:
                if not exc.is_transient():
                    raise
                log.warning("worker=%s event=timer_scan_failed error=%r", self.worker_id, exc)

    async def _janitor_loop(self) -> None:
        async def clean() -> None:
            await asyncio.sleep(60.0)
            deleted = await clean_outcomes(
                self.store, self.governor, self.clock() - self.dedupe_window, self._mine,
                lambda instance: self.leases.fence(shard_of(instance, self.shards)),
            )
            if deleted:
                log.info("worker=%s event=outcomes_deleted count=%d", self.worker_id, deleted)

        await self._every(0.0, clean, "janitor")
