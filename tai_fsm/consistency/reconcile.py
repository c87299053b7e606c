"""Bringing the copies of one stream (and its snapshots) to agreement across several stores —
the I/O half of ``ReplicatedStore``'s read-repair and ``sync`` for streams (the pure half is
:mod:`tai_fsm.consistency.divergence`; records: :mod:`tai_fsm.consistency.recordrepair`).

Every function reads each store through its public Store API and writes through
``Store.commit`` (plus :func:`~tai_fsm.consistency.rewind.rewind_and_append` for the losing
copy of a diverged stream). They are idempotent: run twice, the second run changes nothing;
interrupted, a later run finishes the job. Writes are ordered so that an interruption never
leaves a store worse off: copies that must be rewound are rewritten first (each in one
atomic step), copies that only lack events are extended afterwards.

Stream reconciliation, for the copies of stream ``S``:

1. each copy's head (version and event id); all equal: nothing to do;
2. copies that are a prefix of another (same id at their head version in the other) are
   *stale*; the others are the *branches*. One branch: copy what each stale copy lacks;
3. several branches: find the last version they share (binary search on event ids), read
   each branch after it, resolve them (:func:`~tai_fsm.consistency.divergence.
   resolve_branches`) and write the resolved history to every copy.

A state record that follows its stream (its version is the head) is written together with
the events, so it always agrees with the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tai_fsm.consistency.divergence import (
    Resolution,
    common_prefix,
    resolve_branches,
    state_record,
)
from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.rewind import can_rewind, rewind_and_append
from tai_fsm.errors import IntegrityError, InvalidInput
from tai_fsm.records import Event, StateSnapshot, StoredState
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Append

__all__ = [
    "Copy",
    "Member",
    "SnapshotCopy",
    "StreamOutcome",
    "event_at",
    "reconcile_snapshots",
    "reconcile_stream",
]

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Member:
    """One store of a replica set and the name reports give it (``primary``, ``replica 1``)."""

    store: Store
    name: str


@dataclass(frozen=True, slots=True)
class Copy:
    """Events written to one store's copy of a stream: versions ``from_version + 1`` to
    ``to_version``; ``rewound`` of its own events (a losing branch) were replaced first."""

    stream_id: str
    store: str
    from_version: int
    to_version: int
    rewound: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotCopy:
    """The newest snapshot of a stream, copied to a store that lacked it."""

    stream_id: str
    version: int
    store: str


@dataclass(slots=True)
class StreamOutcome:
    """What reconciling one stream did; ``head`` is the agreed head version."""

    stream_id: str
    head: int = 0
    copies: list[Copy] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.copies or self.resolutions)


@dataclass(slots=True)
class _View:
    member: Member
    head: int
    head_id: str | None
    record: StoredState | None = None
    #: the branch this copy is a strict prefix of (None: it is a branch itself)
    prefix_of: _View | None = None
    branch: list[Event] = field(default_factory=list)


def _chunk(store: Store) -> int:
    limit = store.max_commit_writes
    return _CHUNK if limit is None else max(1, min(_CHUNK, limit - 1))


async def event_at(store: Store, governor: str, stream_id: str, version: int) -> Event | None:
    """The event at ``version`` (None when there is none, or it was compacted away)."""
    if version < 1:
        return None
    async for event in store.read_events(
        governor, stream_id, after_version=version - 1, up_to_version=version, batch_size=1
    ):
        return event
    return None


async def _read_range(
    store: Store, governor: str, stream_id: str, after: int, upto: int
) -> list[Event]:
    events = [
        e async for e in store.read_events(governor, stream_id, after_version=after,
                                           up_to_version=upto)
    ]
    _check_dense(stream_id, after, upto, events)
    return events


def _check_dense(stream_id: str, after: int, upto: int, events: Sequence[Event]) -> None:
    if len(events) != upto - after or (events and events[0].version != after + 1):
        raise IntegrityError(
            f"cannot copy {stream_id!r} versions {after + 1}..{upto}: the source lacks some "
            "(compacted?)",
            stream_id=stream_id,
            version=after + 1,
        )


async def _view(member: Member, governor: str, stream_id: str, head: int | None) -> _View:
    store = member.store
    if head is None:
        head = await store.stream_version(governor, stream_id)
    head_event = await event_at(store, governor, stream_id, head)
    return _View(member, head, None if head_event is None else head_event.id)


async def _read_record(view: _View, governor: str, stream_id: str) -> None:
    found = await view.member.store.batch_read_states(governor, [stream_id])
    view.record = found.get(stream_id)


def _follows(view: _View) -> bool:
    """The copy's state record goes with its stream (absent counts as version 0)."""
    version = 0 if view.record is None else view.record.version
    return version == view.head


