"""``BlockingSQLiteStore``: the SQLite store for blocking code (scripts, Flask, Django).

Same file, schema, checks and stored form as :class:`~tai_fsm.stores.sqlite.SQLiteStore`
(it IS one: every hook and every rule is inherited); the difference is who runs the SQL.
``SQLiteStore`` hands every call to its worker thread so an event loop never blocks; this
store runs it on the calling thread, on its own connection, so a blocking caller pays no
thread hop. Its coroutine methods therefore complete without suspending
(``completes_synchronously``): the blocking runtime (``tai_fsm.sync``) runs them to
completion on the caller's thread, and they must not be awaited on an event loop that
serves other work (they block it for the duration of a commit's fsync).

Calls from several threads are serialised by one lock around the connection; each write
is one ``BEGIN IMMEDIATE`` transaction (the same bodies as the worker's), so several
processes, and ``SQLiteStore`` instances on the same file, may share it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import TypeVar

from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.stores.sqlite_worker import WRITE, run_read, run_write

__all__ = ["BlockingSQLiteStore"]

T = TypeVar("T")


class BlockingSQLiteStore(SQLiteStore):
    """``SQLiteStore`` whose calls run on the calling thread (see module docstring).
    Same arguments as ``SQLiteStore``."""

    completes_synchronously = True

    def _start(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BlockingSQLiteStore({self.path!r}, synchronous={self.synchronous!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], T], kind: int = 0) -> T:
        return self.run_now(fn, kind)

    def run_now(self, fn: Callable[[sqlite3.Connection], T], kind: int = 0) -> T:
        """Run ``fn(conn)`` here: as is (reads) or as one transaction (``WRITE``)."""
        self._check_open(kind)
        with self._lock:
            if kind == WRITE:
                result, error = run_write(self._conn, [fn], self.path, self.busy_timeout)[0]
            else:
                result, error = run_read(self._conn, fn, self.path, self.busy_timeout)
        if error is not None:
            raise error
        value: T = result
        return value

    async def close(self) -> None:
        """Close the connection. Idempotent."""
        self.close_now()

    def close_now(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
