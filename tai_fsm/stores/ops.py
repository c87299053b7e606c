"""The typed operations of :meth:`Store.commit`, the one atomic commit primitive.

Every multi-record write in tai-fsm — a transition (events + the state record), a
transaction, a multi-machine trigger, an inbox acknowledgement, a lock lease or a fenced
write — is a list of these operations committed by ONE ``Store.commit(governor, ops)``:
all of them or none (SQLite: one transaction; Firestore: one batched write with
``exists`` / ``update_time`` preconditions; memory: under its lock).

Preconditions follow EventStoreDB's expected-version cases: ``None`` = any (no check),
``0`` = must not exist (an empty stream / an absent record), ``n`` = exactly at version
``n``. ``token`` is the opaque concurrency token a store handed out with the caller's last
read or commit of that record (``StoredState.token`` / ``OpResult.token``); stores that need
it (Firestore) use it to check the precondition inside the write without reading first, and
read first when it is ``None``.

Records other than state records (lock leases, inbox entries, ...) live in other *kinds*
of the same governor (``kind="locks"`` ...); a kind is an id (see :mod:`tai_fsm.ids`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tai_fsm.records import Event, StateSnapshot

__all__ = [
    "LOCKS",
    "STATES",
    "Append",
    "CommitResult",
    "Delete",
    "Expect",
    "Fence",
    "Op",
    "OpResult",
    "Put",
]

#: The kind of state records (``governors/{g}/states/{id}``).
STATES = "states"
#: The kind of lock leases (``governors/{g}/locks/{resource}``): their ``data`` holds at
#: least ``fencing_token`` (int), which :class:`Fence` checks.
LOCKS = "locks"


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``events`` to stream ``stream_id`` at ``expected_version`` (its head as the
    caller saw it; ``None``: at the current head, recognised on retry by event id).

    With ``state``, the state record ``stream_id`` is written in the same commit with
    version = the new head; its current version must equal ``expected_version`` (absent
    counts as 0). ``prior`` is the stream's ``to_state`` at ``expected_version`` as the
    caller knows it (the runtime's last committed state): when given, stores may keep a
    large record as a delta against it. A wrong ``prior`` is detected on read, so pass it
    only when it is exactly that state."""

    stream_id: str
    events: Sequence[Event]
    expected_version: int | None
    state: StateSnapshot | None = None
    token: str | None = None
    prior: StateSnapshot | None = None


@dataclass(frozen=True, slots=True)
class Put:
    """Write record ``record_id`` of ``kind`` (new version = current + 1, or 1 when new).
    ``expected_version``: ``None`` = unconditional, ``0`` = must not exist, ``n`` = must
    be at ``n``."""

    record_id: str
    snapshot: StateSnapshot
    expected_version: int | None = None
    token: str | None = None
    kind: str = STATES


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete record ``record_id`` of ``kind``; it must exist, and be at
    ``expected_version`` when that is given."""

    record_id: str
    expected_version: int | None = None
    token: str | None = None
    kind: str = STATES


@dataclass(frozen=True, slots=True)
class Expect:
    """Assert that record ``record_id`` of ``kind`` is at ``version`` (``0``: absent) when
    the commit applies — a read that the commit depends on. Writes nothing."""

    record_id: str
    version: int
    token: str | None = None
    kind: str = STATES


@dataclass(frozen=True, slots=True)
class Fence:
    """Assert that no fencing token newer than ``fencing_token`` has been issued for lock
    ``resource`` (the lease record of kind ``locks``): a paused client whose lease was taken
    over cannot write. Fails with ``LockNotHeld``. Writes nothing."""

    resource: str
    fencing_token: int


Op = Append | Put | Delete | Expect | Fence


@dataclass(frozen=True, slots=True)
class OpResult:
    """What one operation did: the record's or stream's version after the commit (0 after
    a delete), the new concurrency token of the record written (if any), and — for an
    ``Append`` — whether its events had already landed (a retried commit, nothing new
    written)."""

    version: int
    token: str | None = None
    already_applied: bool = False


@dataclass(frozen=True, slots=True)
class CommitResult:
    """One ``OpResult`` per operation, in order. ``already_applied`` is True when the whole
    commit was recognised as a retry of one that had landed (by its appends' event ids)."""

    results: list[OpResult] = field(default_factory=list)
    already_applied: bool = False

    def __getitem__(self, index: int) -> OpResult:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[OpResult]:
        return iter(self.results)
