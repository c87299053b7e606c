"""``ReplicatedStore(primary, *replicas, resolver=...)``: one Store over several stores.

It IS a ``Store``: the base class checks and encodes every argument once, as for any
backend; the wrapped stores are reached through their public API only (their own checks
are cheap repeats that cannot disagree), so any store — memory, SQLite, Firestore, a
third-party one — can be a primary or a replica, and every token or encoding stays the
business of the store that issued it.

**Writes** go to the primary through ``primary.commit`` and are then propagated to each
replica: the same writes (``Append``, ``Put``, ``Delete``; assertions — ``Expect``,
``Fence`` — were checked by the primary), with versions pinned to what the primary
returned, so a replica in step ends identical. A replica that is unreachable, behind or
diverged never fails the write: it is marked stale (see :attr:`ReplicatedStore.stale`) or,
when reachable, repaired at once. When the primary is unreachable, ``fallback_writes=True``
lets writes land on the first reachable replica instead ("keep working on a local SQLite
replica while the Firestore primary is unreachable"); the two sides may then append the
same versions — they diverge, and a later read or :meth:`ReplicatedStore.sync` resolves it.

**Reads** (``reads="all"``, the default) ask every reachable store. Records that disagree
are resolved with the resolver and the winner is written back to every store that differs
(read-repair); streams are compared by head version and head event id, and copies that
differ are reconciled (:mod:`tai_fsm.consistency.reconcile`) before the events are read
from the primary. ``reads="primary"`` reads the first reachable store only (the primary
when it answers): cheaper, and stale replicas are then repaired by ``sync``.

**Divergence** is per stream: the copies share a prefix (same event ids), then branch. The
resolver picks between the branch heads; the chosen branch is kept as is and the other
branch's events are listed in a ``@resolve`` event appended on top
(:mod:`tai_fsm.consistency.divergence`), so the audit log shows every transition. The
resolution is a function of the branches alone: whichever side resolves first, the result
is the same.

**Stale reads**: the store remembers the newest version of each record it wrote or returned
(the last ``seen_limit`` records) and the head of each stream; a read that could not reach
every store and comes back older raises ``StaleRead`` (``stale_reads="raise"``) or, for a
record, returns the version already seen (``stale_reads="repair"``), through
``EventualConsistency.check_read``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import NoReturn

from tai_fsm.consistency.antientropy import SyncReport, run_sync
from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.reconcile import event_at
from tai_fsm.consistency.recordrepair import reconcile_records
from tai_fsm.consistency.replicaset import UNREACHABLE, ReplicaSet
from tai_fsm.consistency.resolvers import MergeFunction, Resolver
from tai_fsm.consistency.tracking import EVENTS
from tai_fsm.errors import InvalidInput, StaleRead, TaiFsmError, shown
from tai_fsm.records import CleanupResult, Event, StateSnapshot, StoredState, StoreStats
from tai_fsm.retry import RetryPolicy
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, RawRecord, Store
from tai_fsm.stores.common import check_id, check_read, check_version
from tai_fsm.stores.ops import LOCKS, STATES, CommitResult
from tai_fsm.stores.planning import EventRow, Prepared
from tai_fsm.stores.recordcodec import decode_record, encode_record
from tai_fsm.stores.spans import EventSpan

__all__ = ["DEFAULT_KINDS", "ReplicatedStore", "SyncReport"]

log = logging.getLogger("tai_fsm.consistency")

#: Record kinds ``sync`` reconciles unless told otherwise (DESIGN.md §3).
DEFAULT_KINDS = (STATES, LOCKS, "inbox")


def _choice(value: object, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise InvalidInput(
            f"{name} must be one of {', '.join(map(repr, allowed))}, got {shown(value)}",
            field=name,
            value=value,
        )
    return str(value)


class ReplicatedStore(ReplicaSet, Store):
    """A Store over a ``primary`` and ``replicas`` (see the module docstring).

    ``resolver``: how diverged copies are settled — a :class:`Resolver` or a merge
    function, default ``LastWriteWinsResolver()``. ``reads``: ``"all"`` (read every
    reachable store, resolve, repair) or ``"primary"``. ``fallback_writes``: write to the
    first reachable replica while the primary is unreachable. ``stale_reads``: ``"raise"``
    or ``"repair"``; ``seen_limit``: how many records (and stream heads) are remembered for
    that check (0: none). ``primary_retry``: a ``RetryPolicy`` for calls to the primary
    before it counts as unreachable (default: one attempt). ``own_stores``: ``close()``
    closes the wrapped stores too (default True)."""

    def __init__(
        self,
        primary: Store,
        *replicas: Store,
        resolver: Resolver | MergeFunction | None = None,
        reads: str = "all",
        fallback_writes: bool = False,
        stale_reads: str = "raise",
        seen_limit: int = 1000,
        primary_retry: RetryPolicy | None = None,
        own_stores: bool = True,
    ) -> None:
        stores = [primary, *replicas]
        for position, store in enumerate(stores):
            if not isinstance(store, Store):
                raise InvalidInput(
                    f"ReplicatedStore needs Store instances; store {position} is "
                    f"{type(store).__name__} {shown(store)}",
                    field="stores",
                )
        if len({id(store) for store in stores}) != len(stores):
            raise InvalidInput("the same store object appears twice", field="stores")
        for name, flag in (("fallback_writes", fallback_writes), ("own_stores", own_stores)):
            if not isinstance(flag, bool):
                raise InvalidInput(f"{name} must be True or False", field=name, value=flag)
        if primary_retry is not None and not isinstance(primary_retry, RetryPolicy):
            raise InvalidInput("primary_retry must be a RetryPolicy", field="primary_retry")
        self.stale_reads = _choice(stale_reads, ("raise", "repair"), "stale_reads")
        super().__init__(
            stores,
            EventualConsistency(resolver, repair=self.stale_reads == "repair"),
            reads=_choice(reads, ("all", "primary"), "reads"),
            fallback_writes=fallback_writes,
            seen_limit=check_version(seen_limit, "seen_limit"),
            primary_retry=primary_retry,
        )
        self.own_stores = own_stores
        self.url = "replicated:" + self._names()
        limits = [s.max_commit_writes for s in stores if s.max_commit_writes is not None]
        self.max_commit_writes = min(limits) if limits else None
        self._closed = False

    def __repr__(self) -> str:
        inner = ", ".join(repr(m.store) for m in self.members)
        return f"ReplicatedStore({inner}, resolver={self.consistency.resolver!r})"

    @property
    def primary(self) -> Store:
        return self.members[0].store

    @property
    def replicas(self) -> list[Store]:
        return [m.store for m in self.members[1:]]

    @property
    def stale(self) -> dict[str, list[tuple[str, str, str]]]:
        """What each store may lack or hold differently, as far as this process knows:
        member name -> sorted ``(governor, kind, id)`` (kind ``"@events"`` for a stream).
        Cleared by read-repair of those keys and by ``sync``."""
        stale = self._tracker.stale
        return {m.name: sorted(keys) for m, keys in zip(self.members, stale, strict=True) if keys}

    async def close(self) -> None:
        """Close the wrapped stores (unless ``own_stores=False``). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.own_stores:
            results = await asyncio.gather(
                *(m.store.close() for m in self.members), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    # ------------------------------------------------------------------ records
    async def _read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        found = await self._agreed_records(governor, kind, record_ids)
        what = "state" if kind == STATES else f"{kind} record"
        return {  # the base class decodes and checks them, as for any backend
            rid: RawRecord(s.version, encode_record(s.snapshot, rid, s.version, what), s.token)
            for rid, s in found.items()
        }

    async def _agreed_records(
        self, governor: str, kind: str, ids: list[str]
    ) -> dict[str, StoredState]:
        answers = await self._ask(lambda s: s.batch_read_records(governor, ids, kind=kind))
        complete = self._complete(answers)
        if len(answers) == 1:
            agreed = answers[0][1]
        else:
            if kind == STATES:
                answers = await self._repair_streams_of(governor, ids, answers)
            members = [self.members[i] for i, _ in answers]
            agreed, repairs, failures = await reconcile_records(
                members, [found for _, found in answers], governor, kind, ids, self.consistency
            )
            for repair in repairs:
                log.info("read-repair: %s", repair)
            for record_id, error in failures:
                log.error("read-repair of %s/%s %r failed: %r", governor, kind, record_id, error)
            if complete and not failures:
                for record_id in ids:
                    self._tracker.clear((governor, kind, record_id))
        if answers[0][0] != 0:  # read without the primary: its tokens are meaningless ...
            agreed = {k: _untokened(v) for k, v in agreed.items()}
            if kind == STATES:  # ... and appends built on this read are guarded
                self._tracker.suspect.update((governor, record_id) for record_id in agreed)
        return {rid: self._checked_read(governor, kind, rid, s, complete)
                for rid, s in agreed.items()}

    async def _repair_streams_of(
        self, governor: str, ids: list[str], answers: list[tuple[int, dict[str, StoredState]]]
    ) -> list[tuple[int, dict[str, StoredState]]]:
        """State records that disagree may be the heads of stale or diverged streams:
        reconcile those streams first (the records are written with their events), then
        read the records again."""
        members = [self.members[i] for i, _ in answers]
        repaired = False
        for record_id in ids:
            if len({_fingerprint(found.get(record_id)) for _, found in answers}) == 1:
                continue
            heads = await asyncio.gather(
                *(m.store.stream_version(governor, record_id) for m in members)
            )
            if any(heads):
                await self._reconcile(governor, record_id, members)
                repaired = True
        if not repaired:
            return answers
        again = await asyncio.gather(*(m.store.batch_read_states(governor, ids) for m in members))
        return [(i, found) for (i, _), found in zip(answers, again, strict=True)]

    def _checked_read(
        self, governor: str, kind: str, record_id: str, stored: StoredState, complete: bool
    ) -> StoredState:
        """Monotonic reads: a read that missed a store is checked against the newest version
        seen here (``EventualConsistency.check_read``: ``StaleRead``, or the repaired
        version with ``stale_reads="repair"``)."""
        key = (governor, kind, record_id)
        seen = self._tracker.seen(key)
        if not complete and seen is not None:
            read = _at(stored.snapshot, stored.version)
            checked = self.consistency.check_read(seen, read)
            if checked is not read:
                stored = StoredState(snapshot=checked, version=checked.version)
        self._tracker.note_seen(key, stored.snapshot, stored.version)
        return stored

    async def list_records(self, governor: str, *, kind: str) -> AsyncIterator[str]:
        """Ids of the records of ``kind``, ascending: the union over the stores asked."""
        gov = check_id(governor, "governor")
        kind = check_id(kind, "record kind")
        answers = await self._ask(lambda s: _collect(s.list_records(gov, kind=kind)))
        for record_id in sorted({rid for _, ids in answers for rid in ids}):
            yield record_id

    async def _list_records(self, governor: str, kind: str, after: str, limit: int) -> list[str]:
        _not_used("_list_records")

    async def _list_governors(self) -> list[str]:
        answers = await self._ask(lambda s: s.list_governors())
        return sorted({g for _, governors in answers for g in governors})

    # ------------------------------------------------------------------ the commit
    async def _commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        return await self._replicated_commit(governor, prepared)

    # ------------------------------------------------------------------ event streams
    async def _source(self, governor: str, stream_id: str) -> tuple[Store, int]:
        """The member to read ``stream_id`` from — after reconciling the copies it can reach
        (``reads="all"``) — and the head. ``StaleRead`` when the read missed a member and
        is behind the head seen here."""
        answers = await self._ask(lambda s: s.stream_version(governor, stream_id))
        index, head = answers[0]
        if len(answers) > 1:
            head = await self._reconcile(
                governor, stream_id, [self.members[i] for i, _ in answers],
                [h for _, h in answers],
            )
            if len(answers) == len(self.members):
                self._tracker.clear((governor, EVENTS, stream_id))
        if index != 0:  # read without the primary: appends built on it are guarded
            self._tracker.suspect.add((governor, stream_id))
        seen = self._tracker.seen_head(governor, stream_id)
        if not self._complete(answers) and head < seen:
            raise StaleRead(
                f"stale read of stream {stream_id!r}: the stores reachable now hold up to "
                f"version {head}, but version {seen} was already seen here; read again when "
                "the others are reachable",
                record_id=stream_id,
                read_version=head,
                newer_version=seen,
            )
        self._tracker.note_head(governor, stream_id, head)
        return self.members[index].store, head

    async def read_events(
        self,
        governor: str,
        stream_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
        until: datetime | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> AsyncIterator[Event]:
        """As :meth:`Store.read_events`, from the reconciled copy (see module docstring)."""
        check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        store, _ = await self._source(governor, stream_id)
        async for event in store.read_events(
            governor, stream_id, after_version=after_version, up_to_version=up_to_version,
            until=until, batch_size=batch_size,
        ):
            yield event

    async def read_event_span(
        self,
        governor: str,
        stream_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
        until: datetime | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> EventSpan:
        """As :meth:`Store.read_event_span`, from the reconciled copy."""
        check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        store, _ = await self._source(governor, stream_id)
        return await store.read_event_span(
            governor, stream_id, after_version=after_version, up_to_version=up_to_version,
            until=until, batch_size=batch_size,
        )

    async def _stream_head(self, governor: str, stream_id: str) -> int:
        _, head = await self._source(governor, stream_id)
        return head

    async def _list_streams(self, governor: str) -> list[str]:
        answers = await self._ask(lambda s: s.list_streams(governor))
        return sorted({sid for _, streams in answers for sid in streams})

    async def _event_rows(
        self, governor: str, stream_id: str, after: int, upper: int | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        _not_used("_event_rows")

    # ------------------------------------------------------------------ snapshots
    async def _save_snapshot(
        self, governor: str, stream_id: str, version: int, raw: bytes, keep: int | None
    ) -> None:
        """Save on the primary (or, with ``fallback_writes``, the first reachable replica),
        then on the others — only where the copy holds the event the snapshot was taken
        at (its ``event_hash``): a snapshot never lands on a diverged branch."""
        snapshot = decode_record(raw, governor, stream_id, version, "snapshot")

        async def save(store: Store) -> None:
            await store.save_snapshot(governor, stream_id, snapshot, keep=keep)

        acting = 0
        try:
            await self._call(0, save)
        except UNREACHABLE:
            if not self.fallback_writes or len(self.members) == 1:
                raise
            acting = (await self._ask(save, every=False, start=1))[0][0]
        key = (governor, EVENTS, stream_id)
        for index in range(acting):
            self._tracker.mark(index, [key])
        anchor = snapshot.metadata.context.get("event_hash")
        for index in range(acting + 1, len(self.members)):
            member = self.members[index]
            try:
                if isinstance(anchor, str):
                    at = await event_at(member.store, governor, stream_id, version)
                    if at is not None and at.hash != anchor:
                        self._tracker.mark(index, [key])  # diverged there: sync decides
                        continue
                elif (governor, stream_id) in self._tracker.suspect:
                    continue
                await save(member.store)
            except TaiFsmError as exc:
                log.warning("snapshot of %s@%d not copied to %s: %r",
                            stream_id, version, member.name, exc)
                self._tracker.mark(index, [key])

    async def _load_snapshot(
        self, governor: str, stream_id: str, at_or_before: int | None
    ) -> tuple[int, bytes] | None:
        answers = await self._ask(
            lambda s: s.load_snapshot(governor, stream_id, at_or_before=at_or_before),
            every=False,
        )
        snapshot = answers[0][1]
        if snapshot is None:
            return None
        return snapshot.version, encode_record(snapshot, stream_id, snapshot.version, "snapshot")

    async def _snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        answers = await self._ask(lambda s: s.snapshot_versions(governor, stream_id),
                                  every=False)
        return answers[0][1]

    async def compact_stream(
        self, governor: str, stream_id: str, *, up_to_version: int
    ) -> CleanupResult:
        """Compact the primary's copy (its result is returned), then each replica's; a
        replica that cannot (unreachable, no covering snapshot yet) is left as is."""
        gov, stream = check_id(governor, "governor"), check_id(stream_id, "stream id")
        cut = check_version(up_to_version, "up_to_version", minimum=1)
        result = await self._call(0, lambda s: s.compact_stream(gov, stream, up_to_version=cut))
        for member in self.members[1:]:
            try:
                await member.store.compact_stream(gov, stream, up_to_version=cut)
            except TaiFsmError as exc:
                log.info("%s not compacted: %r", member.name, exc)
        return result

    async def _compact(
        self, governor: str, stream_id: str, cut: int, last: int, rewrite: EventRow | None
    ) -> CleanupResult:
        _not_used("_compact")

    # ------------------------------------------------------------------ statistics
    async def _stats(self, governor: str | None) -> StoreStats:
        """The first reachable member's statistics (the primary's when it answers)."""
        answers = await self._ask(lambda s: s.get_stats(governor), every=False)
        return answers[0][1]

    # ------------------------------------------------------------------ anti-entropy
    async def sync(self, governor: str, *, kinds: Sequence[str] = DEFAULT_KINDS) -> SyncReport:
        """Anti-entropy over ``governor``: every stream (copied where stale, resolved where
        diverged), the newest snapshot of each stream, and every record of ``kinds``
        (resolved and repaired). Returns what was done; a store that cannot be reached is
        listed in ``unreachable`` and caught up by a later ``sync``."""
        gov = check_id(governor, "governor")
        if isinstance(kinds, str):
            raise InvalidInput("kinds must be a sequence of record kinds", field="kinds")
        checked = [check_id(kind, "record kind") for kind in kinds]
        report = await run_sync(self.members, gov, checked, self.consistency)
        reached = [n for n, m in enumerate(self.members) if m.name in report.stores]
        failed = {(gov, f.kind, f.id) for f in report.failures}
        self._tracker.synced(gov, reached, failed, complete=not report.unreachable)
        return report


def _not_used(name: str) -> NoReturn:
    raise TaiFsmError(
        f"ReplicatedStore.{name} is not used: the public method that needs it reads the "
        "wrapped stores through their public API"
    )


def _untokened(stored: StoredState) -> StoredState:
    if stored.token is None:
        return stored
    return StoredState(snapshot=stored.snapshot, version=stored.version)


def _fingerprint(stored: StoredState | None) -> object:
    if stored is None:
        return None
    return (stored.version, stored.snapshot.model_dump_json())


def _at(snapshot: StateSnapshot, version: int) -> StateSnapshot:
    if snapshot.version == version:
        return snapshot
    return snapshot.model_copy(update={"version": version})


async def _collect(ids: AsyncIterator[str]) -> list[str]:
    return [record_id async for record_id in ids]
