"""The inbox: commands stored durably for the worker that owns their instance
(``Runtime.send``, ``tai-fsm send --queue``), applied exactly once, in order per instance.

**Records** (per governor; layouts below):

* kind ``inbox`` (:data:`INBOX`), id = command id — a pending command. Written by
  :func:`send` with ``Put(expected_version=0)`` together with ``Expect(inbox-done/<id>,
  0)`` in ONE commit: a command id that is pending or already done is refused, so re-sending
  a command (a retry after a timeout, a client that crashed and resends) never doubles it —
  :func:`send` then returns the earlier command's status instead::

    {"instance": "o-1", "trigger": "pay", "payload": {}, "actor": "alice",
     "reason": "checkout", "context": {}, "sender": "web-1",
     "sent_at": "2026-...+00:00", "seq": 1767225600123456789}

* kind ``inbox-done`` (:data:`INBOX_DONE`), id = command id — the outcome, written by the
  worker in the SAME commit that deletes the pending command::

    {"instance": "o-1", "trigger": "pay", "status": "applied" | "rejected" | "failed",
     "event_id": "9f0c..." | null, "version": 2 | null, "reason": "..." | null,
     "state": "paid", "worker": "w1", "sent_at": "...", "finished_at": "..."}

  Applied: the commit is ``Append(event + state record) + Delete(inbox/<id>) +
  Put(inbox-done/<id>) + Fence(shard lease)``; the event's ``metadata.context`` carries
  ``command_id`` too. Rejected (the trigger is not allowed in the current state, the
  instance does not exist) or failed (a callback raised): ``Expect(state at the version it
  was judged on) + Delete + Put(inbox-done) + Put(rejections/<instance>) + Fence`` — no
  event. Done records are the de-duplication memory: they are kept for the worker's
  ``dedupe_window`` (default 7 days), then deleted; a command id re-sent after that is new.

* kind ``rejections`` (:data:`REJECTIONS`), id = instance id — the newest
  :data:`MAX_REJECTIONS_KEPT` commands (and timers) refused for that instance, for
  ``tai-fsm show``: ``{"instance": "o-1", "total": 3, "recent": [{"command_id", "trigger",
  "status", "reason", "state", "version", "at"}, ...]}``.

**Order.** ``seq`` is the sender's clock in nanoseconds, strictly increasing within a
process. A worker applies the pending commands of one instance in ``(seq, command id)``
order, one at a time. So commands one process sends to one instance — each ``send``
awaited before the next — are applied in the order sent. Commands from different
processes are ordered by their clocks as far as those agree; a command that becomes
visible only after a later-stamped command of the same instance was applied is applied
next (late, never dropped).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tai_fsm.errors import IntegrityError, InvalidInput, StateNotFound, VersionConflict
from tai_fsm.ids import validate_id
from tai_fsm.records import Event, StateSnapshot, iso_utc, parse_iso_utc, utc_now
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.runtime import arguments
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import STATES, Delete, Expect, Op, Put

__all__ = [
    "INBOX",
    "INBOX_DONE",
    "MAX_REJECTIONS_KEPT",
    "REJECTIONS",
    "Command",
    "CommandStatus",
    "Receipt",
    "applied_ops",
    "command_status",
    "refused_ops",
    "rejections_of",
    "send",
    "wait_for_command",
]

#: Pending commands (``governors/{g}/inbox/{command_id}``).
INBOX = "inbox"
#: Outcomes of commands, kept for the de-duplication window.
INBOX_DONE = "inbox-done"
#: The newest refused commands and timers per instance (``rejections/{instance}``).
REJECTIONS = "rejections"
#: How many refusals the ``rejections`` record of an instance keeps.
MAX_REJECTIONS_KEPT = 20

_SEND_POLICY = RetryPolicy(max_attempts=6)


class _SendClock:
    """Strictly increasing nanoseconds within this process (wall clock, bumped by 1 ns when
    it did not advance or went back)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            now = max(time.time_ns(), self._last + 1)
            self._last = now
            return now


