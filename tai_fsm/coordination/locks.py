"""Distributed locks as leases in the store, with fencing tokens and deadlock detection.

A lock on ``resource`` is the lease record ``governors/{g}/locks/{resource}`` (layout in
:mod:`tai_fsm.coordination.leases`). Every change of a lease is one ``Store.commit`` of a
``Put`` at the version just read, so of two clients racing for a free lease exactly one
wins; the other sees a ``VersionConflict``, reads again, and finds the lease held.

* **acquire** — free or expired lease: take it with ``fencing_token = previous + 1``. Held:
  record a wait (:mod:`tai_fsm.coordination.deadlock`), check the wait-for graph, and poll
  again with full-jitter backoff (:func:`tai_fsm.retry.retry_async`) until ``wait`` seconds
  have passed: then ``OperationTimeout``. ``wait=0`` tries once.
* **release** / **renew** — only with the lease's ``lock_token`` and before it expires;
  anything else raises ``LockNotHeld``. A release marks the lease free and keeps its fencing
  token, so tokens strictly increase per resource forever.
* **fencing** — ``ops.Fence(resource, lock.fencing_token)`` in any commit fails with
  ``LockNotHeld`` once a newer token was issued: a holder that paused past its TTL (GC,
  swap, a lost network) cannot write after its successor started. Fencing does not judge
  expiry: until another client takes the lease over, the old holder's fenced writes pass.

Expiry is judged with ``clock()`` (UTC wall clock) of whoever reads the lease, against the
``expires_at`` its holder wrote: clocks of different hosts must agree to well within the TTL.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime

from tai_fsm.coordination.deadlock import Waiter
from tai_fsm.coordination.leases import Lease
from tai_fsm.errors import (
    DeadlockDetected,
    InvalidInput,
    LockNotHeld,
    OperationTimeout,
    StateNotFound,
    TaiFsmError,
    VersionConflict,
)
from tai_fsm.records import DistributedLock, StoredState
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store
from tai_fsm.stores.common import check_id

__all__ = ["MAX_TTL", "Locks", "check_seconds"]

#: The longest lease (and wait) accepted, in seconds (about 10 years).
MAX_TTL = 10 * 366 * 86_400.0
#: Store operations of release/renew retried on a lost race or a transient store error.
_CHANGE_POLICY = RetryPolicy(max_attempts=6)


class _Busy(TaiFsmError):
    """Internal: the lease is held by another client (retried by the poll loop)."""

    transient = True

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lock {lease.resource!r} is held by {lease.client_id!r}")
        self.lease = lease


def check_seconds(value: object, name: str, *, positive: bool) -> float:
    """A finite number of seconds (``> 0`` or ``>= 0``), at most :data:`MAX_TTL`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be seconds (a number), got {value!r}", field=name)
    seconds = float(value)
    low_ok = seconds > 0 if positive else seconds >= 0
    if not math.isfinite(seconds) or not low_ok or seconds > MAX_TTL:
        bound = "> 0" if positive else ">= 0"
        raise InvalidInput(
            f"{name} must be seconds {bound} and at most {MAX_TTL:.0f}, got {value!r}",
            field=name,
        )
    return seconds


