"""Diverged event streams: how two (or more) histories of one stream become one.

Pure functions over ``Event`` lists — no I/O — used by ``ReplicatedStore`` (read-repair and
``sync``). A stream is dense and append-only, so copies of it relate in one of two ways:

* one is a **prefix** of the other (same event ids at the same versions): the shorter copy is
  merely *stale* and is brought up to date by appending what it lacks;
* both have events the other lacks after a common prefix: they have **diverged** (two writers
  appended the same versions, e.g. during a partition).

Resolving two branches ``X`` and ``Y`` after their common prefix:

1. if every event of one branch is already *covered* by the other — present in it, or listed
   as discarded by one of its ``@resolve`` events — the covering branch wins as is (a
   resolution that already happened somewhere is adopted, never repeated);
2. otherwise the resolver picks between the two branch heads' ``to_state`` (symmetric and
   deterministic: the same pick whichever side asks). The branch whose head it picked is
   **kept as is**; if it returned a merge, the last-write-wins winner is kept and the merged
   data becomes the new state;
3. the other branch's events are **listed in a new event** appended on top of the kept one,
   action ``@resolve`` (:func:`resolve_events`): nothing is silently dropped, the audit log
   shows every transition.

More than two branches (three stores diverged three ways) are settled at once the same way:
the resolver folds all heads in a canonical order, one branch is kept, and one ``@resolve``
lists every event of the others that the kept branch lacks.

Everything in a ``@resolve`` event is derived from the two branches only (its id, timestamp,
clock, payload), so every replica that resolves the same branches builds the same event,
byte for byte — the result does not depend on which side resolves first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cmp_to_key
from typing import Any

import orjson

from tai_fsm.codec import MAX_RECORD_BYTES
from tai_fsm.consistency.resolvers import Resolver, lww_compare
from tai_fsm.records import ChangeMetadata, Event, StateSnapshot, VectorClock

__all__ = [
    "RESOLVER_ACTOR",
    "RESOLVE_ACTION",
    "Resolution",
    "Resolved",
    "common_prefix",
    "covered_ids",
    "describe_event",
    "resolve_branches",
    "resolve_events",
    "state_record",
]

#: The action of the event that records a resolution.
RESOLVE_ACTION = "@resolve"
#: ``changed_by`` of resolution events and of the state records they produce.
RESOLVER_ACTOR = "tai-fsm/replicated"
#: Encoded size of the discarded events one ``@resolve`` event lists at most; more are split
#: over several ``@resolve`` events. Less when the resolved state is large: a stored event
#: (listing, state and envelope) must stay under the record limit.
MAX_LISTED_BYTES = 512 * 1024
#: Room kept for the rest of a ``@resolve`` event (ids, metadata, clocks, hashes).
_ENVELOPE = 64 * 1024

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


@dataclass(frozen=True, slots=True)
class Resolution:
    """One resolution of two diverged branches (what a ``SyncReport`` lists)."""

    stream_id: str
    #: the last version both branches share
    fork_version: int
    #: head (version, id) of the branch kept as is
    kept_head: tuple[int, str]
    #: ids of the discarded branch's events, oldest first (listed by the ``@resolve`` events)
    discarded: tuple[str, ...]
    #: ids of the ``@resolve`` events appended on top of the kept branch
    resolve_ids: tuple[str, ...]
    #: "kept" (the resolver picked the kept head's state) or "merged" (it merged the two)
    choice: str


@dataclass(slots=True)
class Resolved:
    """The resolved history after a common base version: ``events`` (versions ``base + 1``
    onwards) and the resolutions made to get there (empty when nothing had diverged)."""

    base: int
    events: list[Event]
    resolutions: list[Resolution] = field(default_factory=list)

    @property
    def head(self) -> int:
        return self.base + len(self.events)


def common_prefix(a: Sequence[Event], b: Sequence[Event]) -> int:
    """How many leading events ``a`` and ``b`` share (by event id)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x.id != y.id:
            break
        n += 1
    return n


def covered_ids(branch: Sequence[Event]) -> set[str]:
    """Ids of the events in ``branch`` and of those its ``@resolve`` events list as discarded."""
    ids = {event.id for event in branch}
    for event in branch:
        if event.action == RESOLVE_ACTION:
            for listed in event.payload.get("discarded") or ():
                if isinstance(listed, dict) and isinstance(listed.get("id"), str):
                    ids.add(listed["id"])
    return ids


def _head_state(event: Event) -> StateSnapshot:
    """The branch head's state as the resolver sees it: its ``to_state`` at the event's
    version and time (so resolvers compare like for like)."""
    to_state = event.to_state
    if to_state.version == event.version and to_state.id == event.stream_id:
        return to_state
    return to_state.model_copy(update={"id": event.stream_id, "version": event.version})


def _rank(branch: Sequence[Event]) -> tuple[StateSnapshot, str]:
    head = branch[-1]
    return _head_state(head), head.id