next_seq = _SendClock()


@dataclass(frozen=True, slots=True)
class Command:
    """A pending command (see the module docstring); ``version`` is its record's version."""

    command_id: str
    instance: str
    trigger: str
    payload: dict[str, Any]
    actor: str | None
    reason: str | None
    context: dict[str, Any]
    sender: str
    sent_at: datetime
    seq: int
    version: int = 1

    @property
    def order(self) -> tuple[int, str]:
        """The order in which the commands of one instance are applied."""
        return (self.seq, self.command_id)

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot(
            id=self.command_id,
            data={
                "instance": self.instance,
                "trigger": self.trigger,
                "payload": self.payload,
                "actor": self.actor,
                "reason": self.reason,
                "context": self.context,
                "sender": self.sender,
                "sent_at": iso_utc(self.sent_at),
                "seq": self.seq,
            },
        )

    @classmethod
    def of(cls, command_id: str, stored_snapshot: StateSnapshot, version: int) -> Command:
        data = stored_snapshot.data
        where = f"inbox record {command_id!r}"
        if not isinstance(data, dict):
            raise IntegrityError(f"{where}: data must be an object")
        instance, trigger, seq = data.get("instance"), data.get("trigger"), data.get("seq")
        sent_at = parse_iso_utc(data.get("sent_at"))
        payload, context = data.get("payload") or {}, data.get("context") or {}
        if not (isinstance(instance, str) and isinstance(trigger, str)
                and isinstance(seq, int) and sent_at is not None
                and isinstance(payload, dict) and isinstance(context, dict)):
            raise IntegrityError(f"{where}: not an inbox command: {data!r}"[:300])
        actor, reason = data.get("actor"), data.get("reason")
        return cls(
            command_id=command_id,
            instance=instance,
            trigger=trigger,
            payload=payload,
            actor=actor if isinstance(actor, str) else None,
            reason=reason if isinstance(reason, str) else None,
            context=context,
            sender=str(data.get("sender") or ""),
            sent_at=sent_at,
            seq=seq,
            version=version,
        )

    def same_request(self, other: Command) -> bool:
        """True when ``other`` asks for the same thing (a genuine re-send)."""
        return (self.instance, self.trigger, self.payload) == (
            other.instance, other.trigger, other.payload
        )


