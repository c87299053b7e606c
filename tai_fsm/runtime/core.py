"""Per-instance commit state: what a live instance carries besides its own attributes.

``InstanceCore`` keeps the last committed record encoded (for rollback and for the next
event's ``from_state``), its version, store token, hash and clock, the instance's lock and
the triggers its callbacks queued. ``SYNC`` marks the instance whose synchronous callback
or hook is running, so a trigger fired there is queued (see :mod:`tai_fsm.runtime.commit`).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import orjson

from tai_fsm.codec import compact
from tai_fsm.definition.machine import Machine
from tai_fsm.errors import TaiFsmError, TransitionNotAllowed
from tai_fsm.records import Event, StateSnapshot, StoredState
from tai_fsm.runtime.codec import data_from_json, record_parts

__all__ = ["SYNC", "InstanceCore", "Queued", "cancel", "core_of", "restore"]

_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


class _Marker(threading.local):
    """The instance whose SYNCHRONOUS callback or hook is running on this thread, if any.
    Set only around synchronous calls (nothing else can run meanwhile), so a trigger fired
    there is queued, while tasks those callbacks start, and async hooks once they await,
    trigger normally."""

    core: InstanceCore | None = None


SYNC = _Marker()


@dataclass(slots=True)
class Queued:
    instance: Machine
    name: str
    kwargs: dict[str, Any]
    future: asyncio.Future[Event]


class InstanceCore:
    """Per-instance commit bookkeeping: the last committed record (for rollback and for
    the next event's ``from_state``), its version, store token, hash and clock. The record
    is kept as encoded JSON, so nothing a callback, hook or caller mutates can reach it."""

    __slots__ = (
        "clock",
        "committed_bytes",
        "committed_state",
        "last_hash",
        "lock",
        "queue",
        "timestamp",
        "token",
        "version",
    )

    def __init__(self, stored: StoredState) -> None:
        self.lock: asyncio.Lock | None = None
        self.queue: list[Queued] = []
        self.load(stored)

    def load(self, stored: StoredState) -> None:
        snapshot = stored.snapshot
        _, state, _, _ = record_parts(snapshot.id, snapshot.data)
        self.committed_state = state
        self.committed_bytes = compact(orjson.dumps(snapshot.data, option=_JSON_OPTIONS))
        self.version = stored.version
        self.token = stored.token
        self.timestamp = snapshot.timestamp
        self.clock = snapshot.causality
        self.last_hash: str | None = snapshot.metadata.context.get("event_hash")

    def load_committed(
        self, record: StateSnapshot, record_bytes: bytes, version: int, token: str | None
    ) -> None:
        """Adopt what this instance just committed (already known to be well-formed)."""
        self.committed_state = record.data["state"]
        self.committed_bytes = record_bytes
        self.version = version
        self.token = token
        self.timestamp = record.timestamp
        self.clock = record.causality
        self.last_hash = record.metadata.context["event_hash"]

    def saved(self) -> tuple[Any, ...]:
        """The committed state, to put back with :meth:`reset` (a multi-instance
        transaction advances several cores before it knows whether it commits)."""
        return (self.committed_state, self.committed_bytes, self.version, self.token,
                self.timestamp, self.clock, self.last_hash)

    def reset(self, saved: tuple[Any, ...]) -> None:
        (self.committed_state, self.committed_bytes, self.version, self.token,
         self.timestamp, self.clock, self.last_hash) = saved

    def committed_record(self) -> dict[str, Any]:
        """A fresh copy of the committed ``{"machine", "state", "data"[, "timers"]}``."""
        record: dict[str, Any] = orjson.loads(self.committed_bytes)
        return record

    def get_lock(self) -> asyncio.Lock:
        if self.lock is None:
            self.lock = asyncio.Lock()
        return self.lock


def core_of(instance: Machine) -> InstanceCore:
    core: InstanceCore | None = getattr(instance, "_tai_core", None)
    if core is None:
        raise TaiFsmError(f"{instance!r} is not a live runtime instance")
    return core


def restore(instance: Machine, core: InstanceCore) -> None:
    """Put the instance back exactly at its last committed state."""
    instance.state = core.committed_state
    instance.data = data_from_json(type(instance), core.committed_record()["data"])
    instance.version = core.version



def cancel(queued: list[Queued]) -> None:
    for item in queued:
        if not item.future.done():
            item.future.set_exception(
                TransitionNotAllowed(
                    f"queued trigger {item.name!r} dropped: the transition that queued it "
                    "did not commit",
                    trigger=item.name,
                )
            )
            item.future.exception()
