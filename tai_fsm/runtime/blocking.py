"""The blocking driver of the commit protocol: the runtime behind ``tai_fsm.sync.Runtime``.

The protocol (:mod:`tai_fsm.runtime.commit`) is sans-I/O: it yields steps. Here they are
performed on the **caller's thread** — an append is the store's call run to completion
right there (the store must complete without suspending: ``BlockingSQLiteStore``, which
owns its own SQLite connection, or the memory store), a backoff is ``time.sleep``. So
callbacks and post-commit hooks run on the thread that called ``trigger`` (Flask's and
Django's thread-locals work), and a commit costs no thread hop.

:class:`BlockingRuntime` is the async ``Runtime`` with these drivers swapped in: its
coroutine methods (``create``, ``get``, ``history``, ...) never suspend, and
:func:`complete` runs them to the end without an event loop — the same code, not a copy.
Differences that follow: snapshots are written right after the commit that reaches
``snapshot_every`` (there is no background), and an async post-commit hook is run on a
private event loop (it must not await triggers: under this runtime ``trigger`` returns
the ``Event`` itself).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator, Iterator
from typing import Any, TypeVar

from tai_fsm.definition.machine import Machine
from tai_fsm.errors import TaiFsmError
from tai_fsm.records import AppendResult, Event, StateSnapshot
from tai_fsm.runtime.commit import Committer, Fired, append_steps, perform_append
from tai_fsm.runtime.guards import head_event
from tai_fsm.runtime.host import Host
from tai_fsm.runtime.runtime import Runtime
from tai_fsm.runtime.steps import AppendStep, AwaitStep, ReadStep, SleepStep, Step, TriggerStep

__all__ = ["BlockingCommitter", "BlockingHost", "BlockingRuntime", "complete", "iterate"]

log = logging.getLogger("tai_fsm.runtime")

T = TypeVar("T")


def complete(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to its end on this thread, without an event loop. It must not
    suspend (every store call it makes must complete synchronously); if it does, it is
    closed and ``TaiFsmError`` says so."""
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as stop:
        value: T = stop.value
        return value
    close = getattr(steps, "close", None)
    if close is not None:
        close()
    raise TaiFsmError(
        "a blocking call waited for an event loop: its store does I/O through asyncio "
        "(use the async Runtime, or tai_fsm.sync's facade for such stores)"
    )


def iterate(source: AsyncIterator[T]) -> Iterator[T]:
    """An async iterator that never suspends, as a plain iterator (lazily)."""
    while True:
        try:
            yield complete(source.__anext__())
        except StopAsyncIteration:
            return


def drive(host: Host, steps: Generator[Step, Any, Any]) -> Any:
    """Run a protocol generator to its end, performing its steps on this thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        value = error = None
        try:
            value = _perform(host, step)
        except BaseException as exc:
            error = exc


def _perform(host: Host, step: Step) -> Any:
    if type(step) is AppendStep:
        return complete(perform_append(host.store, step))
    if type(step) is SleepStep:
        time.sleep(step.seconds)
        return None
    if type(step) is ReadStep:
        return complete(host.store.read_state(step.governor, step.state_id))
    if type(step) is AwaitStep:
        return asyncio.run(_awaited(step.awaitable))
    if type(step) is TriggerStep:
        item = step.item
        return item.instance.trigger(item.name, **item.kwargs)
    raise TypeError(f"unknown protocol step {step!r}")


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class BlockingHost(Host):
    """``Host`` without background work: what it is given to run, it runs now."""

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        try:
            complete(work)
        except Exception as exc:  # no caller to raise to (a snapshot logs its own)
            log.error("background work failed: %r", exc)


class BlockingCommitter(Committer):
    """Drives the protocol on the caller's thread; ``trigger`` returns the ``Event``."""

    def new_future(self) -> concurrent.futures.Future[Event]:
        return concurrent.futures.Future()

    def run_trigger(
        self,
        instance: Machine,
        name: object,
        actor: object,
        reason: object,
        context: object,
        payload: object,
    ) -> Event:
        args, core = self._begin(instance, (name, actor, reason, context, payload))
        host = self.host
        fired: Fired
        with core.get_thread_lock():
            try:
                fired, _ = drive(host, self.commit_steps(instance, core, args))
            except Exception as exc:  # nothing committed
                if self.refused(instance, args.name, exc):
                    return complete(head_event(host.store, instance, core.version))
                raise
        if self._hookless(fired):
            return fired.event
        event: Event = drive(host, self.after_steps(instance, core, fired, args.name))
        return event

    async def append(
        self, governor: str, event: Event, record: StateSnapshot, expected: int,
        token: str | None,
    ) -> AppendResult:
        step = AppendStep(governor, event, record, expected, token)
        result: AppendResult = drive(self.host, append_steps(self.host, step))
        return result


class BlockingRuntime(Runtime):
    """The async ``Runtime`` with the blocking drivers: its coroutines never suspend when
    its store completes synchronously; run them with :func:`complete` (``tai_fsm.sync``
    does)."""

    _host_class = BlockingHost
    _committer_class = BlockingCommitter
