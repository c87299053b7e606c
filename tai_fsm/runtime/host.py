"""``Host``: what the commit protocol needs from the ``Runtime`` that hosts it — the store,
the node id, the retry budgets, event ids, background work and snapshot scheduling.

It sits below both :mod:`tai_fsm.runtime.commit` (which commits through it) and
:mod:`tai_fsm.runtime.runtime` (which owns one), so neither imports the other's internals and
the public ``Runtime`` carries none of the commit machinery.

Snapshots are written in the background every ``snapshot_every`` events of a machine; a
failed snapshot is logged and retried on a later commit or at ``flush``, and recovery never
depends on one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from tai_fsm.definition.spec import MachineSpec
from tai_fsm.errors import InvalidInput, TaiFsmError, VersionConflict
from tai_fsm.records import StateSnapshot
from tai_fsm.retry import RetryPolicy
from tai_fsm.runtime.events import EventIds
from tai_fsm.stores.base import Store

__all__ = ["DEFAULT_CONFLICT_RETRIES", "DEFAULT_TRANSIENT_RETRIES", "Host"]

log = logging.getLogger("tai_fsm.runtime")

#: Conflict retries of one trigger (each after catching up, with full-jitter backoff from
#: 5 ms doubling to a 0.5 s cap, about 3 s in all): measured with
#: benchmarks/contention_bench.py, 32 processes x 50 sends on one SQLite instance leave
#: 0-0.3% failing over several runs (5 retries: 43-53%, 12: 0.7-0.9%).
DEFAULT_CONFLICT_RETRIES = 16
#: Retries of one append after a transient store error (backoff from 0.1 s to a 10 s cap).
DEFAULT_TRANSIENT_RETRIES = 5


def _retries(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1000:
        raise InvalidInput(f"{what} must be an integer from 0 to 1000, got {value!r}",
                           field=what)
    return value


def _is_conflict(error: TaiFsmError) -> bool:
    return isinstance(error, VersionConflict) and error.is_transient()


def _is_transient_not_conflict(error: TaiFsmError) -> bool:
    return error.is_transient() and not isinstance(error, VersionConflict)


class Host:
    """The runtime side of every ``Committer`` (see module docstring)."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        *,
        max_conflict_retries: int = DEFAULT_CONFLICT_RETRIES,
        max_transient_retries: int = DEFAULT_TRANSIENT_RETRIES,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.max_conflict_retries = _retries(max_conflict_retries, "max_conflict_retries")
        self.max_transient_retries = _retries(max_transient_retries, "max_transient_retries")
        #: Conflicts: caught up and re-run, with the conflict's own full-jitter backoff.
        self.conflict_policy = RetryPolicy(
            max_attempts=self.max_conflict_retries + 1, retry=_is_conflict
        )
        #: One append or read after a transient store error (never a conflict: that needs
        #: a catch-up first).
        self.transient_policy = RetryPolicy(
            max_attempts=self.max_transient_retries + 1, retry=_is_transient_not_conflict
        )
        self.new_event_id = EventIds()
        self.closed = False
        self._background: set[asyncio.Task[Any]] = set()
        self._failed_snapshots: dict[tuple[str, str], tuple[StateSnapshot, int]] = {}

    # ------------------------------------------------------------------ background work
    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background; ``flush()`` waits for it and its failure is
        logged (it has no caller to raise to)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background work failed: %r", task.exception())

    async def flush(self) -> None:
        """Wait for background work; retry failed snapshots once."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for (governor, stream_id), (snapshot, keep) in list(self._failed_snapshots.items()):
            await self._write_snapshot(governor, stream_id, snapshot, keep)

    # ------------------------------------------------------------------ snapshots
    def after_commit(self, governor: str, record: StateSnapshot, spec: MachineSpec) -> None:
        """Schedule a snapshot when the new version is a multiple of ``snapshot_every``, and
        retry snapshots that failed earlier."""
        if record.version % spec.snapshot_every == 0:
            self.spawn(self._write_snapshot(governor, record.id, record, spec.snapshot_retention))
        if self._failed_snapshots:
            for (gov, stream_id), (snapshot, keep) in list(self._failed_snapshots.items()):
                self._failed_snapshots.pop((gov, stream_id), None)
                self.spawn(self._write_snapshot(gov, stream_id, snapshot, keep))

    async def _write_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, keep: int
    ) -> None:
        try:
            await self.store.save_snapshot(governor, stream_id, snapshot, keep=keep)
        except Exception as exc:
            log.error("snapshot of %s/%s v%d failed (will retry): %r",
                      governor, stream_id, snapshot.version, exc)
            current = self._failed_snapshots.get((governor, stream_id))
            if current is None or current[0].version <= snapshot.version:
                self._failed_snapshots[(governor, stream_id)] = (snapshot, keep)
        else:
            current = self._failed_snapshots.get((governor, stream_id))
            if current is not None and current[0].version <= snapshot.version:
                self._failed_snapshots.pop((governor, stream_id), None)
