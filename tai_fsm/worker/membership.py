"""Who is working: worker heartbeats and shard leases.

**Heartbeat** — kind ``workers`` (:data:`WORKERS`), id = the worker id; ``data``::

    {"worker_id": "w1", "incarnation": "5c1e...", "shards": 16, "host": "box", "pid": 4242,
     "started_at": "...", "heartbeat_at": "...", "expires_at": "...", "ttl": 10.0,
     "owned": [0, 3, 7], "status": "running" | "stopping",
     "counters": {"applied": 12, "rejected": 1, "timers": 3, "effects": 0}}

Written every ``lease_ttl / 3`` seconds with ``expires_at = now + lease_ttl``; deleted on a
graceful stop. A worker is *live* while ``expires_at`` is in the future (the reader's
clock). A restarted worker with the same id replaces its predecessor's record at once (its
``incarnation`` differs); if that predecessor was in fact still running, its next
heartbeat finds the record changed and it stops (:class:`WorkerReplaced`).

**Shard count** — kind ``worker-config``, id ``shards``: ``{"shards": N}``. A worker
refuses to start while live workers use another ``N`` (they would map instances to shards
differently); with none live, it records its own ``N``.

**Shard leases** — one coordination lock per shard (:func:`tai_fsm.worker.shards.
lease_resource`, in the worker's governor) with the worker's ``client_id`` =
``{worker id}.{incarnation}``: taken with ``wait=0``, renewed every ``lease_ttl / 3``,
released on a graceful stop or when the assignment moves the shard. Every write for a shard
carries ``Fence(lease, fencing_token)``, so a worker whose lease was taken over cannot
write; and a worker treats a shard as its own only until ``expires_at - margin`` by its own
clock (it stops touching a shard whose renewal failed before the lease could expire).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tai_fsm.coordination.leases import Lease
from tai_fsm.coordination.manager import TransactionManager
from tai_fsm.errors import (
    IntegrityError,
    LockNotHeld,
    OperationTimeout,
    StateNotFound,
    TaiFsmError,
    VersionConflict,
    WorkerReplaced,
)
from tai_fsm.records import DistributedLock, StateSnapshot, iso_utc, parse_iso_utc
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import LOCKS, Delete, Fence, Put
from tai_fsm.worker.shards import lease_resource

__all__ = [
    "WORKERS",
    "WORKER_CONFIG",
    "Membership",
    "ShardLeases",
    "WorkerRecord",
    "WorkerReplaced",
    "read_workers",
]

log = logging.getLogger("tai_fsm.worker")

#: The kind of worker heartbeats (``governors/{g}/workers/{worker_id}``).
WORKERS = "workers"
#: The kind of the governor's worker configuration (``worker-config/shards``).
WORKER_CONFIG = "worker-config"
_SHARDS_ID = "shards"


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A heartbeat (see the module docstring)."""

    worker_id: str
    incarnation: str
    shards: int
    started_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    ttl: float
    host: str = ""
    pid: int = 0
    owned: list[int] = field(default_factory=list)
    status: str = "running"
    counters: dict[str, int] = field(default_factory=dict)

    def live(self, now: datetime) -> bool:
        return now < self.expires_at

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(id=self.worker_id, data=self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id, "incarnation": self.incarnation,
            "shards": self.shards, "host": self.host, "pid": self.pid,
            "started_at": iso_utc(self.started_at), "heartbeat_at": iso_utc(self.heartbeat_at),
            "expires_at": iso_utc(self.expires_at), "ttl": self.ttl,
            "owned": sorted(self.owned), "status": self.status, "counters": self.counters,
        }

    @classmethod
    def of(cls, worker_id: str, snapshot: StateSnapshot) -> WorkerRecord:
        data = snapshot.data
        where = f"worker record {worker_id!r}"
        if not isinstance(data, dict):
            raise IntegrityError(f"{where}: data must be an object")
        started = parse_iso_utc(data.get("started_at"))
        beat = parse_iso_utc(data.get("heartbeat_at"))
        expires, shards = parse_iso_utc(data.get("expires_at")), data.get("shards")
        if started is None or beat is None or expires is None or not isinstance(shards, int):
            raise IntegrityError(f"{where}: not a worker heartbeat: {data!r}"[:300])
        owned = data.get("owned") or []
        counters = data.get("counters") or {}
        ttl, pid = data.get("ttl"), data.get("pid")
        return cls(
            worker_id=worker_id,
            incarnation=str(data.get("incarnation") or ""),
            shards=shards,
            started_at=started,
            heartbeat_at=beat,
            expires_at=expires,
            ttl=float(ttl) if isinstance(ttl, int | float) else 0.0,
            host=str(data.get("host") or ""),
            pid=pid if isinstance(pid, int) else 0,
            owned=[s for s in owned if isinstance(s, int)],
            status=str(data.get("status") or "running"),
            counters={k: v for k, v in counters.items() if isinstance(v, int)},
        )


