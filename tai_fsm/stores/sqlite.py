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
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from tai_fsm.errors import InvalidInput, StoreFailure, TaiFsmError
from tai_fsm.records import CleanupResult, StoreStats
from tai_fsm.stores import sqlite_ops as ops
from tai_fsm.stores.base import RawRecord, Store
from tai_fsm.stores.ops import CommitResult
from tai_fsm.stores.planning import EventRow, Prepared
from tai_fsm.stores.sqlite_schema import (
    SCHEMA_VERSION,
    check_synchronous,
    connect,
    map_error,
    schema_version,
)
from tai_fsm.stores.sqlite_worker import READ, STOP, WRITE, Job, serve

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_MAX_BUSY_TIMEOUT = 86_400.0  # SQLite takes milliseconds as a C int


class SQLiteStore(Store):
    """The Store contract on one SQLite file.

    ``path``: the database file (parent folders are created). ``synchronous``: ``"NORMAL"``,
    ``"FULL"`` (default) or ``"EXTRA"``. ``busy_timeout``: seconds a write waits for another
    connection's write lock before ``StoreUnavailable``. ``create=False``: a missing or
    empty file is ``StoreFailure`` ("no store at PATH") and nothing is created.
    ``read_only=True``: open an existing store for reading only (also on a read-only
    medium); every write raises ``StoreFailure`` (condition ``read_only``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        create: bool = True,
        read_only: bool = False,
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
        self.read_only = bool(read_only)
        conn = connect(
            self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout,
            create=create, read_only=self.read_only,
        )
        try:
            #: 2 only for a schema-2 file opened read-only (not migrated): queries scan
            self.schema_version = schema_version(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise map_error(exc, self.path, self.busy_timeout) from None
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
        if kind == WRITE and self.read_only:
            raise StoreFailure(
                f"SQLite file {self.path} was opened read-only; nothing was written",
                condition="read_only",
            )
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

    async def vacuum(self) -> tuple[int, int]:
        """Give the space freed by deletions (``cleanup_old_data``, ``delete_state``) back
        to the disk: SQLite keeps freed pages in the file for reuse until ``VACUUM``
        rebuilds it. Returns ``(bytes on disk before, after)`` — the file and its
        write-ahead log. Needs free disk space about the size of the file while it runs,
        and waits for (then blocks) other writers."""
        if self.read_only:
            raise StoreFailure(
                f"SQLite file {self.path} was opened read-only; it cannot be vacuumed",
                condition="read_only",
            )
        return await self._run(partial(ops.vacuum, self.path))  # outside any transaction

    # ------------------------------------------------------------------ backend hooks
    async def _read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        return await self._run(partial(ops.read_records, governor, kind, record_ids))

    async def _list_records(self, governor: str, kind: str, after: str, limit: int) -> list[str]:
        return await self._run(partial(ops.list_records, governor, kind, after, limit))

    async def _find_states(
        self, governor: str, machine: str | None, state: str | None, after: str, limit: int
    ) -> list[str]:
        if self.schema_version < SCHEMA_VERSION:  # a schema-2 file opened read-only
            return await super()._find_states(governor, machine, state, after, limit)
        return await self._run(partial(ops.find_states, governor, machine, state, after, limit))

    async def _list_governors(self) -> list[str]:
        return await self._run(ops.list_governors)

    async def _commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        return await self._run(partial(ops.commit, governor, prepared), WRITE)

    async def _event_rows(
        self, governor: str, stream_id: str, after: int, upper: int | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        return await self._run(partial(ops.event_rows, governor, stream_id, after, upper, limit))

    async def _event_versions(
        self,
        governor: str,
        stream_id: str,
        after: int,
        upper: int | None,
        cutoff: int | None,
        limit: int,
    ) -> list[int]:
        return await self._run(
            partial(ops.event_versions, governor, stream_id, after, upper, cutoff, limit)
        )

    async def _stream_head(self, governor: str, stream_id: str) -> int:
        return await self._run(partial(ops.stream_head, governor, stream_id))

    async def _list_streams(self, governor: str) -> list[str]:
        return await self._run(partial(ops.list_streams, governor))

    async def _save_snapshot(
        self, governor: str, stream_id: str, version: int, raw: bytes, keep: int | None
    ) -> None:
        await self._run(partial(ops.save_snapshot, governor, stream_id, version, raw, keep), WRITE)

    async def _load_snapshot(
        self, governor: str, stream_id: str, at_or_before: int | None
    ) -> tuple[int, bytes] | None:
        return await self._run(partial(ops.load_snapshot, governor, stream_id, at_or_before))

    async def _snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        return await self._run(partial(ops.snapshot_versions, governor, stream_id))

    async def _compact(
        self,
        governor: str,
        stream_id: str,
        cut: int,
        last: int,
        rewrite: EventRow | None,
    ) -> CleanupResult:
        return await self._run(
            partial(ops.compact, governor, stream_id, cut, last, rewrite), WRITE
        )

    async def _stats(self, governor: str | None) -> StoreStats:
        return await self._run(partial(ops.stats, governor))
