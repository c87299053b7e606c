"""Deadlock detection for lock waiters: a wait-for graph kept in the store.

The graph has two kinds of edges, both read from records of the locks' governor:

* waiter -> resource: the waiter's wait record (kind ``waits``, id = client id), written
  when it starts waiting and withdrawn when it stops (acquired, timed out, gave up, failed);
* resource -> holder: the resource's lease (kind ``locks``) while it is held (not free, not
  expired).

Before each wait step a waiter walks the graph from itself: its resource, that resource's
holder, the resource the holder waits for, its holder, ... If the walk comes back to the
waiter, the waiters on the path form a cycle and none of them can proceed. The youngest
waiter of the cycle — the latest ``since`` (wait start), ties broken by the larger client
id, so every member computes the same victim from the same records — raises
``DeadlockDetected(cycle=[...])`` and withdraws its wait record; the others keep waiting and
proceed once the victim releases what it holds (``async with tm.lock(...)`` does on the way
out). A walk that meets a cycle not through the walker stops: that cycle's own members
detect it.

The walk reads one wait record and one lease per hop, at different instants, so a graph
that changed in between can show a cycle that never existed at one instant (a phantom). The
price is an unnecessary ``DeadlockDetected`` — transient: release, back off, retry — never a
missed real deadlock: a real cycle does not go away by itself, and its youngest member finds
it on its next step.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from tai_fsm.coordination.leases import WAITS, Lease, WaitRecord
from tai_fsm.errors import DeadlockDetected, IntegrityError, StateNotFound, TaiFsmError
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store

__all__ = ["MAX_HOPS", "WAIT_GRACE", "Waiter", "find_cycle"]

#: Longest path walked (waiters); a longer chain is treated as no cycle.
MAX_HOPS = 64
#: A wait record stays valid this long past its waiter's deadline (a waiter that died).
WAIT_GRACE = timedelta(seconds=2)


async def find_cycle(
    store: Store, governor: str, me: WaitRecord, holder: str, now: datetime
) -> list[WaitRecord] | None:
    """The waiters of a cycle through ``me`` (``me`` first, then each holder in turn), or
    None. ``holder`` holds the resource ``me`` waits for."""
    path = [me]
    seen = {me.client_id}
    current = holder
    for _ in range(MAX_HOPS):
        if current == me.client_id:
            return path
        if current in seen:
            return None
        seen.add(current)
        try:
            stored = await store.read_record(governor, current, kind=WAITS)
        except StateNotFound:
            return None
        wait = WaitRecord.of(current, stored.snapshot)
        if wait is None or not wait.live(now):
            return None
        try:
            lease_record = await store.read_record(governor, wait.resource, kind=ops.LOCKS)
            lease = Lease.of(wait.resource, lease_record.snapshot)
        except (StateNotFound, IntegrityError):
            return None
        if not lease.held(now) or lease.client_id is None:
            return None
        path.append(wait)
        current = lease.client_id
    return None


class Waiter:
    """One client's wait for one resource: its wait record and its deadlock checks."""

    def __init__(
        self,
        store: Store,
        governor: str,
        client_id: str,
        resource: str,
        wait: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.governor = governor
        self.client_id = client_id
        self.resource = resource
        self.wait = wait
        self.clock = clock
        self._record: WaitRecord | None = None
        self._version: int | None = None

    async def check(self, holder: str | None) -> None:
        """Record the wait (first call), then raise ``DeadlockDetected`` if waiting for
        ``holder`` closes a cycle in which this waiter is the youngest."""
        if self._record is None:
            now = self.clock()
            record = WaitRecord(
                self.client_id, self.resource, now,
                now + timedelta(seconds=self.wait) + WAIT_GRACE,
            )
            result = await self.store.commit(
                self.governor, [ops.Put(self.client_id, record.snapshot(), kind=WAITS)]
            )
            self._record, self._version = record, result[0].version
        if holder is None:
            return
        cycle = await find_cycle(self.store, self.governor, self._record, holder, self.clock())
        if cycle is None:
            return
        victim = max(cycle, key=lambda w: (w.since, w.client_id))
        if victim.client_id != self.client_id:
            return
        await self.withdraw()
        names: list[str] = []
        for wait in cycle:
            names += [wait.client_id, wait.resource]
        path = "; ".join(
            f"{w.client_id!r} waits for {w.resource!r} held by "
            f"{cycle[(n + 1) % len(cycle)].client_id!r}"
            for n, w in enumerate(cycle)
        )
        raise DeadlockDetected(
            f"deadlock in governor {self.governor!r}: {path}. {self.client_id!r} is the "
            "youngest waiter and gives up: release the locks it holds, back off and retry",
            cycle=names,
        )

    async def withdraw(self) -> None:
        """Delete this waiter's wait record (if it wrote one). Never raises a store error:
        a record already gone or rewritten (the same client id waiting elsewhere) is left
        alone, and one that could not be deleted (the store unavailable) stops counting
        when it expires (its wait's deadline plus :data:`WAIT_GRACE`)."""
        version, self._version, self._record = self._version, None, None
        if version is None:
            return
        try:
            await self.store.commit(
                self.governor, [ops.Delete(self.client_id, version, kind=WAITS)]
            )
        except TaiFsmError:
            pass
