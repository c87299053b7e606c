"""How a ``Store.commit`` is checked, encoded and decided — once, for every backend.

1. :func:`prepare` (in the ``Store`` base class, before any I/O) checks every operation's
   arguments and encodes what can be encoded up front: ``Prepared*`` objects.
2. A backend reads what :func:`needs` lists (stream heads, record versions, lease fencing
   tokens, event ids for appends at the head) inside its own atomic scope (a SQLite
   transaction, the memory store's lock) into a :class:`Current`.
3. :func:`plan` decides, from ``Current`` alone, whether every precondition holds — raising
   the first failure (``VersionConflict``, ``StateNotFound``, ``LockNotHeld``) — and returns
   the rows to write. The backend writes them all or none.
4. On a ``VersionConflict`` the backend reads the event ids at the versions the appends
   wanted (:func:`landed_ranges`) and asks :func:`recognise` whether this very commit already
   landed (a retry after a lost reply): then nothing is written and the result says so.

Backends with their own precondition mechanism (Firestore) use ``prepare``, the encoders and
``recognise`` the same way and check the preconditions inside the write instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from tai_fsm.errors import InvalidInput, LockNotHeld, StateNotFound, VersionConflict
from tai_fsm.records import Event, StateSnapshot
from tai_fsm.stores.common import (
    check_aware,
    check_events,
    check_expected_version,
    check_id,
    check_snapshot,
    check_version,
    micros,
)
from tai_fsm.stores.ops import (
    LOCKS,
    STATES,
    Append,
    CommitResult,
    Delete,
    Expect,
    Fence,
    Op,
    OpResult,
    Put,
)
from tai_fsm.stores.query import Index, index_of
from tai_fsm.stores.recordcodec import encode_event, encode_record

__all__ = [
    "Current",
    "EventRow",
    "Plan",
    "Prepared",
    "PreparedAppend",
    "PreparedDelete",
    "PreparedExpect",
    "PreparedFence",
    "PreparedPut",
    "check_fence",
    "fencing_token_of",
    "landed_ranges",
    "needs",
    "plan",
    "prepare",
    "recognise",
]

_NO_INDEX: Index = (None, None)

#: (version, event id, timestamp in epoch microseconds, stored JSON)
EventRow = tuple[int, str, int, bytes]


@dataclass(slots=True)
class PreparedAppend:
    stream_id: str
    events: list[Event]
    expected: int | None
    state: StateSnapshot | None
    token: str | None
    prior: StateSnapshot | None
    event_ids: list[str]
    _rows: list[EventRow] | None = None
    _state_raw: bytes | None = None

    @property
    def writes(self) -> int:
        return len(self.events) + (self.state is not None)

    def rows(self, base: int) -> list[EventRow]:
        """The stored rows of the events appended after version ``base``."""
        if self._rows is not None and self.expected == base:
            return self._rows
        rows: list[EventRow] = []
        prior = self.prior if self.expected == base else None
        for n, event in enumerate(self.events, start=1):
            raw = encode_event(event, self.stream_id, base + n, prior)
            rows.append((base + n, event.id, micros(event.timestamp), raw))
            prior = event.to_state
        if self.expected == base:
            self._rows = rows
        return rows

    def state_raw(self, head: int) -> bytes | None:
        """The state record written with the events, at the new ``head``."""
        if self.state is None:
            return None
        if self._state_raw is not None and self.expected is not None and (
            head == self.expected + len(self.events)
        ):
            return self._state_raw
        raw = encode_record(self.state, self.stream_id, head, f"state {self.stream_id!r}")
        if self.expected is not None and head == self.expected + len(self.events):
            self._state_raw = raw
        return raw


@dataclass(slots=True)
class PreparedPut:
    kind: str
    record_id: str
    snapshot: StateSnapshot
    expected: int | None
    token: str | None
    _raw: bytes | None = None

    def raw(self, version: int) -> bytes:
        """The stored record at ``version``."""
        if self._raw is not None and self.expected is not None and version == self.expected + 1:
            return self._raw
        what = f"{self.kind} record {self.record_id!r}"
        raw = encode_record(self.snapshot, self.record_id, version, what)
        if self.expected is not None and version == self.expected + 1:
            self._raw = raw
        return raw


@dataclass(slots=True)
class PreparedDelete:
    kind: str
    record_id: str
    expected: int | None
    token: str | None


@dataclass(slots=True)
class PreparedExpect:
    kind: str
    record_id: str
    version: int
    token: str | None


@dataclass(slots=True)
class PreparedFence:
    resource: str
    fencing_token: int


Prepared = PreparedAppend | PreparedPut | PreparedDelete | PreparedExpect | PreparedFence


def _check_kind(kind: object) -> str:
    return check_id(kind, "record kind")


def _check_token(token: object) -> str | None:
    if token is None or isinstance(token, str):
        return token
    raise InvalidInput(f"token must be a string or None, got {type(token).__name__}", field="token")


def prepare(ops: Sequence[Op], *, max_writes: int | None = None) -> list[Prepared]:
    """Check every operation (ids, versions, records, events) and encode what does not
    depend on the store's current versions; ``InvalidInput`` / ``SerializationError``
    before any I/O. Two operations on the same record or stream are refused."""
    if isinstance(ops, Append | Put | Delete | Expect | Fence) or not isinstance(ops, Sequence):
        raise InvalidInput("ops must be a list of operations", field="ops")
    if not ops:
        raise InvalidInput("a commit needs at least one operation", field="ops")
    prepared: list[Prepared] = []
    targets: set[tuple[str, str]] = set()
    streams: set[str] = set()

    def claim(kind: str, record_id: str) -> None:
        if (kind, record_id) in targets:
            raise InvalidInput(
                f"two operations of one commit touch {kind} record {record_id!r}", field="ops"
            )
        targets.add((kind, record_id))

    writes = 0
    for position, op in enumerate(ops):
        if isinstance(op, Append):
            stream_id = check_id(op.stream_id, "stream id")
            if stream_id in streams:
                raise InvalidInput(
                    f"two appends of one commit go to stream {stream_id!r}", field="ops"
                )
            streams.add(stream_id)
            expected = check_expected_version(op.expected_version)
            events = check_events(stream_id, op.events, expected)
            state = None if op.state is None else check_snapshot(op.state, "state")
            if state is not None:
                claim(STATES, stream_id)
            prior = None if op.prior is None else check_snapshot(op.prior, "prior")
            item = PreparedAppend(
                stream_id, events, expected, state, _check_token(op.token), prior,
                [event.id for event in events],
            )
            if expected is not None:  # encode now, outside any lock or transaction
                item.rows(expected)
                item.state_raw(expected + len(events))
            prepared.append(item)
            writes += item.writes
        elif isinstance(op, Put):
            kind = _check_kind(op.kind)
            record_id = check_id(op.record_id, f"{kind} record id")
            claim(kind, record_id)
            snapshot = check_snapshot(op.snapshot)
            put = PreparedPut(
                kind, record_id, snapshot, check_expected_version(op.expected_version),
                _check_token(op.token),
            )
            if put.expected is not None:
                put.raw(put.expected + 1)
            prepared.append(put)
            writes += 1
        elif isinstance(op, Delete):
            kind = _check_kind(op.kind)
            record_id = check_id(op.record_id, f"{kind} record id")
            claim(kind, record_id)
            prepared.append(PreparedDelete(
                kind, record_id, check_expected_version(op.expected_version),
                _check_token(op.token),
            ))
            writes += 1
        elif isinstance(op, Expect):
            kind = _check_kind(op.kind)
            record_id = check_id(op.record_id, f"{kind} record id")
            claim(kind, record_id)
            prepared.append(PreparedExpect(
                kind, record_id, check_version(op.version, "expect version"),
                _check_token(op.token),
            ))
            writes += 1
        elif isinstance(op, Fence):
            resource = check_id(op.resource, "lock resource")
            claim(LOCKS, resource)
            token = check_version(op.fencing_token, "fencing_token")
            prepared.append(PreparedFence(resource, token))
            writes += 1
        else:
            raise InvalidInput(
                f"ops[{position}] must be Append, Put, Delete, Expect or Fence, "
                f"got {type(op).__name__}",
                field="ops",
            )
    if max_writes is not None and writes > max_writes:
        raise InvalidInput(
            f"this commit needs {writes} writes; the store allows at most {max_writes} in one "
            "atomic commit (split it)",
            field="ops",
        )
    return prepared


@dataclass(slots=True)
class Needs:
    """What a backend must read before :func:`plan`."""

    streams: list[str] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)
    fences: list[str] = field(default_factory=list)
    #: streams whose appends are at the head: look these event ids up
    ids: dict[str, list[str]] = field(default_factory=dict)


def needs(prepared: list[Prepared]) -> Needs:
    wanted = Needs()
    for item in prepared:
        if isinstance(item, PreparedAppend):
            wanted.streams.append(item.stream_id)
            if item.state is not None:
                wanted.records.append((STATES, item.stream_id))
            if item.expected is None:
                wanted.ids[item.stream_id] = item.event_ids
        elif isinstance(item, PreparedFence):
            wanted.fences.append(item.resource)
        else:
            wanted.records.append((item.kind, item.record_id))
    return wanted


@dataclass(slots=True)
class Current:
    """What the store holds now, read inside the commit's atomic scope."""

    heads: dict[str, int] = field(default_factory=dict)
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: lease record's fencing token per resource (None: no lease record)
    fences: dict[str, int | None] = field(default_factory=dict)
    #: event id -> version, per stream, for appends at the head
    found_ids: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class Plan:
    """The rows to write (all or none) and the result to return."""

    result: CommitResult
    events: list[tuple[str, list[EventRow]]] = field(default_factory=list)
    puts: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    deletes: list[tuple[str, str]] = field(default_factory=list)
    #: the query index fields (machine, state) of each state record put, by id
    #: (:mod:`tai_fsm.stores.query`): backends store them beside the record
    indexed: dict[str, Index] = field(default_factory=dict)

    def index(self, kind: str, record_id: str) -> Index:
        """The index fields of the record put as ``(kind, record_id)``."""
        return self.indexed.get(record_id, _NO_INDEX) if kind == STATES else _NO_INDEX


