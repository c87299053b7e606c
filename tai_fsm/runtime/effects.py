"""Durable post-commit effects: a hook marked ``@fsm.durable`` (see
:mod:`tai_fsm.definition.durable`) is recorded as a pending *effect* in the same
``Store.commit`` as the event that calls for it, and deleted once the hook has run.

**Effect record** — kind ``effects`` (:data:`EFFECTS`), id = the idempotency key
``{event id}.{hook name}`` (:func:`effect_key`), ``data``::

    {"instance": "o-1", "machine": "order", "hook": "notify_courier",
     "event_id": "9f0c...", "version": 3,           # the event that called for it
     "created_at": "2026-...+00:00",                # the event's timestamp
     "attempts": 0, "next_at": null, "last_error": null, "status": "pending"}

Life of an effect:

1. the commit that makes the transition also writes the record (``Put`` expected absent);
2. right after the commit, the committing process runs the hook with
   ``idempotency_key=<key>`` and, when it returns, deletes the record (``Delete`` at the
   version it wrote);
3. a worker owning the instance's shard runs every effect still pending ``grace`` seconds
   after its event (its process died before step 2, or the hook raised), with the same key,
   and deletes the record (fenced by its shard lease); a failure is recorded (``attempts``,
   ``last_error``, ``next_at`` with exponential backoff) and retried; after ``max_attempts``
   the record stays with ``status: "failed"`` for an operator (``tai-fsm workers`` shows it).

So a durable hook runs at least once; it may run more than once (a crash after the hook
returned but before the delete, or a run slower than ``grace``), always with the same key.
Plain hooks are unchanged: at most once, in the committing process only.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tai_fsm.definition.durable import is_durable
from tai_fsm.definition.machine import Machine
from tai_fsm.errors import IntegrityError, StateNotFound, TaiFsmError, VersionConflict
from tai_fsm.records import Event, StateSnapshot, iso_utc, parse_iso_utc
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Delete, Op, Put

__all__ = [
    "EFFECTS",
    "Effect",
    "call_hook",
    "complete",
    "durable_hooks",
    "effect_key",
    "effect_ops",
]

log = logging.getLogger("tai_fsm.effects")

#: The kind of effect records (``governors/{g}/effects/{key}``).
EFFECTS = "effects"

_MAX_KEY_BYTES = 512


def effect_key(event_id: str, hook_name: str) -> str:
    """The idempotency key (and effect record id) of ``hook_name`` for ``event_id``:
    ``{event id}.{hook}``, or a SHA-256 of it when that would exceed an id's 512 bytes."""
    key = f"{event_id}.{hook_name}"
    if len(key.encode()) <= _MAX_KEY_BYTES:
        return key
    return f"{event_id}.{hashlib.sha256(hook_name.encode()).hexdigest()}"


_DURABLE_CACHE: dict[tuple[type, tuple[str, ...]], tuple[str, ...]] = {}


def durable_hooks(machine_cls: type[Machine], hooks: list[str]) -> tuple[str, ...]:
    """The hooks among ``hooks`` that ``machine_cls`` marks durable (cached)."""
    key = (machine_cls, tuple(hooks))
    found = _DURABLE_CACHE.get(key)
    if found is None:
        found = tuple(h for h in dict.fromkeys(hooks) if is_durable(machine_cls, h))
        _DURABLE_CACHE[key] = found
    return found


@dataclass(frozen=True, slots=True)
class Effect:
    """An effect record's content (see the module docstring)."""

    key: str
    instance: str
    machine: str
    hook: str
    event_id: str
    version: int
    created_at: datetime
    attempts: int = 0
    next_at: datetime | None = None
    last_error: str | None = None
    status: str = "pending"

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            id=self.key,
            data={
                "instance": self.instance,
                "machine": self.machine,
                "hook": self.hook,
                "event_id": self.event_id,
                "version": self.version,
                "created_at": iso_utc(self.created_at),
                "attempts": self.attempts,
                "next_at": iso_utc(self.next_at),
                "last_error": self.last_error,
                "status": self.status,
            },
        )

    def failed_once(self, error: str, next_at: datetime, give_up: bool) -> Effect:
        return replace(
            self, attempts=self.attempts + 1, last_error=error[:1000], next_at=next_at,
            status="failed" if give_up else "pending",
        )

    @classmethod
    def of(cls, key: str, snapshot: StateSnapshot) -> Effect:
        data = snapshot.data
        where = f"effect record {key!r}"
        if not isinstance(data, dict):
            raise IntegrityError(f"{where}: data must be an object")
        created = parse_iso_utc(data.get("created_at"))
        version = data.get("version")
        texts = [data.get(k) for k in ("instance", "machine", "hook", "event_id")]
        if created is None or not isinstance(version, int) or not all(
            isinstance(t, str) for t in texts
        ):
            raise IntegrityError(f"{where}: not an effect record: {data!r}"[:300])
        attempts = data.get("attempts")
        return cls(
            key=key,
            instance=str(texts[0]),
            machine=str(texts[1]),
            hook=str(texts[2]),
            event_id=str(texts[3]),
            version=version,
            created_at=created,
            attempts=attempts if isinstance(attempts, int) else 0,
            next_at=parse_iso_utc(data.get("next_at")),
            last_error=data.get("last_error") if isinstance(data.get("last_error"), str) else None,
            status=str(data.get("status") or "pending"),
        )


def effect_ops(machine: str, event: Event, hooks: tuple[str, ...]) -> list[Op]:
    """The ``Put`` of one pending effect record per durable hook of ``event``."""
    return [
        Put(
            effect_key(event.id, hook),
            Effect(
                key=effect_key(event.id, hook),
                instance=event.stream_id,
                machine=machine,
                hook=hook,
                event_id=event.id,
                version=event.version,
                created_at=event.timestamp,
            ).snapshot(),
            expected_version=0,
            kind=EFFECTS,
        )
        for hook in hooks
    ]


async def call_hook(instance: Machine, hook_name: str, event: Event, key: str) -> None:
    """Run durable hook ``hook_name`` of ``instance`` for ``event`` with ``key``."""
    result = getattr(instance, hook_name)(event, idempotency_key=key)
    if inspect.isawaitable(result):
        await result


async def complete(
    store: Store, governor: str, key: str, version: int = 1, extra: list[Op] | None = None
) -> bool:
    """Delete effect record ``key`` at ``version`` (with ``extra`` ops, e.g. a fence): the
    hook ran. False when the record is gone or was changed meanwhile (someone else is
    handling it: at least once, never lost)."""
    try:
        await store.commit(governor, [Delete(key, version, kind=EFFECTS), *(extra or [])])
    except (StateNotFound, VersionConflict):
        return False
    except TaiFsmError as exc:
        log.warning("effect %s ran, but recording it done failed (a worker will run it "
                    "again with the same key): %r", key, exc)
        return False
    return True


def effect_data(effect: Effect) -> dict[str, Any]:
    """The effect as a JSON-ready dict (for ``tai-fsm workers --json``)."""
    data: dict[str, Any] = effect.snapshot().data
    return {"key": effect.key, **data}
