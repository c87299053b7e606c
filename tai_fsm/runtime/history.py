"""Reading an instance's past from the store: rebuild (newest snapshot + replay), time travel
and audit (hash-chain verification). Replay sets state and data directly from each event's
``to_state``; callbacks are never re-run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tai_fsm.errors import IntegrityError, InvalidInput, StateNotFound
from tai_fsm.records import Event, StateSnapshot, ensure_utc
from tai_fsm.runtime.hashing import compute_event_hash
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, Store, span_of

__all__ = ["Rebuilt", "VerifyReport", "rebuild", "verify_stream"]


@dataclass(slots=True)
class Rebuilt:
    """An instance record rebuilt from snapshot + events."""

    record: StateSnapshot
    version: int
    snapshot_version: int
    replayed: int
    last_hash: str | None


async def _snapshot_before(
    store: Store, governor: str, stream_id: str, version: int | None, at: datetime | None
) -> StateSnapshot | None:
    if at is None:
        return await store.load_snapshot(governor, stream_id, at_or_before=version)
    for snap_version in reversed(await store.snapshot_versions(governor, stream_id)):
        if version is not None and snap_version > version:
            continue
        snap = await store.load_snapshot(governor, stream_id, at_or_before=snap_version)
        if snap is not None and snap.timestamp <= at:
            return snap
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
        raise StateNotFound(governor, stream_id, "instance history")
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
    """A snapshot records the hash of the event it was taken at: they must agree."""
    snap = await store.load_snapshot(governor, stream_id, at_or_before=event.version)
    if snap is None or snap.version != event.version:
        return None
    recorded = snap.metadata.context.get("event_hash")
    if recorded is not None and recorded != event.hash:
        return f"version {event.version}: the snapshot at this version records another hash"
    return None


def _check_event(event: Event, expected_version: int, prev_hash: str | None) -> str | None:
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
    return None


async def verify_stream(
    store: Store, governor: str, stream_id: str, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> VerifyReport:
    """Walk the hash chain of ``stream_id`` and compare the head with the state record.
    Reports the first broken link (it never raises for a broken chain; see
    ``VerifyReport.raise_if_broken``)."""
    report = VerifyReport(stream_id=stream_id)
    prev_hash: str | None = None
    expected = 1
    first = True
    last: Event | None = None
    snapshot_versions = set(await store.snapshot_versions(governor, stream_id))
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
        problem = _check_event(event, expected, prev_hash)
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
    report.head = expected - 1
    if last is None:
        return report
    try:
        stored = await store.read_state(governor, stream_id)
    except StateNotFound:
        return report  # a deleted instance keeps its audit trail
    if stored.version != last.version or stored.snapshot.data != last.to_state.data:
        report.problems.append(
            f"state record (version {stored.version}) disagrees with the event log "
            f"(head {last.version})"
        )
        report.broken_version = last.version
    return report
