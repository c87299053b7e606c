"""Anti-entropy: ``ReplicatedStore.sync(governor)`` compares every copy of a governor across
the stores of a replica set and repairs what differs — streams (stale copies extended,
diverged copies resolved), the newest snapshot of each stream, and records of the given
kinds — and reports what it did (:class:`SyncReport`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from tai_fsm.consistency.divergence import Resolution
from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.reconcile import (
    Copy,
    Member,
    SnapshotCopy,
    reconcile_snapshots,
    reconcile_stream,
)
from tai_fsm.consistency.recordrepair import RecordRepair, reconcile_records
from tai_fsm.consistency.tracking import EVENTS
from tai_fsm.errors import OperationTimeout, StoreUnavailable, TaiFsmError
from tai_fsm.stores.ops import STATES

__all__ = ["EVENTS", "SyncFailure", "SyncReport", "run_sync"]

_BATCH = 500
_UNREACHABLE = (StoreUnavailable, OperationTimeout)


@dataclass(frozen=True, slots=True)
class SyncFailure:
    """A stream (``kind == "@events"``), record or store (``"@store"``) that could not be
    reconciled, and why."""

    kind: str
    id: str
    error: str


@dataclass(slots=True)
class SyncReport:
    """What ``sync`` found and did in ``governor``.

    ``stores``: the members reached (by name: ``primary``, ``replica 1``, ...);
    ``unreachable``: those that were not (run ``sync`` again later). ``copies``: events
    written to stale or losing copies; ``resolutions``: diverged streams resolved (each
    with its ``@resolve`` event ids); ``records``: records rewritten; ``snapshots``: newest
    snapshots copied; ``failures``: what could not be reconciled."""

    governor: str
    stores: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    streams_checked: int = 0
    records_checked: int = 0
    copies: list[Copy] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    records: list[RecordRepair] = field(default_factory=list)
    snapshots: list[SnapshotCopy] = field(default_factory=list)
    failures: list[SyncFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every store was reached and everything reconciled."""
        return not self.failures and not self.unreachable

    @property
    def changed(self) -> bool:
        """Something was written."""
        return bool(self.copies or self.resolutions or self.records or self.snapshots)

    def summary(self) -> str:
        """One line: ``governor 'g': 3 streams, 2 records checked; 1 stream copies written,
        ...``."""
        parts = [
            f"{len(self.copies)} stream copies written",
            f"{len(self.resolutions)} divergences resolved",
            f"{len(self.records)} records repaired",
            f"{len(self.snapshots)} snapshots copied",
            f"{len(self.failures)} failures",
        ]
        text = (
            f"governor {self.governor!r}: {self.streams_checked} streams, "
            f"{self.records_checked} records checked; " + ", ".join(parts)
        )
        if self.unreachable:
            text += f"; unreachable: {', '.join(self.unreachable)}"
        return text


async def _collect(ids: AsyncIterator[str]) -> list[str]:
    return [record_id async for record_id in ids]


async def run_sync(
    members: Sequence[Member],
    governor: str,
    kinds: Sequence[str],
    consistency: EventualConsistency,
) -> SyncReport:
    """Reconcile ``governor`` across ``members`` (arguments already checked)."""
    report = SyncReport(governor)
    listed = await asyncio.gather(
        *(m.store.list_streams(governor) for m in members), return_exceptions=True
    )
    reached: list[Member] = []
    streams: set[str] = set()
    for member, answer in zip(members, listed, strict=True):
        if isinstance(answer, _UNREACHABLE):
            report.unreachable.append(member.name)
        elif isinstance(answer, TaiFsmError):
            report.failures.append(SyncFailure("@store", member.name, repr(answer)))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            reached.append(member)
            streams.update(answer)
    report.stores = [m.name for m in reached]
    if len(reached) < 2:
        return report
    for stream_id in sorted(streams):
        report.streams_checked += 1
        try:
            outcome = await reconcile_stream(reached, governor, stream_id, consistency)
            report.copies.extend(outcome.copies)
            report.resolutions.extend(outcome.resolutions)
            report.snapshots.extend(
                await reconcile_snapshots(reached, governor, stream_id, outcome.head)
            )
        except TaiFsmError as exc:
            report.failures.append(SyncFailure(EVENTS, stream_id, repr(exc)))
    failed_streams = {f.id for f in report.failures if f.kind == EVENTS}
    for kind in kinds:
        await _sync_kind(reached, governor, kind, consistency, report, failed_streams)
    return report


async def _sync_kind(
    members: list[Member],
    governor: str,
    kind: str,
    consistency: EventualConsistency,
    report: SyncReport,
    failed_streams: set[str],
) -> None:
    try:
        listed = await asyncio.gather(
            *(_collect(m.store.list_records(governor, kind=kind)) for m in members)
        )
    except TaiFsmError as exc:
        report.failures.append(SyncFailure(kind, "*", repr(exc)))
        return
    ids = sorted({record_id for found in listed for record_id in found})
    if kind == STATES:  # the state record of a stream that failed goes with the stream
        ids = [record_id for record_id in ids if record_id not in failed_streams]
    report.records_checked += len(ids)
    for start in range(0, len(ids), _BATCH):
        batch = ids[start : start + _BATCH]
        try:
            copies = await asyncio.gather(
                *(m.store.batch_read_records(governor, batch, kind=kind) for m in members)
            )
            _, repairs, failures = await reconcile_records(
                members, copies, governor, kind, batch, consistency
            )
        except TaiFsmError as exc:
            report.failures.extend(SyncFailure(kind, rid, repr(exc)) for rid in batch)
            continue
        report.records.extend(repairs)
        report.failures.extend(SyncFailure(kind, rid, repr(exc)) for rid, exc in failures)