class _Ids:
    """Event ids at versions, read once per (store, version)."""

    def __init__(self, governor: str, stream_id: str) -> None:
        self.governor, self.stream_id = governor, stream_id
        self.cache: dict[tuple[int, int], str | None] = {}

    async def at(self, view: _View, version: int) -> str | None:
        if version == view.head:
            return view.head_id
        key = (id(view), version)
        if key not in self.cache:
            event = await event_at(view.member.store, self.governor, self.stream_id, version)
            self.cache[key] = None if event is None else event.id
        return self.cache[key]


async def reconcile_stream(
    members: Sequence[Member],
    governor: str,
    stream_id: str,
    consistency: EventualConsistency,
    *,
    heads: Sequence[int] | None = None,
    resolver_name: str | None = None,
) -> StreamOutcome:
    """Bring every member's copy of ``stream_id`` to one history (module docstring);
    ``heads``: the members' head versions when the caller has just read them.
    Raises ``ConflictResolutionFailed`` when the resolver refuses, ``InvalidInput`` when a
    losing copy lives on a store that cannot be rewound (nothing is written then), and the
    stores' own errors."""
    known = list(heads) if heads is not None else [None] * len(members)
    views = list(await asyncio.gather(
        *(_view(m, governor, stream_id, h) for m, h in zip(members, known, strict=True))
    ))
    outcome = StreamOutcome(stream_id, head=max(v.head for v in views))
    if len({(v.head, v.head_id) for v in views}) == 1:
        return outcome
    await asyncio.gather(*(_read_record(v, governor, stream_id) for v in views))
    ids = _Ids(governor, stream_id)
    branches: list[_View] = []
    for view in sorted(views, key=lambda v: -v.head):
        for branch in branches:
            if view.head == 0 or await ids.at(branch, view.head) == view.head_id:
                view.prefix_of = branch
                break
        else:
            branches.append(view)
    if len(branches) == 1:
        await _extend_stale(views, branches[0], governor, stream_id, outcome)
        return outcome
    base = await _fork(branches, ids)
    for branch in branches:
        branch.branch = await _read_range(
            branch.member.store, governor, stream_id, base, branch.head
        )
    resolved = resolve_branches(
        stream_id, base, [b.branch for b in branches], consistency.resolver,
        resolver_name=resolver_name,
    )
    outcome.resolutions.extend(resolved.resolutions)
    outcome.head = resolved.head
    await _write_resolved(views, branches, base, resolved.events, governor, stream_id, outcome)
    return outcome


async def _fork(branches: list[_View], ids: _Ids) -> int:
    """The last version every branch shares: binary search on event ids (an event compacted
    away counts as shared — compaction only removes old, settled history)."""
    lo, hi = 0, min(b.head for b in branches) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        found = {await ids.at(b, mid) for b in branches} - {None}
        if len(found) <= 1:
            lo = mid
        else:
            hi = mid - 1
    return lo


async def _extend_stale(
    views: list[_View], source: _View, governor: str, stream_id: str, outcome: StreamOutcome
) -> None:
    """One branch: append to every stale copy what it lacks, read from ``source``."""
    final = source.record if _follows(source) and source.record is not None else None
    for view in views:
        if view.head == source.head:
            continue
        store = view.member.store
        events = source.member.store.read_events(
            governor, stream_id, after_version=view.head, up_to_version=source.head,
            batch_size=_chunk(store),
        )
        with_state = final is not None and _follows(view)
        await _append_stream(
            store, governor, stream_id, view.head, source.head, events,
            final.snapshot if with_state and final is not None else None, with_state,
        )
        outcome.copies.append(Copy(stream_id, view.member.name, view.head, source.head))


async def _append_stream(
    store: Store,
    governor: str,
    stream_id: str,
    base: int,
    upto: int,
    events: AsyncIterator[Event],
    final: StateSnapshot | None,
    with_state: bool,
) -> None:
    """Append ``events`` (versions ``base + 1`` to ``upto``) in commits of at most what
    ``store`` allows. With ``with_state``, each commit also writes the state record of its
    last event (``final`` for the last commit)."""
    size = _chunk(store)
    batch: list[Event] = []
    async for event in events:
        if event.version != base + len(batch) + 1:
            raise IntegrityError(
                f"cannot copy {stream_id!r}: version {base + len(batch) + 1} is missing at "
                "the source (compacted?)",
                stream_id=stream_id,
                version=base + len(batch) + 1,
            )
        batch.append(event)
        if len(batch) == size or event.version == upto:
            await _commit_chunk(store, governor, stream_id, base, batch, upto, final, with_state)
            base += len(batch)
            batch = []
    if base != upto:
        raise IntegrityError(
            f"cannot copy {stream_id!r} up to version {upto}: the source ends at {base}",
            stream_id=stream_id,
            version=base + 1,
        )


