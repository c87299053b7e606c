"""The stores behind a ``ReplicatedStore`` and its write path.

:class:`ReplicaSet` holds the members (``primary``, ``replica 1``, ...), calls them (the
primary with its retry policy; "unreachable" means ``StoreUnavailable`` or
``OperationTimeout``), and commits:

1. **guard** — an append to a *suspect* stream (this process wrote or read it while the
   primary was unreachable) first reconciles the stream's copies and checks that the append
   follows the event it was built on (its ``prev_hash``): if not, ``VersionConflict``, so
   the caller re-reads the resolved stream instead of chaining onto the other branch;
2. **acting commit** — ``primary.commit`` with the caller's operations; if the primary is
   unreachable and ``fallback_writes`` is on, the first reachable replica commits them
   (without tokens: they are the primary's);
3. **propagation** — each later member gets the commit's writes (appends, puts, deletes;
   not its assertions, which the acting store checked) with versions pinned to the acting
   store's result, so a member in step ends identical. Before an append, the member's event
   at the base version must be the one the first event follows (``prev_hash``; skipped when
   this process made that member's last commit to the stream): a propagated append never
   chains onto a diverged branch. A member that is behind or diverged is repaired at once
   (:mod:`tai_fsm.consistency.reconcile`); an unreachable one is marked stale. Propagation
   never fails the write: the acting store has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.reconcile import Member, event_at, reconcile_stream
from tai_fsm.consistency.recordrepair import reconcile_records
from tai_fsm.consistency.tracking import EVENTS, Key, Tracker, as_op, commit_keys
from tai_fsm.errors import (
    OperationTimeout,
    StateNotFound,
    StoreUnavailable,
    TaiFsmError,
    VersionConflict,
)
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import Append, CommitResult, Delete, Op, OpResult, Put
from tai_fsm.stores.planning import Prepared, PreparedAppend, PreparedDelete, PreparedPut

__all__ = ["UNREACHABLE", "ReplicaSet"]

log = logging.getLogger("tai_fsm.consistency")

T = TypeVar("T")

#: Errors that mean "this store cannot be reached now" (the others are the caller's).
UNREACHABLE = (StoreUnavailable, OperationTimeout)


class ReplicaSet:
    """Members, how to call them, and the write path (see the module docstring)."""

    def __init__(
        self,
        stores: Sequence[Store],
        consistency: EventualConsistency,
        *,
        reads: str,
        fallback_writes: bool,
        seen_limit: int,
        primary_retry: RetryPolicy | None,
    ) -> None:
        self.members = [Member(stores[0], "primary")] + [
            Member(store, f"replica {n}") for n, store in enumerate(stores[1:], start=1)
        ]
        self.consistency = consistency
        self.reads = reads
        self.fallback_writes = fallback_writes
        base = RetryPolicy(max_attempts=1) if primary_retry is None else primary_retry
        self._primary_policy = RetryPolicy(
            max_attempts=base.max_attempts, base=base.base, cap=base.cap,
            max_elapsed=base.max_elapsed, retry=lambda exc: isinstance(exc, UNREACHABLE),
        )
        self._tracker = Tracker(len(stores), seen_limit)

    def _names(self) -> str:
        return " ".join(m.store.url for m in self.members)

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
        first that answers (from member ``start`` on); ``(index, answer)`` of those that
        answered. Unreachable members are skipped; a replica's other errors are logged and
        skipped, the primary's raised; ``StoreUnavailable`` when nobody answers."""
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
                "no store of the replica set answered: "
                + ", ".join(f"{m.name} ({m.store.url})" for m in self.members)
                + " are unreachable"
            )
        return answered

    def _complete(self, answers: Sequence[tuple[int, object]]) -> bool:
        """Whether a read saw everything: every member answered (``reads="all"``), or the
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

    async def _reconcile(
        self, governor: str, stream_id: str, members: list[Member],
        heads: Sequence[int] | None = None,
    ) -> int:
        """Reconcile ``stream_id`` across ``members`` (``heads``: as just read); the agreed
        head."""
        outcome = await reconcile_stream(
            members, governor, stream_id, self.consistency, heads=heads
        )
        for copy in outcome.copies:
            log.info("read-repair: %s", copy)
        for resolution in outcome.resolutions:
            log.warning("resolved diverged stream: %s", resolution)
        for member in members:
            self._tracker.forget_head(self.members.index(member), governor, stream_id)
        return outcome.head

    # ------------------------------------------------------------------ the write path
    async def _replicated_commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        await self._guard(governor, prepared)
        acting, result = await self._commit_acting(governor, prepared)
        if any(isinstance(p, PreparedAppend | PreparedPut | PreparedDelete) for p in prepared):
            # members before the acting one were just found unreachable: marked, not retried
            for index in range(acting):
                self._tracker.mark(index, commit_keys(governor, prepared))
            await asyncio.gather(*(
                self._propagate(governor, acting, index, prepared, result)
                for index in range(acting + 1, len(self.members))
            ))
        self._tracker.wrote(governor, acting, prepared, result)
        if acting == 0:
            return result
        return CommitResult(  # a replica's tokens mean nothing to the primary
            [OpResult(r.version, None, r.already_applied) for r in result],
            already_applied=result.already_applied,
        )

    async def _commit_acting(
        self, governor: str, prepared: list[Prepared]
    ) -> tuple[int, CommitResult]:
        ops = [as_op(item, keep_tokens=True) for item in prepared]
        try:
            return 0, await self._call(0, lambda s: s.commit(governor, ops))
        except UNREACHABLE as exc:
            if not self.fallback_writes or len(self.members) == 1:
                raise
            unreachable: BaseException = exc
        bare = [as_op(item, keep_tokens=False) for item in prepared]
        for index in range(1, len(self.members)):
            try:
                result = await self.members[index].store.commit(governor, bare)
            except UNREACHABLE as exc:
                unreachable = exc
                continue
            log.warning("primary unreachable (%r): committed on %s instead",
                        unreachable, self.members[index].name)
            for key in commit_keys(governor, prepared):
                if key[1] == EVENTS:
                    self._tracker.suspect.add((governor, key[2]))
            return index, result
        raise StoreUnavailable(
            f"no store of the replica set accepted the commit: {self._names()} are unreachable"
        ) from unreachable

    async def _guard(self, governor: str, prepared: list[Prepared]) -> None:
        for item in prepared:
            if not isinstance(item, PreparedAppend) or (
                (governor, item.stream_id) not in self._tracker.suspect
            ):
                continue
            stream_id = item.stream_id

            async def stream_head(store: Store, stream_id: str = stream_id) -> int:
                return await store.stream_version(governor, stream_id)

            answers = await self._ask(stream_head, every=True)
            members = [self.members[i] for i, _ in answers]
            if len(members) > 1:
                await self._reconcile(governor, stream_id, members, [h for _, h in answers])
                if len(members) == len(self.members):
                    self._tracker.suspect.discard((governor, stream_id))
            prev_hash = item.events[0].prev_hash
            if item.expected is None or item.expected < 1 or prev_hash is None:
                continue
            acting = members[0].store
            stored = await event_at(acting, governor, stream_id, item.expected)
            if stored is not None and stored.hash != prev_hash:
                actual = await acting.stream_version(governor, stream_id)
                conflict = VersionConflict(stream_id, item.expected, actual)
                conflict.add_note(
                    f"version {item.expected} of {stream_id!r} is not the event this append "
                    "was built on (diverged copies were resolved); re-read and retry"
                )
                raise conflict

    async def _propagate(
        self, governor: str, acting: int, index: int, prepared: list[Prepared],
        result: CommitResult,
    ) -> None:
        member = self.members[index]
        keys = commit_keys(governor, prepared)
        if self._tracker.is_stale(index, keys):
            await self._repair_keys(governor, acting, index, keys)
            return
        ops: list[Op] = []
        for item, outcome in zip(prepared, result, strict=True):
            if isinstance(item, PreparedAppend):
                base = outcome.version - len(item.events)
                follows = item.events[0].prev_hash
                known = self._tracker.known_head(index, governor, item.stream_id)
                verified = follows is not None and known == (base, follows)
                if follows is not None and base >= 1 and not verified:
                    try:
                        stored = await event_at(member.store, governor, item.stream_id, base)
                    except UNREACHABLE:
                        self._tracker.mark(index, keys)
                        return
                    if stored is not None and stored.hash != follows:
                        await self._repair_keys(governor, acting, index, keys)
                        return
                    verified = stored is not None
                prior = item.prior if verified else None  # a delta only on a known base
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
            self._tracker.mark(index, keys)
            return
        except (VersionConflict, StateNotFound):
            await self._repair_keys(governor, acting, index, keys)
            return
        except TaiFsmError as exc:
            log.error("%s refused a propagated commit, marked stale: %r", member.name, exc)
            self._tracker.mark(index, keys)
            return
        self._tracker.committed(index, governor, prepared, result)

    async def _repair_keys(self, governor: str, acting: int, index: int, keys: list[Key]) -> None:
        """Bring member ``index``'s copies of ``keys`` in line with the acting member's; on
        failure, mark them stale for a later read or ``sync``."""
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
                self._tracker.mark(index, [key])
            else:
                self._tracker.clear(key, index)
