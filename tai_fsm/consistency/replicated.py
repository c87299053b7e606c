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
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import NoReturn, TypeVar

from tai_fsm.consistency.antientropy import EVENTS, SyncReport, run_sync
from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.reconcile import (
    Member,
    event_at,
    reconcile_records,
    reconcile_stream,
)
from tai_fsm.consistency.resolvers import MergeFunction, Resolver
from tai_fsm.errors import (
    InvalidInput,
    OperationTimeout,
    StaleRead,
    StateNotFound,
    StoreUnavailable,
    TaiFsmError,
    VersionConflict,
    shown,
)
from tai_fsm.records import CleanupResult, Event, StateSnapshot, StoredState, StoreStats
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, EventSpan, RawRecord, Store
from tai_fsm.stores.common import check_id, check_read, check_version
from tai_fsm.stores.ops import (
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
from tai_fsm.stores.planning import (
    EventRow,
    Prepared,
    PreparedAppend,
    PreparedDelete,
    PreparedExpect,
    PreparedPut,
)
from tai_fsm.stores.recordcodec import decode_record, encode_record

__all__ = ["DEFAULT_KINDS", "ReplicatedStore", "SyncReport"]

log = logging.getLogger("tai_fsm.consistency")

T = TypeVar("T")

#: Record kinds ``sync`` reconciles unless told otherwise (DESIGN.md §3).
DEFAULT_KINDS = (STATES, "locks", "inbox")
#: Errors that mean "this store cannot be reached now" (the others are the caller's).
UNREACHABLE = (StoreUnavailable, OperationTimeout)

_Key = tuple[str, str, str]  # (governor, kind or EVENTS, id)


def _choice(value: object, allowed: tuple[str, ...], name: str) -> str:
    if value not in allowed:
        raise InvalidInput(
            f"{name} must be one of {', '.join(map(repr, allowed))}, got {shown(value)}",
            field=name,
            value=value,
        )
    return str(value)


class ReplicatedStore(Store):
    """A Store over a ``primary`` and ``replicas`` (see the module docstring).

    ``resolver``: how diverged copies are settled — a :class:`Resolver` or a merge
    function, default ``LastWriteWinsResolver()``. ``reads``: ``"all"`` (read every
    reachable store, resolve, repair) or ``"primary"``. ``fallback_writes``: write to the
    first reachable replica while the primary is unreachable. ``stale_reads``: ``"raise"``
    or ``"repair"`` (see module docstring). ``primary_retry``: a ``RetryPolicy`` for calls to
    the primary before it counts as unreachable (default: one attempt). ``own_stores``:
    ``close()`` closes the wrapped stores too (default True)."""

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
        self.reads = _choice(reads, ("all", "primary"), "reads")
        self.stale_reads = _choice(stale_reads, ("raise", "repair"), "stale_reads")
        self.seen_limit = check_version(seen_limit, "seen_limit")
        self.consistency = EventualConsistency(resolver, repair=self.stale_reads == "repair")
        self.fallback_writes = fallback_writes
        self.own_stores = own_stores
        self.members = [Member(primary, "primary")] + [
            Member(store, f"replica {n}") for n, store in enumerate(replicas, start=1)
        ]
        self.url = "replicated:" + " ".join(store.url for store in stores)
        limits = [s.max_commit_writes for s in stores if s.max_commit_writes is not None]
        self.max_commit_writes = min(limits) if limits else None
        base = RetryPolicy(max_attempts=1) if primary_retry is None else primary_retry
        self._primary_policy = RetryPolicy(
            max_attempts=base.max_attempts, base=base.base, cap=base.cap,
            max_elapsed=base.max_elapsed, retry=lambda exc: isinstance(exc, UNREACHABLE),
        )
        self._stale: list[set[_Key]] = [set() for _ in stores]
        self._suspect: set[tuple[str, str]] = set()
        self._heads: OrderedDict[tuple[int, str, str], tuple[int, str | None]] = OrderedDict()
        self._seen: OrderedDict[_Key, tuple[StateSnapshot, int]] = OrderedDict()
        self._seen_heads: OrderedDict[tuple[str, str], int] = OrderedDict()
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
        Cleared by ``sync`` and by read-repair of those keys."""
        return {
            m.name: sorted(keys) for m, keys in zip(self.members, self._stale, strict=True)
            if keys
        }

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

    # ------------------------------------------------------------------ calling stores
    async def _call(self, index: int, fn: Callable[[Store], Awaitable[T]]) -> T:
        store = self.members[index].store
        if index == 0:
            return await retry_async(lambda: fn(store), self._primary_policy)
        return await fn(store)

    async def _ask(
        self, fn: Callable[[Store], Awaitable[T]], *, every: bool | None = None, start: int = 0
    ) -> list[tuple[int, T]]:
        """``fn(store)`` on every member (``every``, default: ``reads == "all"``) or on the
        first that answers; ``(index, answer)`` of those that answered. Unreachable stores
        are skipped; a replica's other errors are logged and skipped, the primary's raised;
        ``StoreUnavailable`` when nobody answers. ``start``: skip the members before it."""
        if every is None:
            every = self.reads == "all"
        answered: list[tuple[int, T]] = []
        if every:
            outcomes = await asyncio.gather(
                *(self._call(i, fn) for i in range(len(self.members))), return_exceptions=True
            )
            for index, outcome in enumerate(outcomes):
                if isinstance(outcome, BaseException):
                    self._skip(index, outcome)
                else:
                    answered.append((index, outcome))
        else:
            for index in range(start, len(self.members)):
                try:
                    answered.append((index, await self._call(index, fn)))
                    break
                except Exception as exc:
                    self._skip(index, exc)
        if not answered:
            raise StoreUnavailable(
                f"no store of {self.url} answered: "
                + ", ".join(m.name for m in self.members) + " are unreachable"
            )
        return answered

    def _complete(self, answers: Sequence[tuple[int, object]]) -> bool:
        """Whether a read saw everything: every store answered (``reads="all"``), or the
        primary did (``reads="primary"``)."""
        if self.reads == "primary":
            return answers[0][0] == 0
        return len(answers) == len(self.members)

    def _skip(self, index: int, error: BaseException) -> None:
        if isinstance(error, UNREACHABLE):
            return
        if index == 0 or not isinstance(error, TaiFsmError):
            raise error
        log.error("%s (%s) failed a read, skipped: %r",
                  self.members[index].name, self.members[index].store.url, error)

    # ------------------------------------------------------------------ records
    async def _read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        found = await self._agreed_records(governor, kind, record_ids)
        what = "state" if kind == STATES else f"{kind} record"
        return {
            rid: RawRecord(s.version, encode_record(s.snapshot, rid, s.version, what), s.token)
            for rid, s in found.items()
        }

    async def _agreed_records(
        self, governor: str, kind: str, ids: list[str]
    ) -> dict[str, StoredState]:
        answers = await self._ask(lambda s: s.batch_read_records(governor, ids, kind=kind))
        complete = self._complete(answers)
        if len(answers) == 1:
            index, found = answers[0]
            agreed = found if index == 0 else {k: _untokened(v) for k, v in found.items()}
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
            if answers[0][0] != 0:
                agreed = {k: _untokened(v) for k, v in agreed.items()}
            if complete and not failures:
                for record_id in ids:
                    self._clear((governor, kind, record_id))
        return {rid: self._checked_read(governor, kind, rid, s, complete)
                for rid, s in agreed.items()}

    async def _repair_streams_of(
        self, governor: str, ids: list[str], answers: list[tuple[int, dict[str, StoredState]]]
    ) -> list[tuple[int, dict[str, StoredState]]]:
        """State records that disagree may be the heads of diverged or stale streams:
        reconcile those streams first (they write the records with their events), then
        read the records again."""
        disagree = [
            rid for rid in ids
            if len({_fingerprint(found.get(rid)) for _, found in answers}) > 1
        ]
        repaired = False
        for record_id in disagree:
            members = [self.members[i] for i, _ in answers]
            heads = await asyncio.gather(
                *(m.store.stream_version(governor, record_id) for m in members)
            )
            if any(heads):
                await self._reconcile(governor, record_id, members)
                repaired = True
        if not repaired:
            return answers
        again = await asyncio.gather(
            *(self.members[i].store.batch_read_states(governor, ids) for i, _ in answers)
        )
        return [(i, found) for (i, _), found in zip(answers, again, strict=True)]

    def _checked_read(
        self, governor: str, kind: str, record_id: str, stored: StoredState, complete: bool
    ) -> StoredState:
        """Monotonic reads: a read that missed a store is checked against the newest version
        this store has seen (``EventualConsistency.check_read``)."""
        key = (governor, kind, record_id)
        seen = self._seen.get(key)
        if not complete and seen is not None:
            read = _at(stored.snapshot, stored.version)
            checked = self.consistency.check_read(_at(*seen), read)
            if checked is not read:  # repaired (stale_reads="repair")
                stored = StoredState(snapshot=checked, version=checked.version)
        self._note_seen(key, stored.snapshot, stored.version)
        return stored

    def _note_seen(self, key: _Key, snapshot: StateSnapshot, version: int) -> None:
        if not self.seen_limit:
            return
        seen = self._seen
        seen[key] = (snapshot, version)
        seen.move_to_end(key)
        while len(seen) > self.seen_limit:
            seen.popitem(last=False)

    async def list_records(self, governor: str, *, kind: str) -> AsyncIterator[str]:
        """Ids of the records of ``kind``, ascending: the union over the stores asked."""
        gov = check_id(governor, "governor")
        kind = check_id(kind, "record kind")
        answers = await self._ask(
            lambda s: _collect(s.list_records(gov, kind=kind))
        )
        for record_id in sorted({rid for _, ids in answers for rid in ids}):
            yield record_id

    async def _list_records(self, governor: str, kind: str, after: str, limit: int) -> list[str]:
        return _not_used("_list_records")

    async def _list_governors(self) -> list[str]:
        answers = await self._ask(lambda s: s.list_governors())
        return sorted({g for _, governors in answers for g in governors})

    # ------------------------------------------------------------------ the commit
    async def _commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        await self._guard(governor, prepared)
        acting, result = await self._commit_acting(governor, prepared)
        if any(isinstance(p, PreparedAppend | PreparedPut | PreparedDelete) for p in prepared):
            # members before the acting one were just found unreachable: marked, not retried
            for index in range(acting):
                self._mark(index, _keys(governor, prepared))
            await asyncio.gather(*(
                self._propagate(governor, acting, index, prepared, result)
                for index in range(acting + 1, len(self.members))
            ))
        self._remember(governor, acting, prepared, result)
        if acting == 0:
            return result
        return CommitResult(
            [OpResult(r.version, None, r.already_applied) for r in result],
            already_applied=result.already_applied,
        )

    async def _commit_acting(
        self, governor: str, prepared: list[Prepared]
    ) -> tuple[int, CommitResult]:
        """Commit on the primary; when it is unreachable and ``fallback_writes`` is on, on
        the first reachable replica (tokens dropped: they are the primary's)."""
        ops = [_op(item, keep_tokens=True) for item in prepared]
        try:
            return 0, await self._call(0, lambda s: s.commit(governor, ops))
        except UNREACHABLE as exc:
            if not self.fallback_writes or len(self.members) == 1:
                raise
            unreachable: BaseException = exc
        bare = [_op(item, keep_tokens=False) for item in prepared]
        for index in range(1, len(self.members)):
            try:
                result = await self.members[index].store.commit(governor, bare)
            except UNREACHABLE as exc:
                unreachable = exc
                continue
            log.warning("primary unreachable (%r): committed on %s instead",
                        unreachable, self.members[index].name)
            for key in _keys(governor, prepared):
                if key[1] == EVENTS:
                    self._suspect.add((governor, key[2]))
            return index, result
        raise StoreUnavailable(
            f"no store of {self.url} accepted the commit: all unreachable"
        ) from unreachable

    async def _guard(self, governor: str, prepared: list[Prepared]) -> None:
        """Before appending to a stream whose copies may have diverged (this process wrote
        or read it while the primary was unreachable): reconcile its copies, then make sure
        the append follows the event it was built on (its ``prev_hash``) — else
        ``VersionConflict``: the caller re-reads the resolved stream and retries."""
        for item in prepared:
            if not isinstance(item, PreparedAppend) or (governor, item.stream_id) not in (
                self._suspect
            ):
                continue
            stream_id = item.stream_id

            async def stream_head(store: Store, stream_id: str = stream_id) -> int:
                return await store.stream_version(governor, stream_id)

            answers = await self._ask(stream_head, every=True)
            members = [self.members[i] for i, _ in answers]
            if len(members) > 1:
                await self._reconcile(governor, item.stream_id, members)
                if len(members) == len(self.members):
                    self._suspect.discard((governor, item.stream_id))
            prev_hash = item.events[0].prev_hash
            if item.expected is None or item.expected < 1 or prev_hash is None:
                continue
            acting = members[0].store
            stored = await event_at(acting, governor, item.stream_id, item.expected)
            if stored is not None and stored.hash != prev_hash:
                actual = await acting.stream_version(governor, item.stream_id)
                conflict = VersionConflict(item.stream_id, item.expected, actual)
                conflict.add_note(
                    f"version {item.expected} of {item.stream_id!r} is not the event this "
                    "append was built on (diverged copies were resolved); re-read and retry"
                )
                raise conflict

    async def _propagate(
        self, governor: str, acting: int, index: int, prepared: list[Prepared],
        result: CommitResult,
    ) -> None:
        """Apply the commit's writes to member ``index``; never raises (see module)."""
        member = self.members[index]
        keys = _keys(governor, prepared)
        if any(key in self._stale[index] for key in keys):
            await self._repair_keys(governor, acting, index, keys)
            return
        ops: list[Op] = []
        for item, outcome in zip(prepared, result, strict=True):
            if isinstance(item, PreparedAppend):
                base = outcome.version - len(item.events)
                known = self._heads.get((index, governor, item.stream_id))
                first = item.events[0].prev_hash
                verified = known is not None and known == (base, first) and first is not None
                if first is not None and base >= 1 and not verified:
                    try:
                        stored = await event_at(member.store, governor, item.stream_id, base)
                    except UNREACHABLE:
                        self._mark(index, keys)
                        return
                    if stored is not None and stored.hash != first:
                        await self._repair_keys(governor, acting, index, keys)
                        return
                    verified = stored is not None
                prior = item.prior if verified else None
                ops.append(Append(item.stream_id, item.events, base, item.state, None, prior))
            elif isinstance(item, PreparedPut):
                ops.append(Put(item.record_id, item.snapshot, outcome.version - 1, None,
                               item.kind))
            elif isinstance(item, PreparedDelete):
                ops.append(Delete(item.record_id, item.expected, None, item.kind))
        try:
            await member.store.commit(governor, ops)
        except UNREACHABLE as exc:
            log.warning("%s unreachable, marked stale: %r", member.name, exc)
            self._mark(index, keys)
            return
        except (VersionConflict, StateNotFound):
            await self._repair_keys(governor, acting, index, keys)
            return
        except TaiFsmError as exc:
            log.error("%s refused a propagated commit, marked stale: %r", member.name, exc)
            self._mark(index, keys)
            return
        self._remember_heads(index, governor, prepared, result)

    async def _repair_keys(
        self, governor: str, acting: int, index: int, keys: list[_Key]
    ) -> None:
        """Bring member ``index``'s copies of ``keys`` in line with the acting store's (and
        each other's); on failure, mark them stale for a later read or ``sync``."""
        members = [self.members[acting], self.members[index]]
        for key in keys:
            _, kind, record_id = key
            try:
                if kind == EVENTS:
                    await self._reconcile(governor, record_id, members)
                else:
                    found = await asyncio.gather(*(
                        m.store.batch_read_records(governor, [record_id], kind=kind)
                        for m in members
                    ))
                    _, _, failures = await reconcile_records(
                        members, found, governor, kind, [record_id], self.consistency
                    )
                    if failures:
                        raise failures[0][1]
            except TaiFsmError as exc:
                log.warning("repair of %s on %s failed, marked stale: %r",
                            key, self.members[index].name, exc)
                self._mark(index, [key])
            else:
                self._stale[index].discard(key)

    async def _reconcile(self, governor: str, stream_id: str, members: list[Member]) -> int:
        outcome = await reconcile_stream(members, governor, stream_id, self.consistency)
        for copy in outcome.copies:
            log.info("read-repair: %s", copy)
        for resolution in outcome.resolutions:
            log.warning("resolved diverged stream: %s", resolution)
        for member in members:
            self._heads.pop((self.members.index(member), governor, stream_id), None)
        return outcome.head

    def _mark(self, index: int, keys: Sequence[_Key]) -> None:
        self._stale[index].update(keys)

    def _clear(self, key: _Key) -> None:
        for keys in self._stale:
            keys.discard(key)

    def _remember(
        self, governor: str, acting: int, prepared: list[Prepared], result: CommitResult
    ) -> None:
        self._remember_heads(acting, governor, prepared, result)
        for item, outcome in zip(prepared, result, strict=True):
            if isinstance(item, PreparedAppend):
                self._note_head(governor, item.stream_id, outcome.version)
                if item.state is not None:
                    self._note_seen((governor, STATES, item.stream_id), item.state,
                                    outcome.version)
            elif isinstance(item, PreparedPut):
                self._note_seen((governor, item.kind, item.record_id), item.snapshot,
                                outcome.version)
            elif isinstance(item, PreparedDelete):
                self._seen.pop((governor, item.kind, item.record_id), None)

    def _remember_heads(
        self, index: int, governor: str, prepared: list[Prepared], result: CommitResult
    ) -> None:
        for item, outcome in zip(prepared, result, strict=True):
            if isinstance(item, PreparedAppend):
                key = (index, governor, item.stream_id)
                self._heads[key] = (outcome.version, item.events[-1].hash)
                self._heads.move_to_end(key)
        while len(self._heads) > 10 * max(self.seen_limit, 100):
            self._heads.popitem(last=False)

    def _note_head(self, governor: str, stream_id: str, head: int) -> None:
        if not self.seen_limit:
            return
        key = (governor, stream_id)
        self._seen_heads[key] = max(head, self._seen_heads.get(key, 0))
        self._seen_heads.move_to_end(key)
        while len(self._seen_heads) > self.seen_limit:
            self._seen_heads.popitem(last=False)

    # ------------------------------------------------------------------ event streams
    async def _source(self, governor: str, stream_id: str) -> tuple[Store, int]:
        """The store to read ``stream_id`` from, after reconciling the copies (reads="all"),
        and its head. A read that missed a store and is behind the head this store has
        seen raises ``StaleRead``."""
        answers = await self._ask(lambda s: s.stream_version(governor, stream_id))
        index, head = answers[0]
        if len(answers) > 1:
            members = [self.members[i] for i, _ in answers]
            head = await self._reconcile(governor, stream_id, members)
            if len(answers) == len(self.members):
                self._clear((governor, EVENTS, stream_id))
        complete = self._complete(answers)
        seen = self._seen_heads.get((governor, stream_id), 0)
        if not complete and head < seen:
            raise StaleRead(
                f"stale read of stream {stream_id!r}: the stores reachable now hold up to "
                f"version {head}, but version {seen} was already seen; retry when "
                f"{', '.join(m.name for m in self.members)} are reachable",
                record_id=stream_id,
                read_version=head,
                newer_version=seen,
            )
        self._note_head(governor, stream_id, head)
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
        return _not_used("_event_rows")

    # ------------------------------------------------------------------ snapshots
    async def _save_snapshot(
        self, governor: str, stream_id: str, version: int, raw: bytes, keep: int | None
    ) -> None:
        snapshot = decode_record(raw, governor, stream_id, version, "snapshot")

        async def save(store: Store) -> None:
            await store.save_snapshot(governor, stream_id, snapshot, keep=keep)

        acting = 0
        try:
            await self._call(0, save)
        except UNREACHABLE:
            if not self.fallback_writes or len(self.members) == 1:
                raise
            answers = await self._ask(save, every=False, start=1)
            acting = answers[0][0]
        key = (governor, EVENTS, stream_id)
        for index in range(acting):
            self._mark(index, [key])
        anchor = snapshot.metadata.context.get("event_hash")
        for index in range(acting + 1, len(self.members)):
            member = self.members[index]
            try:
                if isinstance(anchor, str):
                    at = await event_at(member.store, governor, stream_id, version)
                    if at is not None and at.hash != anchor:
                        self._mark(index, [key])  # that copy has diverged: sync decides
                        continue
                elif (governor, stream_id) in self._suspect:
                    continue
                await save(member.store)
            except TaiFsmError as exc:
                log.warning("snapshot of %s@%d not copied to %s: %r",
                            stream_id, version, member.name, exc)
                self._mark(index, [key])

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
        raw = encode_record(snapshot, stream_id, snapshot.version, "snapshot")
        return snapshot.version, raw

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
        return _not_used("_compact")

    # ------------------------------------------------------------------ statistics
    async def _stats(self, governor: str | None) -> StoreStats:
        answers = await self._ask(lambda s: s.get_stats(governor), every=False)
        return answers[0][1]

    # ------------------------------------------------------------------ anti-entropy
    async def sync(
        self, governor: str, *, kinds: Sequence[str] = DEFAULT_KINDS
    ) -> SyncReport:
        """Anti-entropy over ``governor``: every stream (copied where stale, resolved where
        diverged), the newest snapshot of each stream, and every record of ``kinds``
        (resolved and repaired). Returns what was done; a store that cannot be reached is
        listed in ``unreachable`` and caught up by a later ``sync``."""
        gov = check_id(governor, "governor")
        if isinstance(kinds, str):
            raise InvalidInput("kinds must be a sequence of record kinds", field="kinds")
        checked = [check_id(kind, "record kind") for kind in kinds]
        report = await run_sync(self.members, gov, checked, self.consistency)
        reached = {name for name in report.stores}
        for index, member in enumerate(self.members):
            if member.name in reached:
                failed = {(gov, f.kind, f.id) for f in report.failures}
                self._stale[index] = {
                    k for k in self._stale[index] if k[0] != gov or k in failed
                }
        if not report.unreachable:
            self._suspect = {s for s in self._suspect if s[0] != gov}
            self._heads.clear()
        return report


# ---------------------------------------------------------------------- helpers
def _not_used(name: str) -> NoReturn:
    raise TaiFsmError(
        f"ReplicatedStore.{name} is not used: the public method that needs it is overridden "
        "to read the wrapped stores through their public API"
    )


def _untokened(stored: StoredState) -> StoredState:
    return stored if stored.token is None else StoredState(
        snapshot=stored.snapshot, version=stored.version
    )


def _fingerprint(stored: StoredState | None) -> object:
    if stored is None:
        return None
    return (stored.version, stored.snapshot.model_dump_json())


def _at(snapshot: StateSnapshot, version: int) -> StateSnapshot:
    return snapshot if snapshot.version == version else snapshot.model_copy(
        update={"version": version}
    )


async def _collect(ids: AsyncIterator[str]) -> list[str]:
    return [rid async for rid in ids]


def _op(item: Prepared, *, keep_tokens: bool) -> Op:
    """The operation ``item`` was prepared from (checked; tokens kept or dropped)."""
    token = getattr(item, "token", None) if keep_tokens else None
    if isinstance(item, PreparedAppend):
        return Append(item.stream_id, item.events, item.expected, item.state, token, item.prior)
    if isinstance(item, PreparedPut):
        return Put(item.record_id, item.snapshot, item.expected, token, item.kind)
    if isinstance(item, PreparedDelete):
        return Delete(item.record_id, item.expected, token, item.kind)
    if isinstance(item, PreparedExpect):
        return Expect(item.record_id, item.version, token, item.kind)
    return Fence(item.resource, item.fencing_token)


def _keys(governor: str, prepared: list[Prepared]) -> list[_Key]:
    """The keys a commit writes: streams (with their state records) and records."""
    keys: list[_Key] = []
    for item in prepared:
        if isinstance(item, PreparedAppend):
            keys.append((governor, EVENTS, item.stream_id))
            if item.state is not None:
                keys.append((governor, STATES, item.stream_id))
        elif isinstance(item, PreparedPut | PreparedDelete):
            keys.append((governor, item.kind, item.record_id))
    return keys