def plan(governor: str, prepared: list[Prepared], current: Current) -> Plan:
    """Decide the commit from ``current`` (see module docstring)."""
    results: list[OpResult] = []
    decided = Plan(CommitResult(results))
    for item in prepared:
        if isinstance(item, PreparedAppend):
            head = current.heads.get(item.stream_id, 0)
            if item.expected is None:
                found = current.found_ids.get(item.stream_id, {})
                present = [found[i] for i in item.event_ids if i in found]
                if present:
                    if len(present) != len(item.event_ids):
                        raise InvalidInput(
                            "some events of this append are already in stream "
                            f"{item.stream_id!r} and others are not",
                            field="events",
                        )
                    results.append(OpResult(max(present), None, already_applied=True))
                    continue
                first = item.events[0].version
                if first and first != head + 1:
                    raise InvalidInput(
                        f"event {item.event_ids[0]!r} carries version {first} but would be "
                        f"appended as version {head + 1}",
                        field="events",
                    )
                base = head
            else:
                if head != item.expected:
                    raise VersionConflict(item.stream_id, item.expected, head)
                base = item.expected
            if item.state is not None:
                record = current.versions.get((STATES, item.stream_id), 0)
                if record != base:
                    raise VersionConflict(item.stream_id, base, record)
            rows = item.rows(base)
            new_head = base + len(rows)
            decided.events.append((item.stream_id, rows))
            state_raw = item.state_raw(new_head)
            if state_raw is not None and item.state is not None:
                decided.puts.append((STATES, item.stream_id, new_head, state_raw))
                decided.indexed[item.stream_id] = index_of(item.state)
            results.append(OpResult(new_head))
        elif isinstance(item, PreparedPut):
            version = current.versions.get((item.kind, item.record_id), 0)
            if item.expected is not None and version != item.expected:
                raise VersionConflict(item.record_id, item.expected, version)
            decided.puts.append((item.kind, item.record_id, version + 1, item.raw(version + 1)))
            if item.kind == STATES:
                decided.indexed[item.record_id] = index_of(item.snapshot)
            results.append(OpResult(version + 1))
        elif isinstance(item, PreparedDelete):
            version = current.versions.get((item.kind, item.record_id), 0)
            if version == 0:
                raise StateNotFound(governor, item.record_id, _what(item.kind))
            if item.expected is not None and version != item.expected:
                raise VersionConflict(item.record_id, item.expected, version)
            decided.deletes.append((item.kind, item.record_id))
            results.append(OpResult(0))
        elif isinstance(item, PreparedExpect):
            version = current.versions.get((item.kind, item.record_id), 0)
            if version != item.version:
                raise VersionConflict(item.record_id, item.version, version)
            results.append(OpResult(version))
        else:
            issued = current.fences.get(item.resource)
            check_fence(item, issued)
            results.append(OpResult(issued or 0))
    return decided


