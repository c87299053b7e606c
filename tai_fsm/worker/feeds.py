"""Where a worker's work comes from: the inbox, the pending durable effects and the timer
index — each read from the store, cached so a record is decoded once, and filtered to the
instances of the worker's own shards (``mine``). Plus the janitor that deletes outcome
records older than the de-duplication window.

Cost per poll: one listing of the kind's ids (``Store.list_records``: ids only, pages of
1,000) plus one batched read of the ids not seen before. Pending commands and effects are
few in steady state; the listing grows with the backlog. (Firestore bills each listed
document as a read: poll less often there, or see docs/workers.md for the listener that
would replace the poll.)
"""

from __future__ import annotations

import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from tai_fsm.errors import TaiFsmError
from tai_fsm.runtime.effects import EFFECTS, Effect
from tai_fsm.runtime.inbox import INBOX, INBOX_DONE, Command
from tai_fsm.runtime.timers import due_at, scan_timers, timer_key
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Delete, Fence

__all__ = ["EffectFeed", "InboxFeed", "TimerIndex", "clean_outcomes"]

log = logging.getLogger("tai_fsm.worker")

_READ_BATCH = 500
_FINISHED_KEPT = 100_000

Mine = Callable[[str], bool]
TimerKey = tuple[str, str, str, str]


class InboxFeed:
    """Pending commands of the worker's shards. Each command is handed out once (a poll
    costs O(new commands) in the worker, not O(backlog)); the worker hands back what it
    dropped without finishing (:meth:`rehand`)."""

    def __init__(self, store: Store, governor: str) -> None:
        self.store = store
        self.governor = governor
        self._known: dict[str, Command | None] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._handed: set[str] = set()

    def finished(self, command_id: str) -> None:
        """``command_id`` is done: never hand it out again (a listing may lag)."""
        self._finished[command_id] = None
        self._known.pop(command_id, None)
        self._handed.discard(command_id)
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)

    def rehand(self, command_ids: Iterable[str] | None = None) -> None:
        """Hand these commands (None: every pending one) out again at the next poll."""
        if command_ids is None:
            self._handed.clear()
        else:
            self._handed.difference_update(command_ids)

    async def poll(self, mine: Mine) -> list[Command]:
        """The pending commands of instances ``mine`` accepts not handed out yet, in
        listing order."""
        ids = [i async for i in self.store.list_records(self.governor, kind=INBOX)]
        listed = set(ids)
        for command_id in [c for c in self._known if c not in listed]:
            del self._known[command_id]
        self._handed &= listed
        unknown = [i for i in ids if i not in self._known and i not in self._finished]
        for start in range(0, len(unknown), _READ_BATCH):
            chunk = unknown[start:start + _READ_BATCH]
            found = await self.store.batch_read_records(self.governor, chunk, kind=INBOX)
            for command_id in chunk:
                stored = found.get(command_id)
                if stored is None:
                    continue  # done meanwhile
                try:
                    self._known[command_id] = Command.of(command_id, stored.snapshot,
                                                         stored.version)
                except TaiFsmError as exc:
                    log.error("event=bad_command command=%s error=%s", command_id, exc)
                    self._known[command_id] = None
        finished, known, handed = self._finished, self._known, self._handed
        commands = [known.get(i) for i in ids if i not in handed and i not in finished]
        fresh = [c for c in commands if c is not None and mine(c.instance)]
        handed.update(c.command_id for c in fresh)
        return fresh


class EffectFeed:
    """Pending durable effects of the worker's shards that are due to run."""

    def __init__(self, store: Store, governor: str, grace: float) -> None:
        self.store = store
        self.governor = governor
        self.grace = timedelta(seconds=grace)
        self._known: dict[str, tuple[Effect, int] | None] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def finished(self, key: str) -> None:
        """The effect ``key`` was handled (ran, or its failure recorded): a listing read
        before that must not offer it again."""
        self._known.pop(key, None)
        self._finished[key] = None
        while len(self._finished) > _FINISHED_KEPT:
            self._finished.popitem(last=False)

    async def poll(self, mine: Mine, now: datetime) -> list[tuple[Effect, int]]:
        """Effects still pending ``grace`` after their event, not backing off, of
        instances ``mine`` accepts."""
        ids = [i async for i in self.store.list_records(self.governor, kind=EFFECTS)]
        listed = set(ids)
        for key in [k for k in self._known if k not in listed]:
            del self._known[key]
        unknown = [i for i in ids if i not in self._known and i not in self._finished]
        for start in range(0, len(unknown), _READ_BATCH):
            chunk = unknown[start:start + _READ_BATCH]
            found = await self.store.batch_read_records(self.governor, chunk, kind=EFFECTS)
            for key in chunk:
                stored = found.get(key)
                if stored is None:
                    continue
                try:
                    self._known[key] = (Effect.of(key, stored.snapshot), stored.version)
                except TaiFsmError as exc:
                    log.error("event=bad_effect key=%s error=%s", key, exc)
                    self._known[key] = None
        due = []
        for key in ids:
            known = self._known.get(key)
            if known is None or key in self._finished:
                continue
            effect = known[0]
            if effect.status != "pending" or effect.created_at + self.grace > now or (
                effect.next_at is not None and effect.next_at > now
            ) or not mine(effect.instance):
                continue
            due.append(known)
        return due