def _token(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(
            f"lock_token must be a non-empty string, got {type(value).__name__}",
            field="lock_token",
        )
    return value


def _poll_retry(error: TaiFsmError) -> bool:
    """What a waiting acquire retries: a held lease, a lost race, a transient store error —
    never a detected deadlock (it must reach the caller promptly)."""
    if isinstance(error, DeadlockDetected):
        return False
    return isinstance(error, _Busy | VersionConflict) or error.is_transient()


class Locks:
    """The lock operations of one governor (used through ``TransactionManager``)."""

    def __init__(
        self,
        store: Store,
        governor: str,
        clock: Callable[[], datetime],
        poll_base: float,
        poll_cap: float,
    ) -> None:
        self.store = store
        self.governor = governor
        self.clock = clock
        self.poll_base = poll_base
        self.poll_cap = poll_cap

    async def _read(self, resource: str) -> tuple[Lease, StoredState | None]:
        try:
            stored: StoredState | None = await self.store.read_record(
                self.governor, resource, kind=ops.LOCKS
            )
        except StateNotFound:
            stored = None
        return Lease.of(resource, None if stored is None else stored.snapshot), stored

    async def _put(self, lease: Lease, stored: StoredState | None) -> None:
        version = 0 if stored is None else stored.version
        token = None if stored is None else stored.token
        await self.store.commit(
            self.governor,
            [ops.Put(lease.resource, lease.snapshot(), version, token, kind=ops.LOCKS)],
        )

    async def holder(self, resource: str) -> DistributedLock | None:
        """The lease on ``resource`` now, or None when it is free or expired."""
        lease, _ = await self._read(check_id(resource, "lock resource"))
        return lease.as_lock() if lease.held(self.clock()) else None

    async def acquire(
        self, resource: str, client_id: str, ttl: float, wait: float
    ) -> DistributedLock:
        """Take the lease on ``resource`` for ``client_id`` (see the module docstring)."""
        resource = check_id(resource, "lock resource")
        client_id = check_id(client_id, "client id")
        ttl = check_seconds(ttl, "ttl", positive=True)
        wait = check_seconds(wait, "wait", positive=False)
        waiter = Waiter(self.store, self.governor, client_id, resource, wait, self.clock)
        tried: set[str] = set()

        async def attempt() -> DistributedLock:
            now = self.clock()
            lease, stored = await self._read(resource)
            if lease.client_id == client_id and lease.lock_token in tried and lease.held(now):
                return lease.as_lock()  # an earlier attempt landed but its reply was lost
            if not lease.held(now):
                lock_token = uuid.uuid4().hex
                tried.add(lock_token)
                taken = lease.taken(client_id, lock_token, now, ttl)
                await self._put(taken, stored)
                return taken.as_lock()
            if wait > 0:
                await waiter.check(lease.client_id)
            raise _Busy(lease)

        policy = RetryPolicy(
            max_attempts=1 if wait == 0 else 2**31,
            base=self.poll_base,
            cap=self.poll_cap,
            max_elapsed=wait,
            retry=_poll_retry,
        )
        try:
            return await retry_async(attempt, policy)
        except _Busy as exc:
            lease = exc.lease
            raise OperationTimeout(
                f"lock {resource!r} in governor {self.governor!r} is held by "
                f"{lease.client_id!r} (fencing token {lease.fencing_token}, expires "
                f"{lease.expires_at.isoformat() if lease.expires_at else '?'}); "
                f"{client_id!r} gave up after waiting {wait:g}s"
            ) from None
        except VersionConflict:
            raise OperationTimeout(
                f"lock {resource!r} in governor {self.governor!r}: {client_id!r} lost every "
                f"race for it within {wait:g}s"
            ) from None
        finally:
            await waiter.withdraw()

    async def release(self, resource: str, lock_token: str) -> None:
        """Mark the lease free; ``LockNotHeld`` unless ``lock_token`` holds it now."""
        resource = check_id(resource, "lock resource")
        lock_token = _token(lock_token)
        released: list[Lease] = []

        async def attempt() -> None:
            now = self.clock()
            lease, stored = await self._read(resource)
            if released and lease.lock_token is None and (
                lease.fencing_token == released[0].fencing_token
                and lease.last_client_id == released[0].client_id
            ):
                return  # our earlier attempt landed but its reply was lost
            self._check_holds(lease, lock_token, now, "release")
            released[:] = [lease]
            await self._put(lease.freed(now), stored)

        await retry_async(attempt, _CHANGE_POLICY)

    async def renew(self, lock: DistributedLock, ttl: float | None) -> DistributedLock:
        """Extend ``lock``'s lease to ``now + ttl`` (default: the TTL it was taken or last
        renewed with). ``LockNotHeld`` if it expired, was released or taken over."""
        if not isinstance(lock, DistributedLock):
            raise InvalidInput(
                f"renew() needs a DistributedLock, got {type(lock).__name__}", field="lock"
            )
        resource = check_id(lock.resource, "lock resource")
        seconds = None if ttl is None else check_seconds(ttl, "ttl", positive=True)

        async def attempt() -> DistributedLock:
            now = self.clock()
            lease, stored = await self._read(resource)
            self._check_holds(lease, lock.lock_token, now, "renew")
            if seconds is not None:
                length = seconds
            elif lease.ttl is not None:
                length = lease.ttl
            else:
                length = (lock.expires_at - lock.acquired_at).total_seconds()
            renewed = lease.renewed(now, length)
            await self._put(renewed, stored)
            return renewed.as_lock()

        return await retry_async(attempt, _CHANGE_POLICY)

    def _check_holds(self, lease: Lease, lock_token: str, now: datetime, what: str) -> None:
        where = f"lock {lease.resource!r} in governor {self.governor!r}"
        if lease.lock_token != lock_token:
            if lease.held(now):
                state = f"it is held by {lease.client_id!r} (fencing token {lease.fencing_token})"
            else:
                state = "it is free"
            raise LockNotHeld(f"cannot {what} {where}: this token does not hold it ({state})")
        if not lease.held(now):
            expired = lease.expires_at.isoformat() if lease.expires_at else "?"
            raise LockNotHeld(
                f"cannot {what} {where}: the lease of {lease.client_id!r} expired at {expired}"
            )