def _compare_branches(x: Sequence[Event], y: Sequence[Event]) -> int:
    """A total order on branches: last-write-wins on the heads' states, then head event id."""
    (sx, ix), (sy, iy) = _rank(x), _rank(y)
    order = lww_compare(sx, sy)
    if order:
        return order
    return (ix > iy) - (ix < iy)


_BRANCH_KEY = cmp_to_key(_compare_branches)


def resolve_branches(
    stream_id: str,
    base: int,
    branches: Sequence[Sequence[Event]],
    resolver: Resolver,
    *,
    resolver_name: str | None = None,
) -> Resolved:
    """The one history that every copy of ``stream_id`` converges to, given each copy's
    events after version ``base`` (``branches``; empty ones, duplicates and prefixes of
    others are fine).

    Branches already covered by another (every event present in it or listed by one of its
    ``@resolve`` events) are dropped. Of the rest, the resolver folds the heads' states in a
    canonical order (:func:`_compare_branches`, as ``EventualConsistency.resolve_all``
    does), so the result does not depend on the order the branches are given in: the
    branch whose head it picked is kept (on a merge: the last-write-wins branch), and one
    ``@resolve`` event lists every event of the other branches that the kept one lacks.
    Raises what the resolver raises (``ConflictResolutionFailed`` from a causality-aware
    resolver without a merge function)."""
    distinct: dict[tuple[str, ...], list[Event]] = {}
    for branch in branches:
        events = list(branch)
        if events:
            distinct.setdefault(tuple(event.id for event in events), events)
    found = list(distinct.values())
    covered = {
        n: {m for m, other in enumerate(found) if m != n and _covers(other, found[n])}
        for n in range(len(found))
    }
    candidates = sorted(  # canonical order: the last-write-wins winner last
        (events for n, events in enumerate(found)
         if not any(n not in covered[m] for m in covered[n])),
        key=_BRANCH_KEY,
    )
    if not candidates:
        return Resolved(base, [])
    if len(candidates) == 1:
        return Resolved(base, candidates[0])
    heads = [_head_state(events[-1]) for events in candidates]
    picked = heads[0]
    for head in heads[1:]:
        picked = resolver.resolve(picked, head)
    matching = [n for n, head in enumerate(heads) if head == picked]
    kept = candidates[matching[-1] if matching else -1]
    losing = [events for events in candidates if events is not kept]
    kept_ids = {event.id for event in kept}
    shared = min(common_prefix(kept, events) for events in losing)
    lost: dict[str, Event] = {}
    for events in losing:
        for event in events:
            if event.id not in kept_ids:
                lost.setdefault(event.id, event)
    listed = sorted(lost.values(), key=lambda event: (event.version, event.id))
    fork = base + shared
    merged = None if matching else picked
    appended = resolve_events(
        stream_id, fork, kept[shared:], [events[-1] for events in losing], listed, merged,
        resolver_name or repr(resolver),
    )
    resolution = Resolution(
        stream_id=stream_id,
        fork_version=fork,
        kept_head=(kept[-1].version, kept[-1].id),
        discarded=tuple(event.id for event in listed),
        resolve_ids=tuple(event.id for event in appended),
        choice="kept" if merged is None else "merged",
    )
    return Resolved(base, [*kept, *appended], [resolution])


def _covers(branch: Sequence[Event], other: Sequence[Event]) -> bool:
    """Whether every event of ``other`` is in ``branch`` or listed by its ``@resolve``
    events (``other`` is then already part of ``branch``'s history)."""
    covered = covered_ids(branch)
    return all(event.id in covered for event in other)


# ---------------------------------------------------------------------- @resolve events
def listing_budget(state_data: Any) -> int:
    """Bytes of listing one ``@resolve`` event can carry next to ``state_data``."""
    room = MAX_RECORD_BYTES - _ENVELOPE - len(orjson.dumps(state_data, option=_SORTED))
    return max(4096, min(MAX_LISTED_BYTES, room))


def describe_event(event: Event, budget: int = MAX_LISTED_BYTES) -> dict[str, Any]:
    """How a discarded event is listed in a ``@resolve`` payload (JSON): enough to audit it
    and to replay it by hand — id, version, action, payload, who and why, when, its clock,
    its hashes and the state it led to. When that is larger than ``budget``, the state's
    data is left out and its SHA-256 listed instead (the listing says so)."""
    listed: dict[str, Any] = {
        "id": event.id,
        "version": event.version,
        "action": event.action,
        "payload": event.payload,
        "timestamp": event.timestamp.isoformat(),
        "changed_by": event.metadata.changed_by,
        "reason": event.metadata.reason,
        "context": event.metadata.context,
        "causality": dict(event.causality.clocks),
        "hash": event.hash,
        "prev_hash": event.prev_hash,
        "to_state": {"version": event.to_state.version, "data": event.to_state.data},
    }
    if len(orjson.dumps(listed, option=_SORTED)) > budget:
        data = orjson.dumps(event.to_state.data, option=_SORTED)
        listed["to_state"] = {
            "version": event.to_state.version,
            "data_omitted": f"{len(data)} bytes: too large to list",
            "data_sha256": hashlib.sha256(data).hexdigest(),
        }
    return listed