@dataclass(frozen=True, slots=True)
class CommandStatus:
    """Where a command is: ``pending`` (in the inbox), or ``applied`` / ``rejected`` /
    ``failed`` (its outcome record)."""

    command_id: str
    status: str
    instance: str
    trigger: str
    event_id: str | None = None
    version: int | None = None
    reason: str | None = None
    state: str | None = None
    worker: str | None = None
    sent_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.status != "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id, "status": self.status, "instance": self.instance,
            "trigger": self.trigger, "event_id": self.event_id, "version": self.version,
            "reason": self.reason, "state": self.state, "worker": self.worker,
            "sent_at": iso_utc(self.sent_at), "finished_at": iso_utc(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class Receipt:
    """What ``send`` did: ``duplicate`` is True when the command id was already known (it
    was not stored again); ``status`` is then that command's current status."""

    command_id: str
    instance: str
    trigger: str
    seq: int
    duplicate: bool = False
    status: CommandStatus | None = field(default=None)


def _done_snapshot(command: Command, status: str, *, event: Event | None, reason: str | None,
                   state: str | None, worker: str, now: datetime) -> StateSnapshot:
    return StateSnapshot(
        id=command.command_id,
        data={
            "instance": command.instance,
            "trigger": command.trigger,
            "status": status,
            "event_id": None if event is None else event.id,
            "version": None if event is None else event.version,
            "reason": reason,
            "state": state,
            "worker": worker,
            "sent_at": iso_utc(command.sent_at),
            "finished_at": iso_utc(now),
        },
    )


def _status_of(command_id: str, data: Any) -> CommandStatus:
    if not isinstance(data, dict):
        raise IntegrityError(f"inbox-done record {command_id!r}: data must be an object")
    version = data.get("version")
    return CommandStatus(
        command_id=command_id,
        status=str(data.get("status") or "?"),
        instance=str(data.get("instance") or ""),
        trigger=str(data.get("trigger") or ""),
        event_id=data.get("event_id") if isinstance(data.get("event_id"), str) else None,
        version=version if isinstance(version, int) else None,
        reason=data.get("reason") if isinstance(data.get("reason"), str) else None,
        state=data.get("state") if isinstance(data.get("state"), str) else None,
        worker=data.get("worker") if isinstance(data.get("worker"), str) else None,
        sent_at=parse_iso_utc(data.get("sent_at")),
        finished_at=parse_iso_utc(data.get("finished_at")),
    )


# ---------------------------------------------------------------------- sending
async def send(
    store: Store,
    governor: str,
    instance_id: object,
    trigger: object,
    payload: object = None,
    *,
    command_id: object = None,
    actor: object = None,
    reason: object = None,
    context: object = None,
    sender: str = "node",
) -> Receipt:
    """Store a command for ``instance_id`` in the inbox (see the module docstring). Every
    argument is checked first (``InvalidInput``, nothing written). A ``command_id`` already
    pending or done returns a ``duplicate`` receipt with its status; the same id used for a
    different instance, trigger or payload raises ``InvalidInput``."""
    instance = arguments.instance_id(instance_id)
    args = arguments.trigger_args(trigger, actor, reason, context, payload)
    cid = uuid.uuid4().hex if command_id is None else validate_id(command_id, "command id")
    seq = next_seq()
    command = Command(
        command_id=cid,
        instance=instance,
        trigger=args.name,
        payload=arguments.json_object(payload, "payload")[1],
        actor=args.actor,
        reason=args.reason,
        context=args.context,
        sender=sender,
        sent_at=datetime.fromtimestamp(seq / 1e9, UTC),
        seq=seq,
    )
    ops: list[Op] = [
        Put(cid, command.snapshot(), 0, kind=INBOX),
        Expect(cid, 0, kind=INBOX_DONE),
    ]

    async def attempt() -> Receipt:
        try:
            await store.commit(governor, ops)
        except VersionConflict:
            known = await _known(store, governor, cid)
            if known is None:
                raise  # it was just finished and cleaned up: try again
            previous, status = known
            if previous is not None and not previous.same_request(command):
                raise InvalidInput(
                    f"command id {cid!r} was already used for {previous.trigger!r} on "
                    f"{previous.instance!r}; use a new command id",
                    field="command_id",
                ) from None
            if status is not None and previous is None and (
                (status.instance, status.trigger) != (instance, args.name)
            ):
                raise InvalidInput(
                    f"command id {cid!r} was already used for {status.trigger!r} on "
                    f"{status.instance!r}; use a new command id",
                    field="command_id",
                ) from None
            pending = status or CommandStatus(cid, "pending", instance, args.name,
                                              sent_at=previous.sent_at if previous else None)
            seq_known = previous.seq if previous is not None else seq
            return Receipt(cid, instance, args.name, seq_known, duplicate=True, status=pending)
        return Receipt(cid, instance, args.name, seq,
                       status=CommandStatus(cid, "pending", instance, args.name,
                                            sent_at=command.sent_at))

    return await retry_async(attempt, _SEND_POLICY)


async def _known(
    store: Store, governor: str, command_id: str
) -> tuple[Command | None, CommandStatus | None] | None:
    pending = await store.batch_read_records(governor, [command_id], kind=INBOX)
    if command_id in pending:
        stored = pending[command_id]
        return Command.of(command_id, stored.snapshot, stored.version), None
    done = await store.batch_read_records(governor, [command_id], kind=INBOX_DONE)
    if command_id in done:
        return None, _status_of(command_id, done[command_id].snapshot.data)
    return None


async def command_status(store: Store, governor: str, command_id: str) -> CommandStatus:
    """The status of ``command_id``; ``StateNotFound`` when it is unknown (never sent, or
    done longer ago than the de-duplication window)."""
    cid = validate_id(command_id, "command id")
    known = await _known(store, governor, cid)
    if known is None:
        raise StateNotFound(governor, cid, "command")
    pending, status = known
    if status is not None:
        return status
    assert pending is not None
    return CommandStatus(cid, "pending", pending.instance, pending.trigger,
                         sent_at=pending.sent_at)


async def wait_for_command(
    store: Store, governor: str, command_id: str, seconds: float, poll: float = 0.05
) -> CommandStatus:
    """Poll until ``command_id`` is done or ``seconds`` passed; returns its last status
    (``pending`` when it is still waiting)."""
    deadline = time.monotonic() + seconds
    while True:
        status = await command_status(store, governor, command_id)
        if status.done or time.monotonic() >= deadline:
            return status
        await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))


