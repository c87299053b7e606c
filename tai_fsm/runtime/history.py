"""Reading an instance's past from the store: rebuild (newest snapshot + replay), time travel
and audit (hash-chain verification). Replay sets state and data directly from each event's
``to_state``; callbacks are never re-run.

``verify`` checks, per stream: dense versions; each event's ``prev_hash`` is the hash of the
event before; each event's own hash (which covers ``from_state`` only at version 1, see
:mod:`tai_fsm.runtime.hashing`); from version 2 on, ``from_state`` equals the previous
event's ``to_state``; a snapshot equals the event at its version (the event hash it
records and its data against the event's ``to_state``), and none lies beyond the head; and
the state record reflects the newest event. A record that cannot be decoded is reported as a
problem, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tai_fsm.errors import IntegrityError, InvalidInput, SerializationError, StateNotFound, shown
from tai_fsm.records import Event, StateSnapshot, StoredState, ensure_utc
from tai_fsm.runtime.hashing import compute_event_hash
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, Store, span_of

log = logging.getLogger("tai_fsm.runtime")

__all__ = [
    "Rebuilt",
    "VerifyReport",
    "rebuild",
    "record_reflects",
    "snapshot_follow_mismatch",
    "snapshot_mismatch",
    "verify_checked",
    "verify_governor",
    "verify_instance",
    "verify_stream",
]


@dataclass(slots=True)
class Rebuilt:
    """An instance record rebuilt from snapshot + events."""

    record: StateSnapshot
    version: int
    snapshot_version: int
    replayed: int
    last_hash: str | None


def snapshot_mismatch(snap: StateSnapshot, event: Event) -> str | None:
    """Why snapshot ``snap`` disagrees with ``event``, the event at its version (None when
    it agrees): the event hash it records, and its data against the event's ``to_state``
    (which the event's hash covers). A snapshot is a cache of the log, never its master."""
    recorded = snap.metadata.context.get("event_hash")
    if recorded is not None and event.hash is not None and recorded != event.hash:
        return (
            f"the snapshot at version {snap.version} records another event hash than the "
            "event log's"
        )
    if snap.data != event.to_state.data:
        return (
            f"the snapshot at version {snap.version} does not match the event log (its data "
            "differs from the state that event moved to)"
        )
    return None


def snapshot_follow_mismatch(snap: StateSnapshot, following: Event) -> str | None:
    """Why snapshot ``snap`` disagrees with ``following``, the event right after it, when
    the event at the snapshot's version is gone (compacted): that event's ``prev_hash``
    (covered by its hash) must be the hash the snapshot records, and the ``from_state`` it
    keeps since compaction must be the snapshot's data. None when it agrees."""
    recorded = snap.metadata.context.get("event_hash")
    if recorded is not None and following.prev_hash is not None and recorded != following.prev_hash:
        return (
            f"the snapshot at version {snap.version} records another event hash than the "
            f"event log's (version {following.version} follows another event)"
        )
    if following.from_state is not None and following.from_state.data != snap.data:
        return (
            f"the snapshot at version {snap.version} does not match the event log (its data "
            f"differs from the state version {following.version} moved from)"
        )
    return None


async def _snapshot_problem(
    store: Store, governor: str, stream_id: str, snap: StateSnapshot
) -> str | None:
    """Why ``snap`` cannot be trusted over the log (None when it can): compared with the
    event at its version, or — compacted away — with the event after it. With neither in
    the log, the snapshot's own seal (checked when it was decoded) is all there is."""
    event = await _event_at(store, governor, stream_id, snap.version)
    if event is not None:
        return snapshot_mismatch(snap, event)
    following = await _event_at(store, governor, stream_id, snap.version + 1)
    return None if following is None else snapshot_follow_mismatch(snap, following)


async def _event_at(store: Store, governor: str, stream_id: str, version: int) -> Event | None:
    """The event at ``version`` (decoded with the few rows a delta needs), or None when it
    is not in the log (compacted)."""
    span = await store.read_event_span(
        governor, stream_id, after_version=version - 1, up_to_version=version
    )
    return span.last if span.count else None


async def _snapshot_before(
    store: Store, governor: str, stream_id: str, version: int | None, at: datetime | None
) -> StateSnapshot | None:
    """The newest snapshot at or before ``version`` (and taken at or before ``at``) that
    agrees with the event log. A snapshot whose event is still in the log must equal it
    (:func:`snapshot_mismatch`); one whose event was compacted must agree with the event
    after it (:func:`snapshot_follow_mismatch`), and is otherwise trusted on its own seal
    (checked when it is decoded). A snapshot that fails a check is skipped with a
    warning, and the next older one tried: recovery and ``state_at`` then replay more of
    the log, they never return a forged snapshot's data."""
    limit = version
    while limit is None or limit >= 1:
        try:
            snap = await store.load_snapshot(governor, stream_id, at_or_before=limit)
        except IntegrityError as exc:
            bad = exc.version
            log.warning("%s/%s: %s; using the event log instead", governor, stream_id, exc)
            if not isinstance(bad, int):
                return None
            limit = bad - 1
            continue
        if snap is None:
            return None
        if at is None or snap.timestamp <= at:
            problem = await _snapshot_problem(store, governor, stream_id, snap)
            if problem is None:
                return snap
            log.warning(
                "%s/%s: %s; replaying the event log instead", governor, stream_id, problem
            )
        limit = snap.version - 1
    return None


async def rebuild(
    store: Store,
    governor: str,
    stream_id: str,
    *,
    version: int | None = None,
    at: datetime | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Rebuilt:
    """The record of ``stream_id`` at ``version`` / time ``at`` (latest when neither) from
    the nearest earlier snapshot plus the events after it, read in batches.

    Raises ``StateNotFound`` when nothing exists at that point, ``InvalidInput`` for a
    version beyond the head, ``IntegrityError`` for a gap in the event log."""
    if version is not None and version < 1:
        raise InvalidInput(f"version must be >= 1, got {version}", field="version")
    cutoff = ensure_utc(at, "at") if at is not None else None
    snap = await _snapshot_before(store, governor, stream_id, version, cutoff)
    record = snap
    current = snap.version if snap is not None else 0
    last_hash = snap.metadata.context.get("event_hash") if snap is not None else None
    if cutoff is not None:
        # As of a time: events in version order up to the first one later than `at` (clocks
        # of different nodes may disagree, so a later version can carry an earlier time).
        span = await span_of(
            store.read_events(governor, stream_id, after_version=current,
                              up_to_version=version, batch_size=batch_size),
            stop_after=cutoff,
        )
    else:
        span = await store.read_event_span(
            governor, stream_id, after_version=current, up_to_version=version,
            batch_size=batch_size,
        )
    if span.count:
        if span.first_version != current + 1:
            if current == 0:
                if version is not None and version < span.first_version:
                    raise _compacted(stream_id, version, span.first_version)
                raise IntegrityError(
                    f"{stream_id!r}: events before version {span.first_version} were "
                    "compacted and no snapshot covers them",
                    stream_id=stream_id,
                    version=span.first_version,
                )
            raise IntegrityError(
                f"{stream_id!r}: gap in the event log, version {current} is followed by "
                f"{span.first_version}",
                stream_id=stream_id,
                version=current + 1,
            )
        if not span.dense:
            raise IntegrityError(
                f"{stream_id!r}: gap in the event log between versions {span.first_version} "
                f"and {span.last_version} ({span.count} events for "
                f"{span.last_version - span.first_version + 1} versions)",
                stream_id=stream_id,
                version=span.first_version,
            )
        assert span.last is not None
        record = span.last.to_state
        current = span.last_version
        last_hash = span.last.hash
    replayed = span.count
    if record is None:
        if version is not None:
            async for earliest in store.read_events(governor, stream_id, batch_size=1):
                if earliest.version > version:
                    raise _compacted(stream_id, version, earliest.version)
                break
        raise StateNotFound(governor, stream_id, "instance")
    if version is not None and current != version:
        head = await store.stream_version(governor, stream_id)
        raise InvalidInput(
            f"{stream_id!r} has no version {version} (head is {head})", field="version"
        )
    return Rebuilt(
        record=record.model_copy(update={"version": current}),
        version=current,
        snapshot_version=snap.version if snap is not None else 0,
        replayed=replayed,
        last_hash=last_hash,
    )


def _compacted(stream_id: str, version: int, first: int) -> InvalidInput:
    return InvalidInput(
        f"{stream_id!r} version {version} is no longer in the log: events before version "
        f"{first} were compacted by cleanup (state_at works from the oldest kept snapshot on)",
        field="version",
    )


@dataclass(slots=True)
class VerifyReport:
    """Outcome of walking one stream's hash chain."""

    stream_id: str
    events_checked: int = 0
    head: int = 0
    first_version: int = 0
    problems: list[str] = field(default_factory=list)
    broken_version: int | None = None
    #: False when earlier events were compacted and no kept snapshot records the hash just
    #: before the first remaining event: that one link cannot be checked (all later can).
    anchored: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_broken(self) -> None:
        if self.problems:
            raise IntegrityError(
                f"{self.stream_id!r}: {self.problems[0]}",
                stream_id=self.stream_id,
                version=self.broken_version,
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "ok": self.ok,
            "events_checked": self.events_checked,
            "first_version": self.first_version,
            "head": self.head,
            "broken_version": self.broken_version,
            "anchored": self.anchored,
            "problems": self.problems,
        }


async def _check_snapshot_anchor(
    store: Store, governor: str, stream_id: str, event: Event
) -> str | None:
    """A snapshot must be the state its event moved to: the event hash it records and its
    data (:func:`snapshot_mismatch`)."""
    snap = await store.load_snapshot(governor, stream_id, at_or_before=event.version)
    if snap is None or snap.version != event.version:
        return None
    return snapshot_mismatch(snap, event)


def _check_event(
    event: Event, expected_version: int, prev_hash: str | None, previous: Event | None
) -> str | None:
    """The first problem of ``event`` given the event before it (``previous``; None at the
    start of the walk) and that one's hash."""
    if event.version != expected_version:
        return f"version {expected_version} is missing (found {event.version})"
    if event.to_state.version not in (0, event.version):
        return f"version {event.version}: to_state.version is {event.to_state.version}"
    if event.hash is None and event.prev_hash is None and prev_hash is None:
        return None  # a stream written without hashes (e.g. Store.log_event): order only
    if event.prev_hash != prev_hash:
        return f"version {event.version}: prev_hash does not match the previous event's hash"
    if event.hash is None or compute_event_hash(event) != event.hash:
        return f"version {event.version}: content does not match its hash (tampered)"
    # After version 1 the hash leaves from_state to the chain: it must BE the state the
    # previous (hash-covered) event moved to.
    if previous is not None and event.from_state != previous.to_state:
        return (
            f"version {event.version}: from_state is not the to_state of version "
            f"{previous.version}"
        )
    return None


def _unreadable(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def record_reflects(stored: StoredState, event: Event) -> bool:
    """True when state record ``stored`` is the state ``event`` moved to: equal data, and
    the same version — or, where a seed record and its stream count versions separately
    (``StateMachinePersister``), the record names that event as the one it reflects."""
    if stored.snapshot.data != event.to_state.data:
        return False
    return stored.version == event.version or (
        stored.snapshot.metadata.context.get("event_id") == event.id
    )


async def verify_stream(
    store: Store, governor: str, stream_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> VerifyReport:
    """Walk the hash chain of ``stream_id`` and compare the head with the state record.
    Reports the first broken link, including a record that cannot be decoded (it never
    raises for a broken chain; see ``VerifyReport.raise_if_broken``)."""
    report = VerifyReport(stream_id=stream_id)
    prev_hash: str | None = None
    expected = 1
    first = True
    last: Event | None = None
    snapshot_versions = set(await store.snapshot_versions(governor, stream_id))
    try:
        async for event in store.read_events(governor, stream_id, batch_size=batch_size):
            if first:
                first = False
                report.first_version = event.version
                if event.version > 1:  # compacted: anchor on the snapshot just before, if kept
                    expected = event.version
                    anchor = None
                    if event.version - 1 in snapshot_versions:
                        anchor = await store.load_snapshot(
                            governor, stream_id, at_or_before=event.version - 1
                        )
                    if anchor is not None and anchor.metadata.context.get("event_hash"):
                        prev_hash = anchor.metadata.context["event_hash"]
                    else:  # the chain starts here; every later link is still checked
                        prev_hash = event.prev_hash
                        report.anchored = False
                    if anchor is not None and (
                        mismatch := snapshot_follow_mismatch(anchor, event)
                    ):
                        report.problems.append(mismatch)
                        report.broken_version = anchor.version
                        return report
            problem = _check_event(event, expected, prev_hash, last)
            if problem is None and event.version in snapshot_versions:
                problem = await _check_snapshot_anchor(store, governor, stream_id, event)
            if problem is not None:
                report.problems.append(problem)
                report.broken_version = expected
                return report
            report.events_checked += 1
            prev_hash = event.hash
            expected += 1
            last = event
    except (IntegrityError, SerializationError) as exc:
        report.problems.append(f"version {expected} cannot be read: {_unreadable(exc)}")
        report.broken_version = expected
        return report
    report.head = expected - 1
    beyond = [v for v in snapshot_versions if v > report.head]
    if beyond and last is not None:
        report.problems.append(
            f"a snapshot at version {beyond[0]} lies beyond the head of the event log "
            f"({report.head})"
        )
        report.broken_version = beyond[0]
        return report
    if last is None:
        return report
    try:
        stored = await store.read_state(governor, stream_id)
    except StateNotFound:
        return report  # a deleted instance keeps its audit trail
    except (IntegrityError, SerializationError) as exc:
        report.problems.append(f"the state record cannot be read: {_unreadable(exc)}")
        report.broken_version = last.version
        return report
    if not record_reflects(stored, last):
        report.problems.append(
            f"state record (version {stored.version}) disagrees with the event log "
            f"(head {last.version})"
        )
        report.broken_version = last.version
    return report


async def verify_instance(
    store: Store, governor: str, stream_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> VerifyReport:
    """:func:`verify_stream`, and for an id without events: ``StateNotFound`` when there is
    no state record either, a problem when the record is a runtime instance's (its event
    log is gone)."""
    report = await verify_stream(store, governor, stream_id, batch_size=batch_size)
    if report.events_checked or report.problems:
        return report
    try:
        stored = await store.read_state(governor, stream_id)
    except StateNotFound:
        raise StateNotFound(governor, stream_id, "instance") from None
    except (IntegrityError, SerializationError) as exc:
        report.problems.append(f"the state record cannot be read: {_unreadable(exc)}")
        return report
    data = stored.snapshot.data
    if isinstance(data, dict) and "machine" in data and "state" in data:
        report.problems.append(
            f"state record (version {stored.version}) of a {shown(data['machine'], 40)} "
            "instance has no event log"
        )
        report.broken_version = stored.version
    return report


async def verify_checked(
    store: Store, governor: str, stream_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> VerifyReport | None:
    """:func:`verify_instance` that never raises for what it finds: any error reading the
    instance becomes a problem of its report. ``None`` when the id no longer exists."""
    try:
        return await verify_instance(store, governor, stream_id, batch_size=batch_size)
    except StateNotFound:
        return None
    except Exception as exc:  # report it, and go on with the next instance
        return VerifyReport(
            stream_id=stream_id,
            problems=[f"cannot be verified: {_unreadable(exc)}"],
            broken_version=getattr(exc, "version", None),
        )


async def verify_governor(
    store: Store, governor: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> AsyncIterator[VerifyReport]:
    """One report per id with an event stream or a state record in ``governor``, in id
    order; never stops at a broken or unreadable instance (see :func:`verify_checked`)."""
    ids = set(await store.list_streams(governor))
    async for state_id in store.list_states(governor):
        ids.add(state_id)
    for stream_id in sorted(ids):
        report = await verify_checked(store, governor, stream_id, batch_size=batch_size)
        if report is not None:
            yield report