def _chunks(listed: list[dict[str, Any]], budget: int) -> list[list[dict[str, Any]]]:
    """``listed`` split so that each part encodes to at most ``budget`` bytes."""
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in listed:
        entry_size = len(orjson.dumps(entry, option=_SORTED))
        if parts[-1] and size + entry_size > budget:
            parts.append([])
            size = 0
        parts[-1].append(entry)
        size += entry_size
    return parts


def _resolve_id(stream_id: str, fork: int, kept_head: str, lost_heads: list[str], part: int) -> str:
    key = orjson.dumps([stream_id, fork, kept_head, sorted(lost_heads), part])
    return f"resolve-{hashlib.sha256(key).hexdigest()[:40]}"


def resolve_events(
    stream_id: str,
    fork: int,
    kept: Sequence[Event],
    lost_heads: Sequence[Event],
    lost: Sequence[Event],
    merged: StateSnapshot | None,
    resolver_name: str,
) -> list[Event]:
    """The ``@resolve`` event(s) appended on top of the ``kept`` branch (its events after
    ``fork``), listing every event of ``lost`` (the other branches' events the kept one
    lacks; ``lost_heads``: those branches' heads). Usually one event; more when the listing
    would not fit in one (:func:`listing_budget`).

    The last one's ``to_state`` is the resolved state: the kept head's data, or ``merged``'s
    when the resolver merged. Timestamp: the latest of the heads'; clock: the merge of every
    head's clock (and the merge's), so the result descends every branch. Id, hash and
    payload are functions of the branches only."""
    head = kept[-1]
    timestamp = max(event.timestamp for event in (head, *lost_heads))
    clock = head.causality
    for other in lost_heads:
        clock = clock.merge(other.causality)
    if merged is not None:
        clock = clock.merge(merged.causality)
    data = head.to_state.data if merged is None else merged.data
    budget = listing_budget(data)
    parts = _chunks([describe_event(event, budget) for event in lost], budget)
    lost_ids = [event.id for event in lost_heads]
    events: list[Event] = []
    previous = head
    for number, part in enumerate(parts, start=1):
        version = previous.version + 1
        last = number == len(parts)
        payload: dict[str, Any] = {
            "fork_version": fork,
            "kept": {
                "from_version": fork + 1,
                "to_version": head.version,
                "head_id": head.id,
            },
            "discarded": part,
            "discarded_count": len(lost),
            "part": number,
            "parts": len(parts),
            "resolver": resolver_name,
            "choice": "kept" if merged is None else "merged",
        }
        to_state = StateSnapshot(
            id=stream_id,
            data=data if last else previous.to_state.data,
            version=version,
            timestamp=timestamp,
            causality=clock,
        )
        event = Event(
            id=_resolve_id(stream_id, fork, head.id, lost_ids, number),
            stream_id=stream_id,
            version=version,
            action=RESOLVE_ACTION,
            from_state=previous.to_state,
            to_state=to_state,
            payload=payload,
            timestamp=timestamp,
            causality=clock,
            metadata=ChangeMetadata(
                changed_by=RESOLVER_ACTOR,
                reason=f"resolved branches diverged after version {fork}",
                parent_version=previous.version,
                context={"fork_version": fork, "part": number, "parts": len(parts)},
            ),
            prev_hash=previous.hash,
        )
        event = event.model_copy(update={"hash": _event_hash(event)})
        events.append(event)
        previous = event
    return events


def _event_hash(event: Event) -> str:
    # The runtime's audit chain rule, so ``verify`` accepts resolution events. (It lives in
    # tai_fsm.runtime.hashing, one layer up; it should move down next to the records.)
    from tai_fsm.runtime.hashing import compute_event_hash

    return compute_event_hash(event)


def state_record(event: Event) -> StateSnapshot:
    """The state record that goes with ``event`` as the stream's head, in the runtime's
    shape: the event's ``to_state`` data, and ``metadata.context`` naming the event (id,
    hash, action) so the next transition chains its hash to it."""
    return StateSnapshot(
        id=event.stream_id,
        data=event.to_state.data,
        version=event.version,
        timestamp=event.timestamp,
        causality=event.causality,
        metadata=ChangeMetadata(
            changed_by=event.metadata.changed_by,
            reason=event.metadata.reason,
            parent_version=event.version - 1,
            context={"event_id": event.id, "event_hash": event.hash, "action": event.action},
        ),
    )


def merged_clock(snapshots: Sequence[StateSnapshot]) -> VectorClock:
    """The merge of every snapshot's clock."""
    clock = VectorClock()
    for snapshot in snapshots:
        clock = clock.merge(snapshot.causality)
    return clock
