"""The embedded default store: one SQLite file (stdlib ``sqlite3``), WAL mode.

``SQLiteStore(path, synchronous="FULL", busy_timeout=5.0)`` opens (or creates) the file,
switches it to WAL and checks its schema (:mod:`tai_fsm.stores.sqlite_schema`) — a few
milliseconds of blocking I/O in the constructor, so a bad path or a file from a newer tai-fsm
fails at once. After that every call runs on one dedicated worker thread that owns the
connection (:mod:`tai_fsm.stores.sqlite_worker`), so the event loop never blocks on disk;
calls run in submission order. Writes that queue up while the worker is busy share one
transaction and one fsync (group commit), each in its own savepoint, so concurrent
instances commit far faster than one fsync each; no call returns before its write is
committed. A caller cancelled while its write is queued or running may still see that write
land: retry it (``append_events`` recognises its own event ids).

Durability: ``synchronous="FULL"`` (default) makes every commit durable on return (WAL is
fsynced at each commit); ``"NORMAL"`` is ~3x faster but a power loss may drop the last commits
(never corrupts); ``"EXTRA"`` also syncs the directory.

Concurrency: every write is one ``BEGIN IMMEDIATE`` transaction that re-checks versions
inside it, so several processes (or several stores in one process) may share a file. A writer
waits up to ``busy_timeout`` seconds for the write lock, then gets ``StoreUnavailable``
(transient). A row that is not a valid record (a damaged file, a hand edit) raises
``IntegrityError`` naming governor, id and version.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from tai_fsm.errors import InvalidInput, StoreUnavailable, TaiFsmError
from tai_fsm.records import (
    AppendResult,
    CleanupResult,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
)
from tai_fsm.stores import sqlite_ops as ops
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, EventSpan, Store
from tai_fsm.stores.common import (
    check_batch_size,
    check_events,
    check_expected_version,
    check_id,
    check_ids,
    check_keep,
    check_read,
    check_snapshot,
    check_version,
    encode_snapshot,
)
from tai_fsm.stores.sqlite_schema import check_synchronous, connect
from tai_fsm.stores.sqlite_worker import READ, STOP, WRITE, Job, serve

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_MAX_I64 = 2**63 - 1
_MAX_BUSY_TIMEOUT = 86_400.0  # SQLite takes milliseconds as a C int


class SQLiteStore(Store):
    """The Store contract on one SQLite file.

    ``path``: the database file (parent folders are created). ``synchronous``: ``"NORMAL"``,
    ``"FULL"`` (default) or ``"EXTRA"``. ``busy_timeout``: seconds a write waits for another
    connection's write lock before ``StoreUnavailable``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        self.synchronous = check_synchronous(synchronous)
        if (
            isinstance(busy_timeout, bool)
            or not isinstance(busy_timeout, int | float)
            or not 0 <= busy_timeout <= _MAX_BUSY_TIMEOUT
        ):
            raise InvalidInput(
                f"busy_timeout must be seconds in [0, {_MAX_BUSY_TIMEOUT:g}], got {busy_timeout!r}",
                field="busy_timeout",
            )
        self.busy_timeout = float(busy_timeout)
        self.url = f"sqlite:///{self.path}"
        conn = connect(self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout)
        self._jobs: queue.SimpleQueue[Job | Any] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(
            target=serve,
            args=(conn, self._jobs, self.path, self.busy_timeout),
            name=f"tai-fsm-sqlite:{os.path.basename(self.path)}",
            daemon=True,
        )
        self._thread.start()
        # A store dropped without close() still stops its thread and closes the file.
        self._finalizer = weakref.finalize(self, self._jobs.put, STOP)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T], kind: int = READ) -> T:
        """Run ``fn(conn)`` on the worker: as is (``READ``) or as a transaction body
        (``WRITE``, possibly group-committed with other queued writes)."""
        if self._closed:
            raise TaiFsmError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((kind, fn, future, loop))
        return await future

    async def close(self) -> None:
        """Finish queued calls, close the connection and stop the worker thread.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((READ, lambda conn: None, done, loop))
        await done
        self._finalizer()  # queues STOP; the thread closes the connection and ends
        await asyncio.to_thread(self._thread.join)

    async def pragmas(self) -> dict[str, Any]:
        """The connection's effective settings: ``journal_mode``, ``synchronous`` (name),
        ``busy_timeout`` (ms) and ``schema_version``."""
        return await self._run(ops.pragmas)

    # ------------------------------------------------------------------ state records
    async def read_state(self, governor: str, state_id: str) -> StoredState:
        check_id(governor, "governor")
        check_id(state_id, "state id")
        return await self._run(partial(ops.read_state, governor, state_id))

    async def batch_read_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        check_id(governor, "governor")
        ids = check_ids(state_ids, "state id")
        if not ids:
            return {}
        return await self._run(partial(ops.batch_read_states, governor, ids))

    async def write_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        *,
        expected_version: int | None,
    ) -> int:
        check_id(governor, "governor")
        check_id(state_id, "state id")
        check_snapshot(snapshot)
        expected = check_expected_version(expected_version)
        raw = (
            None
            if expected is None
            else encode_snapshot(snapshot, expected + 1, f"state {state_id!r}")
        )
        return await self._run(
            partial(ops.write_state, governor, state_id, snapshot, expected, raw), WRITE
        )

    async def delete_state(
        self, governor: str, state_id: str, expected_version: int | None = None
    ) -> None:
        check_id(governor, "governor")
        check_id(state_id, "state id")
        expected = check_expected_version(expected_version)
        await self._run(partial(ops.delete_state, governor, state_id, expected), WRITE)

    async def list_states(self, governor: str) -> AsyncIterator[str]:
        check_id(governor, "governor")
        after = ""
        while True:
            page = await self._run(partial(ops.list_states, governor, after, DEFAULT_BATCH_SIZE))
            for state_id in page:
                yield state_id
            if len(page) < DEFAULT_BATCH_SIZE:
                return
            after = page[-1]

    async def list_governors(self) -> list[str]:
        return await self._run(ops.list_governors)

    # ------------------------------------------------------------------ event streams
    async def append_events(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: StateSnapshot | None = None,
        token: str | None = None,
    ) -> AppendResult:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        expected = check_expected_version(expected_version)
        checked = check_events(stream_id, events, expected)
        if state is not None:
            check_snapshot(state, "state")
        encoded = None
        if expected is not None:  # encode here, so the worker holds the write lock briefly
            encoded = (
                ops.event_rows(governor, stream_id, checked, expected),
                None
                if state is None
                else encode_snapshot(state, expected + len(checked), f"state {stream_id!r}"),
            )
        return await self._run(
            partial(ops.append_events, governor, stream_id, checked, expected, state, encoded),
            WRITE,
        )

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
        bounds = check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        position, size = bounds.after, bounds.size
        upper = _MAX_I64 if bounds.upper is None else bounds.upper
        cutoff = _MAX_I64 if bounds.cutoff is None else bounds.cutoff
        while position < upper:
            page = await self._run(
                partial(ops.read_events, governor, stream_id, position, upper, cutoff, size)
            )
            for event in page:
                yield event
            if len(page) < size:
                return
            position = page[-1].version

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
        bounds = check_read(governor, stream_id, after_version, up_to_version, until, batch_size)
        position, size = bounds.after, bounds.size
        upper = _MAX_I64 if bounds.upper is None else bounds.upper
        cutoff = _MAX_I64 if bounds.cutoff is None else bounds.cutoff
        start = position
        for _ in range(3):  # a compaction between the pages and the last read: scan again
            position, count, first, last = start, 0, 0, 0
            while position < upper:
                found, page_first, page_last = await self._run(
                    partial(ops.read_versions, governor, stream_id, position, upper, cutoff, size)
                )
                if found:
                    count += found
                    first = first or page_first
                    last = page_last
                    position = page_last
                if found < size:
                    break
            if not count:
                return EventSpan(0, 0, 0, None)
            newest = await self._run(
                partial(ops.read_events, governor, stream_id, last - 1, last, _MAX_I64, 1)
            )
            if newest:
                return EventSpan(count, first, last, newest[0])
        raise StoreUnavailable(
            f"stream {stream_id!r} kept changing under a replay (concurrent compaction); retry"
        )

    async def stream_version(self, governor: str, stream_id: str) -> int:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        return await self._run(partial(ops.stream_version, governor, stream_id))

    async def iter_all_events(
        self, governor: str, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[Event]:
        check_id(governor, "governor")
        size = check_batch_size(batch_size)
        stream_id, version = "", 0
        while True:
            page = await self._run(partial(ops.read_all_events, governor, stream_id, version, size))
            for event in page:
                yield event
            if len(page) < size:
                return
            stream_id, version = page[-1].stream_id, page[-1].version

    async def list_streams(self, governor: str) -> list[str]:
        check_id(governor, "governor")
        return await self._run(partial(ops.list_streams, governor))

    # ------------------------------------------------------------------ snapshots
    async def save_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, *, keep: int | None = None
    ) -> None:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        check_snapshot(snapshot)
        version = check_version(snapshot.version, "snapshot.version", minimum=1)
        keep_n = check_keep(keep)
        raw = encode_snapshot(snapshot, version, f"snapshot {stream_id!r}@{version}")
        await self._run(
            partial(ops.save_snapshot, governor, stream_id, version, raw, keep_n), WRITE
        )

    async def load_snapshot(
        self, governor: str, stream_id: str, *, at_or_before: int | None = None
    ) -> StateSnapshot | None:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        limit = _MAX_I64 if at_or_before is None else check_version(at_or_before, "at_or_before")
        return await self._run(partial(ops.load_snapshot, governor, stream_id, limit))

    async def snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        return await self._run(partial(ops.snapshot_versions, governor, stream_id))

    async def compact_stream(
        self, governor: str, stream_id: str, *, up_to_version: int
    ) -> CleanupResult:
        check_id(governor, "governor")
        check_id(stream_id, "stream id")
        cut = check_version(up_to_version, "up_to_version", minimum=1)
        return await self._run(partial(ops.compact_stream, governor, stream_id, cut), WRITE)

    # ------------------------------------------------------------------ statistics
    async def get_stats(self, governor: str | None = None) -> StoreStats:
        """Counts of state records, events and snapshots; ``max_version`` is the highest
        version of any state record or event; ``bytes`` the encoded size of all three."""
        if governor is not None:
            check_id(governor, "governor")
        return await self._run(partial(ops.get_stats, governor))
