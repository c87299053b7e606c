"""Read-only views of a governor's workers, for ``tai-fsm workers`` and ``tai-fsm timers``:
live workers and their shards, the shard leases, inbox depth, pending effects, timers.
Everything here only reads; nothing needs the machines' code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tai_fsm.coordination.leases import Lease
from tai_fsm.errors import StateNotFound, TaiFsmError
from tai_fsm.runtime.effects import EFFECTS, Effect, effect_data
from tai_fsm.runtime.inbox import INBOX, INBOX_DONE, Command
from tai_fsm.runtime.timers import due_at, scan_timers
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import LOCKS
from tai_fsm.worker.membership import WORKER_CONFIG, read_workers
from tai_fsm.worker.shards import lease_resource, shard_of

__all__ = ["TimerRow", "timers_status", "workers_status"]

_READ_BATCH = 500
#: At most this many pending commands / effects are read to break them down.
_DETAIL_LIMIT = 10_000


async def _count(store: Store, governor: str, kind: str) -> list[str]:
    return [i async for i in store.list_records(governor, kind=kind)]


async def _read(store: Store, governor: str, ids: list[str], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for start in range(0, min(len(ids), _DETAIL_LIMIT), _READ_BATCH):
        found.update(await store.batch_read_records(
            governor, ids[start:start + _READ_BATCH], kind=kind
        ))
    return found


async def workers_status(store: Store, governor: str, now: datetime) -> dict[str, Any]:
    """Workers (live or not), shard count and leases, inbox depth (total and per shard, the
    oldest pending command), outcomes kept, pending and failed effects."""
    workers = await read_workers(store, governor)
    try:
        config = await store.read_record(governor, "shards", kind=WORKER_CONFIG)
        shards = config.snapshot.data.get("shards") if isinstance(config.snapshot.data,
                                                                  dict) else None
    except StateNotFound:
        shards = None
    leases: list[dict[str, Any]] = []
    if isinstance(shards, int):
        resources = [lease_resource(s) for s in range(shards)]
        found = await store.batch_read_records(governor, resources, kind=LOCKS)
        for shard, resource in enumerate(resources):
            stored = found.get(resource)
            lease = Lease.of(resource, stored.snapshot if stored else None)
            leases.append({
                "shard": shard,
                "holder": lease.client_id if lease.held(now) else None,
                "fencing_token": lease.fencing_token,
                "expires_at": lease.expires_at.isoformat() if lease.expires_at else None,
            })
    inbox_ids = await _count(store, governor, INBOX)
    per_shard: dict[int, int] = {}
    oldest: datetime | None = None
    for command_id, stored in (await _read(store, governor, inbox_ids, INBOX)).items():
        try:
            command = Command.of(command_id, stored.snapshot, stored.version)
        except TaiFsmError:
            continue
        if isinstance(shards, int):
            shard = shard_of(command.instance, shards)
            per_shard[shard] = per_shard.get(shard, 0) + 1
        oldest = command.sent_at if oldest is None else min(oldest, command.sent_at)
    effect_ids = await _count(store, governor, EFFECTS)
    effects = []
    for key, stored in (await _read(store, governor, effect_ids, EFFECTS)).items():
        try:
            effects.append(Effect.of(key, stored.snapshot))
        except TaiFsmError:
            continue
    done = await _count(store, governor, INBOX_DONE)
    return {
        "governor": governor,
        "shards": shards,
        "workers": [{**w.as_dict(), "live": w.live(now)} for w in workers],
        "leases": leases,
        "inbox": {
            "pending": len(inbox_ids),
            "per_shard": {str(k): v for k, v in sorted(per_shard.items())},
            "oldest_sent_at": oldest.isoformat() if oldest else None,
            "outcomes_kept": len(done),
        },
        "effects": {
            "pending": sum(1 for e in effects if e.status == "pending"),
            "failed": [effect_data(e) for e in effects if e.status == "failed"],
        },
    }


@dataclass(frozen=True, slots=True)
class TimerRow:
    instance: str
    state: str
    trigger: str
    due: str
    overdue_seconds: float
    shard: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "state": self.state, "trigger": self.trigger,
                "due": self.due, "overdue_seconds": round(self.overdue_seconds, 3),
                "shard": self.shard}


async def timers_status(
    store: Store, governor: str, now: datetime, shards: int | None
) -> list[TimerRow]:
    """Every pending timer of ``governor`` (scanning its state records), soonest first;
    ``overdue_seconds`` > 0 for a due timer no worker has fired yet."""
    rows = []
    async for instance_id, _version, timers in scan_timers(store, governor, lambda _id: True):
        for timer in timers:
            due = due_at(timer)
            if due is None:
                continue
            rows.append(TimerRow(
                instance=instance_id, state=str(timer.get("state")),
                trigger=str(timer.get("trigger")), due=due.isoformat(),
                overdue_seconds=(now - due).total_seconds(),
                shard=None if shards is None else shard_of(instance_id, shards),
            ))
    return sorted(rows, key=lambda r: (r.due, r.instance))