# ---------------------------------------------------------------------- acknowledging
def applied_ops(command: Command, event: Event, worker: str) -> list[Op]:
    """What the commit applying ``command`` carries besides its ``Append``: the pending
    command deleted at its version, its outcome recorded."""
    return [
        Delete(command.command_id, command.version, kind=INBOX),
        Put(command.command_id,
            _done_snapshot(command, "applied", event=event, reason=None,
                           state=event.to_state.data.get("state"), worker=worker,
                           now=utc_now()),
            None, kind=INBOX_DONE),
    ]


def refused_ops(
    command: Command,
    status: str,
    reason: str,
    *,
    state: str | None,
    state_version: int,
    state_token: str | None,
    rejections: StateSnapshot | None,
    rejections_version: int,
    worker: str,
) -> list[Op]:
    """The commit recording ``command`` as refused (``rejected`` / ``failed``): the instance
    still at ``state_version`` (what it was judged on), the command deleted, its outcome and
    the instance's ``rejections`` record written."""
    now = utc_now()
    entry = {"command_id": command.command_id, "trigger": command.trigger, "status": status,
             "reason": reason[:1000], "state": state, "version": state_version,
             "at": iso_utc(now)}
    return [
        Expect(command.instance, state_version, token=state_token, kind=STATES),
        Delete(command.command_id, command.version, kind=INBOX),
        Put(command.command_id,
            _done_snapshot(command, status, event=None, reason=reason[:1000], state=state,
                           worker=worker, now=now),
            None, kind=INBOX_DONE),
        rejection_put(command.instance, entry, rejections, rejections_version),
    ]


def rejection_put(
    instance: str, entry: dict[str, Any], current: StateSnapshot | None, version: int
) -> Put:
    """``Put`` of ``instance``'s rejections record with ``entry`` added (at ``version``)."""
    data = current.data if current is not None and isinstance(current.data, dict) else {}
    recent = [e for e in data.get("recent") or [] if isinstance(e, dict)]
    recent = [*recent, entry][-MAX_REJECTIONS_KEPT:]
    total = data.get("total")
    total = total if isinstance(total, int) else 0
    snapshot = StateSnapshot(
        id=instance, data={"instance": instance, "total": total + 1, "recent": recent}
    )
    return Put(instance, snapshot, version, kind=REJECTIONS)


async def rejections_of(store: Store, governor: str, instance: str) -> list[dict[str, Any]]:
    """The newest refused commands and timers of ``instance`` (oldest first)."""
    found = await store.batch_read_records(governor, [instance], kind=REJECTIONS)
    if instance not in found:
        return []
    data = found[instance].snapshot.data
    recent = data.get("recent") if isinstance(data, dict) else None
    return [e for e in recent or [] if isinstance(e, dict)]