async def _commit_chunk(
    store: Store,
    governor: str,
    stream_id: str,
    base: int,
    batch: list[Event],
    upto: int,
    final: StateSnapshot | None,
    with_state: bool,
) -> None:
    state = None
    if with_state:
        last = batch[-1]
        state = final if last.version == upto and final is not None else state_record(last)
    prior = batch[0].from_state if base >= 1 else None
    await store.commit(governor, [Append(stream_id, batch, base, state, None, prior)])


async def _iterate(events: Sequence[Event]) -> AsyncIterator[Event]:
    for event in events:
        yield event


async def _write_resolved(
    views: list[_View],
    branches: list[_View],
    base: int,
    resolved: list[Event],
    governor: str,
    stream_id: str,
    outcome: StreamOutcome,
) -> None:
    """Write the resolved history (``resolved``: events after ``base``) to every copy:
    losing copies are rewound first, then stale copies are extended."""
    head = base + len(resolved)
    final = _final_record(branches, head, resolved)
    plans: list[tuple[_View, list[Event], int]] = []
    for view in views:
        if view.prefix_of is None:
            own = view.branch
        elif view.head > base:
            own = view.prefix_of.branch[: view.head - base]
        else:
            own = []
        shared = common_prefix(own, resolved)
        plans.append((view, own, shared))
    cannot = [v.member.name for v, own, shared in plans
              if shared < len(own) and not can_rewind(v.member.store)]
    if cannot:
        raise InvalidInput(
            f"stream {stream_id!r} diverged, and the losing copy on {', '.join(cannot)} "
            "cannot be rewound (its store has no rewind_and_append); nothing was changed",
            field="store",
        )
    for view, own, shared in plans:  # rewinds first: each is one atomic step
        if shared < len(own):
            with_state = final is not None and _follows(view)
            await rewind_and_append(
                view.member.store, governor, stream_id,
                after_version=base + shared, expected_ids=[e.id for e in own[shared:]],
                events=resolved[shared:],
                state=(final if with_state else None),
            )
            outcome.copies.append(
                Copy(stream_id, view.member.name, base + shared, head, rewound=len(own) - shared)
            )
    for view, own, shared in plans:
        if shared < len(own) or view.head == head:
            continue
        store = view.member.store
        with_state = final is not None and _follows(view)
        if view.head < base:  # behind the fork: the shared part first
            source = branches[0].member.store
            gap = source.read_events(governor, stream_id, after_version=view.head,
                                     up_to_version=base, batch_size=_chunk(store))
            await _append_stream(store, governor, stream_id, view.head, base, gap, None,
                                 with_state)
        start = max(view.head, base)
        await _append_stream(
            store, governor, stream_id, start, head, _iterate(resolved[start - base:]),
            final if with_state else None, with_state,
        )
        outcome.copies.append(Copy(stream_id, view.member.name, view.head, head))


def _final_record(branches: list[_View], head: int, resolved: list[Event]) -> StateSnapshot | None:
    """The state record for the resolved head: the record of the branch whose history the
    resolved one is (when that record follows its stream), else the resolution's own."""
    if not resolved:
        return None
    for branch in branches:
        if branch.head == head and branch.head_id == resolved[-1].id:
            if branch.record is not None and _follows(branch):
                return branch.record.snapshot
            return None
    return state_record(resolved[-1])


# ---------------------------------------------------------------------- snapshots
async def reconcile_snapshots(
    members: Sequence[Member], governor: str, stream_id: str, head: int
) -> list[SnapshotCopy]:
    """Copy the newest snapshot (at or before ``head``) to every member that lacks it — the
    one recovery needs. Older snapshots are left to each store's retention."""
    held = await asyncio.gather(
        *(m.store.snapshot_versions(governor, stream_id) for m in members)
    )
    candidates = [v for versions in held for v in versions if v <= head]
    if not candidates:
        return []
    newest = max(candidates)
    source = next(m for m, versions in zip(members, held, strict=True) if newest in versions)
    snapshot = await source.store.load_snapshot(governor, stream_id, at_or_before=newest)
    if snapshot is None or snapshot.version != newest:
        return []
    copied: list[SnapshotCopy] = []
    for member, versions in zip(members, held, strict=True):
        if newest not in versions:
            await member.store.save_snapshot(governor, stream_id, snapshot)
            copied.append(SnapshotCopy(stream_id, newest, member.name))
    return copied