class TimerIndex:
    """The pending timers of the worker's shards, by instance, with a heap by due time.

    Filled by :meth:`scan` (on taking a shard, then periodically) and by :meth:`set` after
    each of the worker's own commits; an entry never goes back to an older record version
    than the one it holds (a scan that read before a commit does not undo it)."""

    def __init__(self, store: Store, governor: str) -> None:
        self.store = store
        self.governor = governor
        self._timers: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._heap: list[tuple[datetime, str, TimerKey]] = []
        self._in_heap: set[TimerKey] = set()
        self._refused: set[TimerKey] = set()

    def refused(self, instance_id: str, timer: dict[str, Any]) -> None:
        """``timer`` could not fire (its trigger was not allowed, or ignored): it stays in
        the record (its state is still active) but is not offered again."""
        if len(self._refused) > _FINISHED_KEPT:
            self._refused.clear()
        self._refused.add(timer_key(instance_id, timer))

    def __len__(self) -> int:
        return len(self._timers)

    def set(self, instance_id: str, version: int, timers: list[dict[str, Any]],
            *, replace: bool = True) -> None:
        known = self._timers.get(instance_id)
        if known is not None and known[0] > version and not replace:
            return  # the index already has something newer than this scan read
        if not timers:
            self._timers.pop(instance_id, None)
            return
        self._timers[instance_id] = (version, timers)
        for timer in timers:
            due, key = due_at(timer), timer_key(instance_id, timer)
            if due is not None and key not in self._in_heap and key not in self._refused:
                self._in_heap.add(key)
                heapq.heappush(self._heap, (due, instance_id, key))

    def drop_where(self, predicate: Callable[[str], bool]) -> None:
        for instance_id in [i for i in self._timers if predicate(i)]:
            del self._timers[instance_id]

    def pop_due(self, now: datetime, mine: Mine) -> list[tuple[str, TimerKey, dict[str, Any]]]:
        """``(instance, key, timer)`` of every indexed timer due at ``now``."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            _, instance_id, key = heapq.heappop(self._heap)
            self._in_heap.discard(key)
            known = self._timers.get(instance_id)
            if known is None or not mine(instance_id):
                continue
            timer = next((t for t in known[1] if timer_key(instance_id, t) == key), None)
            if timer is not None:  # else fired or cancelled since
                due.append((instance_id, key, timer))
        return due

    def next_due(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    async def scan(self, mine: Mine, keep: Callable[[str], bool]) -> int:
        """Re-read the timers of the instances ``mine`` accepts (see
        :func:`tai_fsm.runtime.timers.scan_timers` for the cost); an instance no longer
        holding timers leaves the index unless ``keep`` says otherwise. Returns how many
        instances hold timers."""
        seen: set[str] = set()
        async for instance_id, version, timers in scan_timers(self.store, self.governor, mine):
            seen.add(instance_id)
            self.set(instance_id, version, timers, replace=False)
        for instance_id in [i for i in self._timers if i not in seen and mine(i)]:
            if not keep(instance_id):
                del self._timers[instance_id]
        return len(seen)


async def clean_outcomes(
    store: Store,
    governor: str,
    cutoff: datetime,
    mine: Mine,
    fence: Callable[[str], Fence],
) -> int:
    """Delete the outcome records (kind ``inbox-done``) of instances ``mine`` accepts that
    were written before ``cutoff`` (each with its shard's fence). Returns how many."""
    ids = [i async for i in store.list_records(governor, kind=INBOX_DONE)]
    deleted = 0
    for start in range(0, len(ids), _READ_BATCH):
        found = await store.batch_read_records(
            governor, ids[start:start + _READ_BATCH], kind=INBOX_DONE
        )
        for command_id, stored in found.items():
            data = stored.snapshot.data if isinstance(stored.snapshot.data, dict) else {}
            instance = data.get("instance")
            if not isinstance(instance, str) or not mine(instance):
                continue
            if stored.snapshot.timestamp >= cutoff:
                continue
            try:
                await store.commit(governor, [
                    Delete(command_id, stored.version, kind=INBOX_DONE), fence(instance),
                ])
            except TaiFsmError:
                continue
            deleted += 1
    return deleted
