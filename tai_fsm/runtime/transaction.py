"""Triggers on several instances committed atomically: all their events or none.

    async with rt.transaction() as tx:
        await tx.trigger(alice, "debit", payload={"amount": 5})
        await tx.trigger(bob, "credit", payload={"amount": 5})

Each ``tx.trigger`` runs the transition in memory at once (conditions are checked on the
instance's current state, ``TransitionNotAllowed`` is raised there) and builds its event; the
block's end commits every event, with every instance's new state record, in ONE
``Store.commit`` (one ``Append`` per instance at the version it had when the transaction
first touched it). Only then do post-commit hooks run, instance by instance, in trigger
order. If anything fails — an exception in the block, a failed condition, a
``VersionConflict`` because another writer moved one of the instances — nothing is written
and every instance is put back exactly as it was.

Guarantees and limits:

* the instances must live in one governor (a commit is per governor);
* an instance may be triggered several times in one transaction (each event builds on the
  previous one);
* while a transaction holds an instance, other triggers of that instance object in this
  process wait for it (its lock); a transaction that cannot get an instance's lock within
  ``lock_timeout`` seconds raises ``OperationTimeout`` (two transactions taking the same
  instances in opposite orders cannot wait for each other forever);
* ``async with`` cannot re-run its block, so a conflict is raised to the caller;
  :meth:`Runtime.run_transaction` re-runs a function on conflict, with backoff, after
  catching every instance up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from tai_fsm.definition.machine import Machine
from tai_fsm.errors import (
    InvalidInput,
    OperationTimeout,
    PostCommitHookFailed,
    TaiFsmError,
    TransactionFailed,
    VersionConflict,
)
from tai_fsm.records import Event
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.runtime import arguments
from tai_fsm.runtime.core import InstanceCore, cancel, core_of, restore
from tai_fsm.stores import ops

if TYPE_CHECKING:
    from tai_fsm.runtime.async_commit import AsyncCommitter
    from tai_fsm.runtime.commit import Fired
    from tai_fsm.runtime.host import Host

__all__ = ["RuntimeTransaction", "run_transaction"]

T = TypeVar("T")


@dataclass(slots=True)
class _Held:
    """One instance inside a transaction: its committed state when the transaction first
    touched it (to restore, and to commit against) and what was fired on it since."""

    instance: Machine
    core: InstanceCore
    committer: AsyncCommitter
    saved: tuple[Any, ...]  # the core's committed state at the start (InstanceCore.saved)
    version: int  # the version committed at the start
    token: str | None
    fired: list[Fired] = field(default_factory=list)


class RuntimeTransaction:
    """See the module docstring. Obtain one from ``Runtime.transaction()``."""

    def __init__(self, host: Host, *, lock_timeout: float = 10.0) -> None:
        self._host = host
        self._lock_timeout = lock_timeout
        self._held: dict[int, _Held] = {}
        self._order: list[tuple[_Held, Fired]] = []
        self._governor: str | None = None
        self._done = False

    async def __aenter__(self) -> Self:
        return self

    async def trigger(
        self,
        instance: Machine,
        name: str,
        *,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Event:
        """Fire ``name`` on ``instance`` now, to be committed with the others when the
        transaction ends. Returns the event it will commit (durable only once the block
        has exited without error)."""
        if self._done:
            raise TaiFsmError("this transaction has ended; start a new one")
        args = arguments.trigger_args(name, actor, reason, context, payload)
        if not isinstance(instance, Machine):
            raise InvalidInput(
                f"tx.trigger needs a live instance, got {type(instance).__name__}",
                field="instance",
            )
        core = core_of(instance)
        committer = _committer_of(instance)
        if self._governor is None:
            self._governor = instance.governor
        elif instance.governor != self._governor:
            raise InvalidInput(
                f"a transaction commits in one governor ({self._governor!r}); "
                f"{instance.id!r} is in {instance.governor!r}",
                field="instance",
            )
        held = self._held.get(id(instance))
        if held is None:
            lock = core.get_lock()
            try:
                await asyncio.wait_for(lock.acquire(), self._lock_timeout)
            except TimeoutError:
                raise OperationTimeout(
                    f"{instance.id!r} stayed busy for {self._lock_timeout:g}s (another "
                    "transaction or trigger holds it)"
                ) from None
            held = _Held(instance, core, committer, core.saved(), core.version, core.token)
            self._held[id(instance)] = held
        fired = committer._fire(instance, core, args)
        held.fired.append(fired)
        self._order.append((held, fired))
        # advance the instance's working state so a second trigger chains on this one
        core.load_committed(fired.record, fired.record_bytes, fired.event.version, None)
        instance.version = fired.event.version
        return fired.event

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done = True
        try:
            if exc is not None or not self._order:
                self._rollback()
                return
            try:
                await self._commit()
            except BaseException:
                self._rollback()
                raise
            self._settle()
        finally:
            for held in self._held.values():
                held.core.get_lock().release()
        await self._post_commit()

    async def _commit(self) -> None:
        assert self._governor is not None
        batch: list[ops.Op] = []
        for held in self._held.values():
            events = [f.event for f in held.fired]
            batch.append(ops.Append(
                held.instance.id, events, held.version, state=held.fired[-1].record,
                token=held.token, prior=events[0].from_state,
            ))
        appends = len(batch)
        for held in self._held.values():  # e.g. durable effects recorded with their events
            batch.extend(op for f in held.fired for op in f.extra)
        store = self._host.store
        governor = self._governor

        async def attempt() -> Any:
            return await store.commit(governor, batch)

        result = await retry_async(attempt, self._host.transient_policy)
        for held, outcome in zip(self._held.values(), result.results[:appends], strict=True):
            held.core.token = outcome.token

    def _rollback(self) -> None:
        for held in self._held.values():
            held.core.reset(held.saved)
            restore(held.instance, held.core)
            for fired in held.fired:
                cancel(fired.queued)

    def _settle(self) -> None:
        for held in self._held.values():
            last = held.fired[-1]
            self._host.after_commit(
                held.instance.governor, last.record, held.committer.compiled.spec
            )

    async def _post_commit(self) -> None:
        if not self._order or any(h.core.version == h.version for h in self._held.values()):
            return
        errors: list[BaseException] = []
        for held, fired in self._order:
            committer = held.committer
            errors.extend(await committer.run_post_commit(
                held.instance, held.core, fired.outcome, fired.event, fired.queued
            ))
        for held, fired in self._order:
            await held.committer.drain(fired.queued)
        if errors:
            raise PostCommitHookFailed(
                f"the transaction is committed, but {len(errors)} post-commit hook(s) "
                "failed: " + "; ".join(f"{type(e).__name__}: {e}" for e in errors),
                event=self._order[-1][1].event,
                errors=errors,
            )


def _committer_of(instance: Machine) -> AsyncCommitter:
    from tai_fsm.runtime.async_commit import AsyncCommitter

    binding = getattr(instance, "_binding", None)
    if not isinstance(binding, AsyncCommitter):
        raise InvalidInput(
            f"{instance!r} is not a live instance of an async Runtime (a read-only view, "
            "or an instance of the blocking runtime)",
            field="instance",
        )
    return binding


async def run_transaction(
    host: Host,
    fn: Callable[[RuntimeTransaction], Awaitable[T]],
    policy: RetryPolicy | None = None,
) -> T:
    """Run ``fn(tx)`` as a transaction; on ``VersionConflict`` catch every instance it
    touched up from the store and run ``fn`` again after a full-jitter backoff
    (``policy``, default the runtime's conflict policy); ``TransactionFailed`` when the
    attempts run out."""
    touched: list[Machine] = []

    async def attempt() -> T:
        tx = RuntimeTransaction(host)
        try:
            async with tx:
                value = await fn(tx)
        except VersionConflict:
            touched[:] = [held.instance for held in tx._held.values()]
            for instance in touched:
                await _committer_of(instance).catch_up(instance, core_of(instance))
            raise
        return value

    try:
        return await retry_async(attempt, policy or host.conflict_policy)
    except VersionConflict as exc:
        raise TransactionFailed(
            f"the transaction conflicted {exc.attempts} times: {exc}",
            attempts=exc.attempts,
            cause=exc,
        ) from exc
