"""The stored layout of lock leases and wait records (records of a governor, by kind).

**Lease** — kind ``locks`` (:data:`tai_fsm.stores.ops.LOCKS`), id = the resource; ``data``::

    {"resource": "orders", "fencing_token": 7,          # newest token ever issued
     "client_id": "w1", "lock_token": "9f0c...",       # null when free
     "acquired_at": "2026-...+00:00", "expires_at": "2026-...+00:00", "ttl": 30.0,
     "released_at": null, "last_client_id": "w1"}

The lease record of a resource is never deleted: a release marks it free (``client_id``,
``lock_token``, ``acquired_at``, ``expires_at`` and ``ttl`` null) and keeps ``fencing_token``,
so the next acquisition issues ``fencing_token + 1`` — tokens strictly increase per resource
forever. :class:`tai_fsm.stores.ops.Fence` reads ``data.fencing_token``.

**Wait record** — kind ``waits`` (:data:`WAITS`), id = the waiting client's id; ``data``::

    {"client_id": "w2", "resource": "orders",
     "since": "2026-...+00:00", "expires_at": "2026-...+00:00"}

A client waiting for a lock writes one; with the leases (resource -> holder) they form the
wait-for graph that :mod:`tai_fsm.coordination.deadlock` walks. ``expires_at`` is the end of
the wait plus a grace period, so the record of a waiter that died is ignored afterwards.

Times are ISO 8601 strings in UTC (the store keeps JSON only). A lease is judged by the
clock of whoever reads it: see "Clocks" in docs/coordination.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tai_fsm.errors import IntegrityError
from tai_fsm.records import DistributedLock, StateSnapshot, parse_iso_utc

__all__ = ["WAITS", "Lease", "WaitRecord"]

#: The kind of wait records (``governors/{g}/waits/{client_id}``).
WAITS = "waits"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse_time(data: dict[str, Any], key: str, where: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    parsed = parse_iso_utc(value)
    if parsed is None:
        raise IntegrityError(f"{where}: {key} is not an aware ISO 8601 time: {value!r}")
    return parsed


def _text(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise IntegrityError(f"{where}: {key} must be a string or null, got {value!r}")


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease record's content (see the module docstring)."""

    resource: str
    fencing_token: int = 0
    client_id: str | None = None
    lock_token: str | None = None
    acquired_at: datetime | None = None
    expires_at: datetime | None = None
    ttl: float | None = None
    released_at: datetime | None = None
    last_client_id: str | None = None

    def held(self, now: datetime) -> bool:
        """True while a client holds the lease: taken and not expired at ``now``."""
        return (
            self.lock_token is not None and self.expires_at is not None and now < self.expires_at
        )

    def taken(self, client_id: str, lock_token: str, now: datetime, ttl: float) -> Lease:
        """The lease after ``client_id`` acquires it at ``now``: the next fencing token."""
        return Lease(
            resource=self.resource,
            fencing_token=self.fencing_token + 1,
            client_id=client_id,
            lock_token=lock_token,
            acquired_at=now,
            expires_at=now + timedelta(seconds=ttl),
            ttl=ttl,
            last_client_id=client_id,
        )

    def renewed(self, now: datetime, ttl: float) -> Lease:
        return replace(self, expires_at=now + timedelta(seconds=ttl), ttl=ttl)

    def freed(self, now: datetime) -> Lease:
        """Released: free, same fencing token (the next holder gets a larger one)."""
        return Lease(
            resource=self.resource,
            fencing_token=self.fencing_token,
            released_at=now,
            last_client_id=self.client_id or self.last_client_id,
        )

    def as_lock(self) -> DistributedLock:
        assert self.client_id is not None and self.lock_token is not None
        assert self.acquired_at is not None and self.expires_at is not None
        return DistributedLock(
            resource=self.resource,
            client_id=self.client_id,
            lock_token=self.lock_token,
            fencing_token=self.fencing_token,
            acquired_at=self.acquired_at,
            expires_at=self.expires_at,
        )

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            id=self.resource,
            data={
                "resource": self.resource,
                "fencing_token": self.fencing_token,
                "client_id": self.client_id,
                "lock_token": self.lock_token,
                "acquired_at": _time(self.acquired_at),
                "expires_at": _time(self.expires_at),
                "ttl": self.ttl,
                "released_at": _time(self.released_at),
                "last_client_id": self.last_client_id,
            },
        )

    @classmethod
    def of(cls, resource: str, snapshot: StateSnapshot | None) -> Lease:
        """The lease stored in ``snapshot`` (a fresh, never-issued lease when None).

        A record with a valid ``fencing_token`` but other fields missing counts as free;
        a missing or invalid ``fencing_token`` raises ``IntegrityError`` (no safe next token
        could be issued)."""
        if snapshot is None:
            return cls(resource)
        where = f"lease record {resource!r}"
        data = snapshot.data
        if not isinstance(data, dict):
            raise IntegrityError(f"{where}: data must be an object, got {type(data).__name__}")
        token = data.get("fencing_token")
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            raise IntegrityError(f"{where}: fencing_token must be an int >= 0, got {token!r}")
        ttl = data.get("ttl")
        return cls(
            resource=resource,
            fencing_token=token,
            client_id=_text(data, "client_id", where),
            lock_token=_text(data, "lock_token", where),
            acquired_at=_parse_time(data, "acquired_at", where),
            expires_at=_parse_time(data, "expires_at", where),
            ttl=float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) else None,
            released_at=_parse_time(data, "released_at", where),
            last_client_id=_text(data, "last_client_id", where),
        )


@dataclass(frozen=True, slots=True)
class WaitRecord:
    """A client waiting for a resource (see the module docstring)."""

    client_id: str
    resource: str
    since: datetime
    expires_at: datetime

    def live(self, now: datetime) -> bool:
        return now < self.expires_at

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            id=self.client_id,
            data={
                "client_id": self.client_id,
                "resource": self.resource,
                "since": _time(self.since),
                "expires_at": _time(self.expires_at),
            },
        )

    @classmethod
    def of(cls, client_id: str, snapshot: StateSnapshot) -> WaitRecord | None:
        """The wait record in ``snapshot``; None when it is not one (ignored by the graph)."""
        data = snapshot.data
        if not isinstance(data, dict):
            return None
        try:
            resource = _text(data, "resource", "wait record")
            since = _parse_time(data, "since", "wait record")
            expires = _parse_time(data, "expires_at", "wait record")
        except IntegrityError:
            return None
        if resource is None or since is None or expires is None:
            return None
        return cls(client_id, resource, since, expires)
