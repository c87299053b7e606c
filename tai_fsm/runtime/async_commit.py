"""The async driver of the commit protocol (:mod:`tai_fsm.runtime.commit`): performs its
steps on the event loop for the async ``Runtime``.

An append goes to the store as a shielded task, so a caller cancelled while its append is
in flight does not cancel the append: if it lands, the instance adopts it and the
post-commit hooks run in the background. A store whose calls complete without suspending
(``Store.completes_synchronously``: the memory store) is awaited directly — a call that
never suspends cannot be interrupted, so it needs no task and no shield.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any

from tai_fsm.definition.machine import Machine
from tai_fsm.engine.adapter import FireOutcome
from tai_fsm.records import AppendResult, Event, StateSnapshot
from tai_fsm.runtime.commit import Committer, Fired, append_steps, drain_steps, perform_append
from tai_fsm.runtime.core import InstanceCore, Queued
from tai_fsm.runtime.extras import CommitExtras
from tai_fsm.runtime.guards import head_event
from tai_fsm.runtime.host import Host
from tai_fsm.runtime.steps import AppendStep, AwaitStep, ReadStep, SleepStep, Step, TriggerStep

__all__ = ["AsyncCommitter", "append"]


async def append(
    host: Host,
    governor: str,
    event: Event,
    record: StateSnapshot,
    expected_version: int,
    token: str | None,
) -> AppendResult:
    """Append ``event`` with its state ``record`` at ``expected_version`` on the event loop
    (the async driver over :meth:`Committer.append_steps`: transient errors retried with the
    same event id, so a first attempt that did land is recognised, never duplicated)."""
    step = AppendStep(governor, event, record, expected_version, token)
    result: AppendResult = await drive_steps(host, append_steps(host, step))
    return result



class AsyncCommitter(Committer):
    """Drives the protocol on the event loop (the async ``Runtime``)."""

    def new_future(self) -> asyncio.Future[Event]:
        return asyncio.get_running_loop().create_future()

    def run_trigger(
        self,
        instance: Machine,
        name: object,
        actor: object,
        reason: object,
        context: object,
        payload: object,
    ) -> Awaitable[Event]:
        return self._trigger(instance, (name, actor, reason, context, payload))

    async def commit_trigger(
        self,
        instance: Machine,
        name: str,
        *,
        extras: CommitExtras,
        actor: str | None = None,
        reason: str | None = None,
        context: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Event:
        """``instance.trigger(...)`` whose commit also carries ``extras``
        (:mod:`tai_fsm.runtime.extras`): for hosts such as the worker, never for callbacks."""
        return await self._trigger(instance, (name, actor, reason, context, payload), extras)

    async def _trigger(
        self, instance: Machine, raw: tuple[object, ...], extras: CommitExtras | None = None
    ) -> Event:
        args, core = self._begin(instance, raw)
        host = self.host
        fired: Fired
        cancelled: bool
        async with core.get_lock():
            try:
                fired, cancelled = await drive_steps(
                    host, self.commit_steps(instance, core, args, extras)
                )
            except Exception as exc:  # nothing committed
                if self.refused(instance, args.name, exc):
                    return await head_event(host.store, instance, core.version)
                raise
        if cancelled:
            # The caller was cancelled while the append was in flight and the event landed:
            # the instance reflects it, and its post-commit hooks still run (in background).
            host.spawn(drive_steps(host, self.after_steps(instance, core, fired, args.name)))
            raise asyncio.CancelledError
        if self._hookless(fired):
            return fired.event
        return await self._after(host, instance, core, fired, args.name)

    async def _after(
        self, host: Host, instance: Machine, core: InstanceCore, fired: Fired, name: str
    ) -> Event:
        event: Event = await drive_steps(host, self.after_steps(instance, core, fired, name))
        return event

    async def append(
        self, governor: str, event: Event, record: StateSnapshot, expected: int,
        token: str | None,
    ) -> AppendResult:
        return await append(self.host, governor, event, record, expected, token)

    # the protocol's pieces, awaited (``Runtime.transaction`` composes them)
    async def run_post_commit(
        self,
        instance: Machine,
        core: InstanceCore,
        outcome: FireOutcome,
        event: Event,
        queued: list[Queued],
    ) -> list[BaseException]:
        """Run ``outcome``'s post-commit hooks; the errors they raised."""
        errors: list[BaseException] = await drive_steps(
            self.host, self.hook_steps(instance, core, outcome, event, queued)
        )
        return errors

    async def drain(self, queued: list[Queued]) -> None:
        """Commit the queued triggers, in order, each as its own event."""
        await drive_steps(self.host, drain_steps(queued))

    async def catch_up(self, instance: Machine, core: InstanceCore) -> None:
        """Reload ``instance`` from its stored state record."""
        await drive_steps(self.host, self.catch_up_steps(instance, core))


async def drive_steps(host: Host, steps: Generator[Step, Any, Any]) -> Any:
    """Run a protocol generator to its end, performing its steps on the event loop."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            value = await _perform(host, step)
        except BaseException as exc:
            error = exc


async def _perform(host: Host, step: Step) -> Any:
    if type(step) is AppendStep:
        if getattr(type(host.store), "completes_synchronously", False):
            # nothing to interrupt: the call cannot suspend, so it cannot be cancelled
            return await perform_append(host.store, step)
        return await _append_shielded(host, step)
    if type(step) is SleepStep:
        await asyncio.sleep(step.seconds)
        return None
    if type(step) is ReadStep:
        return await host.store.read_state(step.governor, step.state_id)
    if type(step) is AwaitStep:
        return await step.awaitable
    if type(step) is TriggerStep:
        item = step.item
        return await item.instance.trigger(item.name, **item.kwargs)
    raise TypeError(f"unknown protocol step {step!r}")


async def _append_shielded(host: Host, step: AppendStep) -> AppendResult:
    """Append; a caller cancelled meanwhile waits for the append in flight (it may land),
    then gets ``step.cancelled`` set (landed) or ``CancelledError`` (did not).

    The store's coroutine is stepped here rather than wrapped in a task: each future it
    yields (its I/O) is waited for with ``asyncio.shield``, so a cancellation reaches only
    this wait, never the store's call; the call then runs to its end. That is what a task
    plus ``shield`` would do, without the task and its extra event-loop step."""
    calls = perform_append(host.store, step).__await__()
    cancelled = False
    while True:
        try:
            waiting = calls.send(None)
        except StopIteration as stop:
            step.cancelled = cancelled
            result: AppendResult = stop.value
            return result
        except BaseException as exc:
            if cancelled:
                raise asyncio.CancelledError from exc
            raise
        if waiting is None:  # a bare yield: give the loop one turn
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                cancelled = True
            continue
        waiting._asyncio_future_blocking = False
        while not waiting.done():
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                cancelled = True  # finish the in-flight append, then give up
            except BaseException:
                pass  # the store's call sees the outcome when it resumes
