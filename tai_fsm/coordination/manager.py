"""``TransactionManager``: transactions, distributed locks and fenced commits on one store.

Everything here commits through ``Store.commit`` (there is no second write path) and every
retry goes through :func:`tai_fsm.retry.retry_async`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar, overload

from tai_fsm.coordination.locks import Locks, check_seconds
from tai_fsm.coordination.transactions import Outcome, Transaction, run_transaction
from tai_fsm.errors import InvalidInput, TaiFsmError
from tai_fsm.records import DistributedLock, StateSnapshot, utc_now
from tai_fsm.retry import RetryPolicy
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store
from tai_fsm.stores.common import check_id
from tai_fsm.stores.ops import CommitResult

__all__ = ["DEFAULT_TRANSACTION_POLICY", "TransactionManager", "Writes"]

T = TypeVar("T")

#: Retries of a transaction: 10 runs of ``fn``, backoff from the error's class
#: (``VersionConflict``: full jitter over 5 ms doubling, capped at 0.5 s).
DEFAULT_TRANSACTION_POLICY = RetryPolicy(max_attempts=10)

#: What ``read_write_transaction`` writes: state id -> new snapshot (``None`` deletes), or a
#: function (sync or async) of the states read (id -> (snapshot, version); absent ids left
#: out) returning that mapping.
Writes = (
    Mapping[str, StateSnapshot | None]
    | Callable[
        [dict[str, tuple[StateSnapshot, int]]],
        Mapping[str, StateSnapshot | None] | Awaitable[Mapping[str, StateSnapshot | None]],
    ]
)


class TransactionManager:
    """Transactions on ``store`` and locks in ``governor``.

    ``policy`` governs transaction retries (attempts, ``cap`` = the longest backoff,
    ``max_elapsed``; what is retried: transient errors, ``VersionConflict`` above all).
    ``clock`` returns the current aware UTC time used for lease expiry (default: the wall
    clock). ``poll_base`` / ``poll_cap`` set the backoff of a waiting ``acquire_lock``."""

    def __init__(
        self,
        store: Store,
        governor: str = "default",
        policy: RetryPolicy = DEFAULT_TRANSACTION_POLICY,
        *,
        clock: Callable[[], datetime] = utc_now,
        poll_base: float = 0.01,
        poll_cap: float = 0.25,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidInput(
                f"TransactionManager needs a Store, got {type(store).__name__}", field="store"
            )
        if not isinstance(policy, RetryPolicy):
            raise InvalidInput(
                f"policy must be a tai_fsm.retry.RetryPolicy, got {type(policy).__name__}",
                field="policy",
            )
        if not callable(clock):
            raise InvalidInput("clock must be a function returning an aware datetime")
        self.store = store
        self.governor = check_id(governor, "governor")
        self.policy = policy
        self.clock = clock
        base = check_seconds(poll_base, "poll_base", positive=True)
        cap = check_seconds(poll_cap, "poll_cap", positive=True)
        self._locks = Locks(store, self.governor, clock, base, max(base, cap))

    def __repr__(self) -> str:
        return f"TransactionManager({self.store.url or type(self.store).__name__}, " \
            f"governor={self.governor!r})"

    # ------------------------------------------------------------------ transactions
    @overload
    async def execute_transaction(
        self,
        governor: str,
        fn: Callable[[Transaction], Awaitable[T]],
        *,
        fence: DistributedLock | Sequence[DistributedLock] | None = None,
        policy: RetryPolicy | None = None,
    ) -> T: ...

    @overload
    async def execute_transaction(
        self,
        governor: str,
        fn: Callable[[Transaction], T],
        *,
        fence: DistributedLock | Sequence[DistributedLock] | None = None,
        policy: RetryPolicy | None = None,
    ) -> T: ...

    async def execute_transaction(
        self,
        governor: str,
        fn: Callable[[Transaction], Any],
        *,
        fence: DistributedLock | Sequence[DistributedLock] | None = None,
        policy: RetryPolicy | None = None,
    ) -> Any:
        """Run ``fn(tx)`` (sync or async) and commit what it wrote atomically, only if
        nothing it read changed meanwhile; on a conflict run it again (see
        :mod:`tai_fsm.coordination.transactions`). Returns what ``fn`` returned.

        ``fence``: locks (of this manager's governor) the commit must still hold — it fails
        with ``LockNotHeld`` (not retried) once a newer fencing token was issued.
        ``TransactionFailed`` after the last attempt; an exception ``fn`` raises otherwise
        propagates and nothing is written."""
        outcome = await self._run(governor, fn, fence, policy)
        return outcome.value

    async def read_write_transaction(
        self,
        governor: str,
        read_ids: Iterable[str],
        writes: Writes,
        *,
        fence: DistributedLock | Sequence[DistributedLock] | None = None,
        policy: RetryPolicy | None = None,
    ) -> dict[str, int]:
        """Read ``read_ids`` and write ``writes`` in one transaction; returns the version
        each written record has afterwards (0 = deleted).

        ``writes`` is a mapping ``state id -> StateSnapshot | None`` (None deletes) or a
        function of the states read (``id -> (snapshot, version)``, absent ids left out;
        sync or async) returning one. The commit requires every id of ``read_ids`` to be
        unchanged since it was read (absent ones still absent); a record both read and
        written is written at the version read; on a conflict everything is read again and
        the function called again. Records written without being read are written blind."""
        if isinstance(read_ids, str | bytes):
            raise InvalidInput(
                "read_ids must be a list of state ids, not a single string", field="read_ids"
            )
        ids = list(read_ids)

        async def fn(tx: Transaction) -> None:
            states = await tx.batch_get_states(ids)
            planned: Any = writes(states) if callable(writes) else writes
            if inspect.isawaitable(planned):
                planned = await planned
            if not isinstance(planned, Mapping):
                raise InvalidInput(
                    "read_write_transaction writes must be a mapping of state id -> "
                    f"StateSnapshot (or None to delete), got {type(planned).__name__}",
                    field="writes",
                )
            for state_id, snapshot in planned.items():
                if snapshot is None:
                    tx.delete_state(state_id)
                else:
                    tx.save_state(state_id, snapshot)

        return (await self._run(governor, fn, fence, policy)).versions

    async def _run(
        self,
        governor: str,
        fn: Callable[[Transaction], Any],
        fence: DistributedLock | Sequence[DistributedLock] | None,
        policy: RetryPolicy | None,
    ) -> Outcome:
        gov = check_id(governor, "governor")
        fences = self._fences(fence, gov)
        chosen = self.policy if policy is None else policy
        if not isinstance(chosen, RetryPolicy):
            raise InvalidInput(
                f"policy must be a tai_fsm.retry.RetryPolicy, got {type(chosen).__name__}",
                field="policy",
            )
        return await run_transaction(self.store, gov, fn, chosen, fences=fences)

    def _fences(
        self, fence: DistributedLock | Sequence[DistributedLock] | None, governor: str
    ) -> list[DistributedLock]:
        if fence is None:
            return []
        locks = [fence] if isinstance(fence, DistributedLock) else list(fence)
        for lock in locks:
            if not isinstance(lock, DistributedLock):
                raise InvalidInput(
                    f"fence must be a DistributedLock or a list of them, got "
                    f"{type(lock).__name__}",
                    field="fence",
                )
        if locks and governor != self.governor:
            raise InvalidInput(
                f"a fenced transaction must run in the locks' governor {self.governor!r} "
                f"(got {governor!r}): a commit checks fences in its own governor",
                field="fence",
            )
        return locks

    # ------------------------------------------------------------------ locks
    async def acquire_lock(
        self, resource: str, client_id: str, ttl: float = 30.0, wait: float = 5.0
    ) -> DistributedLock:
        """Take the lease on ``resource`` for ``ttl`` seconds; wait up to ``wait`` seconds
        (polling with backoff) while another client holds it, then ``OperationTimeout``
        (``wait=0``: try once). A waiter whose wait would close a cycle of waiters, and
        is the youngest of them, gets ``DeadlockDetected`` at once. The returned lock's
        ``fencing_token`` is larger than every token issued for ``resource`` before."""
        return await self._locks.acquire(resource, client_id, ttl, wait)

    async def release_lock(self, resource: str, lock_token: str) -> None:
        """Free the lease; ``LockNotHeld`` if ``lock_token`` does not hold it now (wrong
        token, expired, or taken over)."""
        await self._locks.release(resource, lock_token)

    async def renew(self, lock: DistributedLock, ttl: float | None = None) -> DistributedLock:
        """Extend the lease to now + ``ttl`` (default: its last TTL); returns the lock with
        the new ``expires_at`` (same tokens). ``LockNotHeld`` if it is no longer held."""
        return await self._locks.renew(lock, ttl)

    async def holder(self, resource: str) -> DistributedLock | None:
        """Who holds ``resource`` now (None when free or expired)."""
        return await self._locks.holder(resource)

    @asynccontextmanager
    async def lock(
        self, resource: str, client_id: str, ttl: float = 30.0, wait: float = 5.0
    ) -> AsyncIterator[DistributedLock]:
        """``async with tm.lock(resource, client_id) as lock:`` — acquire, and release on
        the way out, even on error. If the block finished normally but the lease was lost
        meanwhile (expired or taken over), the release raises ``LockNotHeld``: the block may
        not have been exclusive. After an error the block's own exception propagates."""
        held = await self.acquire_lock(resource, client_id, ttl, wait)
        try:
            yield held
        except BaseException as exc:
            try:
                await self._locks.release(held.resource, held.lock_token)
            except TaiFsmError as release_error:
                exc.add_note(f"releasing lock {held.resource!r} failed too: {release_error}")
            raise
        await self._locks.release(held.resource, held.lock_token)

    async def fenced_commit(self, lock: DistributedLock, commit: Sequence[ops.Op]) -> CommitResult:
        """``store.commit`` of ``commit`` plus ``Fence(lock.resource, lock.fencing_token)``
        in this manager's governor: all or nothing, and nothing once a newer fencing token
        was issued for the resource (``LockNotHeld``)."""
        if not isinstance(lock, DistributedLock):
            raise InvalidInput(
                f"fenced_commit needs a DistributedLock, got {type(lock).__name__}", field="lock"
            )
        if isinstance(commit, ops.Append | ops.Put | ops.Delete | ops.Expect | ops.Fence):
            commit = [commit]
        fenced = [*commit, ops.Fence(lock.resource, lock.fencing_token)]
        return await self.store.commit(self.governor, fenced)