async def read_workers(store: Store, governor: str) -> list[WorkerRecord]:
    """Every heartbeat record of ``governor`` (live or not), by id; unreadable ones skipped."""
    ids = [i async for i in store.list_records(governor, kind=WORKERS)]
    if not ids:
        return []
    found = await store.batch_read_records(governor, ids, kind=WORKERS)
    records = []
    for worker_id, stored in found.items():
        try:
            records.append(WorkerRecord.of(worker_id, stored.snapshot))
        except IntegrityError as exc:
            log.warning("ignoring worker record %r: %s", worker_id, exc)
    return sorted(records, key=lambda r: r.worker_id)


class Membership:
    """This worker's heartbeat, and the view of its live peers."""

    def __init__(
        self,
        store: Store,
        governor: str,
        worker_id: str,
        incarnation: str,
        shards: int,
        ttl: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.governor = governor
        self.worker_id = worker_id
        self.incarnation = incarnation
        self.shards = shards
        self.ttl = ttl
        self.clock = clock
        self.started_at = clock()
        self._version = 0

    def _record(self, owned: list[int], status: str, counters: dict[str, int]) -> WorkerRecord:
        now = self.clock()
        return WorkerRecord(
            worker_id=self.worker_id, incarnation=self.incarnation, shards=self.shards,
            started_at=self.started_at, heartbeat_at=now,
            expires_at=now + timedelta(seconds=self.ttl), ttl=self.ttl,
            host=socket.gethostname(), pid=os.getpid(), owned=owned, status=status,
            counters=counters,
        )

    async def join(self) -> None:
        """Check the shard count against live peers and the recorded one, then write the
        first heartbeat (replacing a predecessor with this id)."""
        now = self.clock()
        others = [r for r in await read_workers(self.store, self.governor)
                  if r.live(now) and r.worker_id != self.worker_id]
        mismatched = [r for r in others if r.shards != self.shards]
        if mismatched:
            raise TaiFsmError(
                f"worker {self.worker_id!r} uses {self.shards} shards but live worker "
                f"{mismatched[0].worker_id!r} uses {mismatched[0].shards} in governor "
                f"{self.governor!r}; start it with --shards {mismatched[0].shards} (or stop "
                "every worker first to change the shard count)"
            )
        await self._record_shard_count(bool(others))
        try:
            current = await self.store.read_record(self.governor, self.worker_id, kind=WORKERS)
        except StateNotFound:
            version = 0
        else:
            version = current.version
            try:
                previous = WorkerRecord.of(self.worker_id, current.snapshot)
            except IntegrityError:
                previous = None
            if previous is not None and previous.live(now):
                log.warning("worker=%s event=replacing_predecessor pid=%s host=%s",
                            self.worker_id, previous.pid, previous.host)
        record = self._record([], "running", {})
        result = await self.store.commit(
            self.governor, [Put(self.worker_id, record.snapshot(), version, kind=WORKERS)]
        )
        self._version = result[0].version

    async def _record_shard_count(self, peers_live: bool) -> None:
        try:
            stored = await self.store.read_record(self.governor, _SHARDS_ID, kind=WORKER_CONFIG)
        except StateNotFound:
            version, recorded = 0, None
        else:
            version = stored.version
            data = stored.snapshot.data
            recorded = data.get("shards") if isinstance(data, dict) else None
        if recorded == self.shards:
            return
        if recorded is not None and peers_live:
            raise TaiFsmError(
                f"governor {self.governor!r} is worked with {recorded} shards; start worker "
                f"{self.worker_id!r} with --shards {recorded}"
            )
        if recorded is not None:
            log.warning("worker=%s event=shard_count_changed from=%s to=%s",
                        self.worker_id, recorded, self.shards)
        snapshot = StateSnapshot(id=_SHARDS_ID, data={"shards": self.shards})
        try:
            await self.store.commit(
                self.governor, [Put(_SHARDS_ID, snapshot, version, kind=WORKER_CONFIG)]
            )
        except VersionConflict:
            await self._record_shard_count(True)  # another worker just wrote it: agree

    async def beat(self, owned: list[int], status: str, counters: dict[str, int]) -> None:
        """Write the heartbeat. ``WorkerReplaced`` when another worker took this id."""
        record = self._record(owned, status, counters)
        try:
            result = await self.store.commit(
                self.governor,
                [Put(self.worker_id, record.snapshot(), self._version, kind=WORKERS)],
            )
        except (VersionConflict, StateNotFound):
            raise WorkerReplaced(
                f"worker {self.worker_id!r}: its heartbeat record was replaced by another "
                "worker started with the same id; stopping"
            ) from None
        self._version = result[0].version

    async def live_peers(self) -> list[WorkerRecord]:
        """Live workers of the governor with this worker's shard count (itself included)."""
        now = self.clock()
        return [r for r in await read_workers(self.store, self.governor)
                if r.live(now) and r.shards == self.shards and r.status == "running"]

    async def leave(self) -> None:
        """Delete the heartbeat (a graceful stop): peers rebalance at their next tick."""
        try:
            await self.store.commit(
                self.governor, [Delete(self.worker_id, self._version, kind=WORKERS)]
            )
        except (VersionConflict, StateNotFound):
            pass


class ShardLeases:
    """The shard leases one worker holds (see the module docstring)."""

    def __init__(
        self, store: Store, governor: str, client_id: str, ttl: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.tm = TransactionManager(store, governor, clock=clock)
        self.client_id = client_id
        self.ttl = ttl
        self.clock = clock
        self.margin = timedelta(seconds=min(1.0, ttl * 0.2))
        self.held: dict[int, DistributedLock] = {}
        #: shards being handed over: held (in-flight work may still write) but not active
        self.draining: set[int] = set()

    def active(self, shard: int) -> bool:
        """True while this worker may take new work for ``shard``: it holds the lease, is
        not handing it over, and by its own clock the lease is not about to expire."""
        lock = self.held.get(shard)
        return (
            lock is not None and shard not in self.draining
            and self.clock() < lock.expires_at - self.margin
        )

    def fence(self, shard: int) -> Fence:
        """The ``Fence`` every write for ``shard`` carries (``LockNotHeld`` when lost)."""
        lock = self.held.get(shard)
        if lock is None:
            raise LockNotHeld(f"shard {shard} is not held by {self.client_id!r}")
        return Fence(lock.resource, lock.fencing_token)

    async def acquire(self, shard: int) -> bool:
        """Take ``shard``'s lease if it is free or expired (never waits)."""
        try:
            lock = await self.tm.acquire_lock(
                lease_resource(shard), self.client_id, ttl=self.ttl, wait=0
            )
        except (OperationTimeout, VersionConflict):
            return False
        self.held[shard] = lock
        return True

    async def renew_all(self) -> list[int]:
        """Extend every held lease in ONE commit (one batched read, one write: renewals
        must not queue behind a busy store's traffic one by one). Returns the shards found
        lost (expired, released or taken over), which are forgotten. On a lost race the
        leases are renewed one by one; a transient store error keeps them (``active``
        still ends each at its expiry). The caller forgets the lost ones."""
        if not self.held:
            return []
        resources = {lease_resource(shard): shard for shard in sorted(self.held)}
        found = await self.tm.store.batch_read_records(
            self.tm.governor, list(resources), kind=LOCKS
        )
        now = self.clock()
        lost: list[int] = []
        renewals: list[tuple[int, Lease, Put]] = []
        for resource, shard in resources.items():
            held = self.held.get(shard)
            if held is None:
                continue  # released meanwhile (a hand-over)
            stored = found.get(resource)
            lease = Lease.of(resource, None if stored is None else stored.snapshot)
            if stored is None or lease.lock_token != held.lock_token or not lease.held(now):
                lost.append(shard)
                continue
            renewed = lease.renewed(now, self.ttl)
            renewals.append((shard, renewed, Put(resource, renewed.snapshot(), stored.version,
                                                 stored.token, kind=LOCKS)))
        if renewals:
            try:
                await self.tm.store.commit(self.tm.governor, [put for _, _, put in renewals])
            except VersionConflict:
                for shard, _, _ in renewals:
                    lock = self.held.get(shard)
                    if lock is None:
                        continue
                    try:
                        self.held[shard] = await self.tm.renew(lock, self.ttl)
                    except LockNotHeld:
                        lost.append(shard)
            except TaiFsmError as exc:
                if not exc.is_transient():
                    raise
                log.warning("event=lease_renew_failed shards=%s error=%r",
                            [s for s, _, _ in renewals], exc)
            else:
                for shard, renewed, _ in renewals:
                    if shard in self.held:
                        self.held[shard] = renewed.as_lock()
        return sorted(set(lost))

    async def renew(self, shard: int) -> bool:
        """Extend ``shard``'s lease; False (and forgotten) when it was lost. A transient
        store error keeps it (``active`` still ends it at expiry)."""
        lock = self.held.get(shard)
        if lock is None:
            return False
        try:
            self.held[shard] = await self.tm.renew(lock, self.ttl)
        except LockNotHeld:
            self.held.pop(shard, None)
            return False
        except TaiFsmError as exc:
            if not exc.is_transient():
                raise
            log.warning("event=lease_renew_failed shard=%d error=%r", shard, exc)
        return True

    async def release(self, shard: int) -> None:
        self.draining.discard(shard)
        lock = self.held.pop(shard, None)
        if lock is None:
            return
        try:
            await self.tm.release_lock(lock.resource, lock.lock_token)
        except TaiFsmError as exc:  # lost or expired already: nothing to give back
            log.info("event=lease_release_skipped shard=%d reason=%r", shard, exc)
