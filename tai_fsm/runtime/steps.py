"""The I/O requests of the sans-I/O commit protocol (:mod:`tai_fsm.runtime.commit`).

The protocol is written once, as generators that *yield* one of these steps whenever they
need the outside world and get the answer (or the error) sent back in. Firing, building
and deciding happen inside the generators and are pure; a driver only performs steps:

* :class:`~tai_fsm.runtime.commit.AsyncCommitter` awaits them on the event loop (the
  async ``Runtime``);
* :class:`~tai_fsm.runtime.blocking.BlockingCommitter` performs them on the caller's
  thread (``tai_fsm.sync``: direct SQLite, the memory store).

So both runtimes share one protocol — retries, rollback, conflict catch-up, post-commit
hooks and queued triggers — and differ only in how an append, a read or a wait is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import Any

from tai_fsm.records import Event, StateSnapshot
from tai_fsm.runtime.core import Queued
from tai_fsm.stores.ops import Op

__all__ = ["AppendStep", "AwaitStep", "ReadStep", "SleepStep", "Step", "Steps", "TriggerStep"]


@dataclass(slots=True)
class AppendStep:
    """Append ``event`` with its state ``record`` at ``expected`` (one ``Store.commit``
    with ``extra`` operations, if any, in the same commit); answer: ``AppendResult``.
    A driver that lets its caller go while the append is in flight, and then sees it land,
    sets ``cancelled``."""

    governor: str
    event: Event
    record: StateSnapshot
    expected: int
    token: str | None
    extra: tuple[Op, ...] = ()
    cancelled: bool = False


@dataclass(slots=True)
class ReadStep:
    """Read the state record ``state_id``; answer: ``StoredState``."""

    governor: str
    state_id: str


@dataclass(slots=True)
class SleepStep:
    """Wait ``seconds`` (a retry's backoff); answer: None."""

    seconds: float


@dataclass(slots=True)
class AwaitStep:
    """Wait for what an async post-commit hook returned; answer: its result."""

    awaitable: Awaitable[Any]


@dataclass(slots=True)
class TriggerStep:
    """Commit a trigger a callback or hook queued; answer: its ``Event``."""

    item: Queued


Step = AppendStep | ReadStep | SleepStep | AwaitStep | TriggerStep
#: A protocol run: yields steps, receives their answers, returns ``T``.
Steps = Generator[Step, Any, Any]