def check_fence(item: PreparedFence, issued: int | None) -> None:
    """``LockNotHeld`` unless ``item``'s fencing token is still the newest issued."""
    if issued is None:
        raise LockNotHeld(
            f"fenced write refused: no lease was ever issued for lock {item.resource!r}"
        )
    if issued > item.fencing_token:
        raise LockNotHeld(
            f"fenced write refused: lock {item.resource!r} has issued fencing token {issued}, "
            f"newer than this writer's {item.fencing_token} (its lease was taken over)"
        )


def fencing_token_of(raw: bytes) -> int | None:
    """The ``fencing_token`` a stored lease record holds in its ``data`` (None when it
    holds none): what :class:`~tai_fsm.stores.ops.Fence` compares against."""
    try:
        value = orjson.loads(raw).get("data", {}).get("fencing_token")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _what(kind: str) -> str:
    return "state" if kind == STATES else f"{kind} record"


def landed_ranges(prepared: list[Prepared]) -> list[tuple[str, int, int]]:
    """(stream, first, last) versions whose event ids tell whether this commit landed."""
    return [
        (item.stream_id, item.expected + 1, item.expected + len(item.events))
        for item in prepared
        if isinstance(item, PreparedAppend) and item.expected is not None
    ]


def recognise(
    prepared: list[Prepared], stored_ids: dict[str, list[str]], tokens: dict[str, str | None]
) -> CommitResult | None:
    """The result of a commit that already landed — every append's events are stored at
    the versions it asked for (``stored_ids``: stream -> ids at those versions) — or
    ``None``. Only commits with appends can be recognised."""
    ranges = landed_ranges(prepared)
    if not ranges:
        return None
    for item in prepared:
        if isinstance(item, PreparedAppend) and item.expected is not None and (
            stored_ids.get(item.stream_id) != item.event_ids
        ):
            return None
    results: list[OpResult] = []
    for item in prepared:
        if isinstance(item, PreparedAppend) and item.expected is not None:
            head = item.expected + len(item.events)
            results.append(OpResult(head, tokens.get(item.stream_id), already_applied=True))
        else:
            results.append(OpResult(0, None, already_applied=True))
    return CommitResult(results, already_applied=True)


def check_snapshot_version(snapshot: StateSnapshot) -> None:
    """Snapshots are stored at their own version (>= 1) with an aware timestamp."""
    check_version(snapshot.version, "snapshot.version", minimum=1)
    check_aware(snapshot.timestamp, "snapshot.timestamp")
