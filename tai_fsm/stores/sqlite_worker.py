"""The thread that owns a ``SQLiteStore``'s connection.

Callers on any event loop submit jobs; the worker runs them in submission order and settles
each caller's future on its own loop (``call_soon_threadsafe``), so the event loop never
blocks on SQLite. Two kinds of job:

* ``READ`` — a function run as is (single statements in autocommit mode: each is one
  consistent WAL snapshot);
* ``WRITE`` — a transaction body. The worker opens ``BEGIN IMMEDIATE`` around it. When
  several write jobs are already queued, they share ONE transaction (group commit: one fsync
  for all), each inside its own ``SAVEPOINT``: a body that raises is rolled back alone and
  gets its error; the others commit together. No caller hears "done" before the ``COMMIT``
  that made its write durable; if the ``COMMIT`` (or ``BEGIN``) fails, every caller whose body
  had succeeded gets that error, and nothing of theirs is written.

  A group whose bodies a *batcher* recognises (``Store.commit`` bodies touching distinct
  streams and records, :func:`tai_fsm.stores.sqlite_ops.commit_group`) skips the
  savepoints: every job's preconditions are checked first, then the rows of every job that
  passed are written with one ``executemany`` per table — the same outcomes, a fraction
  of the statements.

``sqlite3`` errors become ``TaiFsmError`` subclasses (:func:`sqlite_schema.map_error`).
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
from collections.abc import Callable
from typing import Any

from tai_fsm.stores.sqlite_schema import map_error

__all__ = ["MAX_GROUP", "READ", "STOP", "WRITE", "Job", "run_read", "run_write", "serve"]

READ, WRITE = 0, 1
MAX_GROUP = 256  # write jobs per shared transaction

Body = Callable[[sqlite3.Connection], Any]
Outcome = tuple[Any, BaseException | None]
#: ``batch(conn, bodies)``: every body's outcome, having run them all inside the open
#: transaction without savepoints — or None (nothing done) when it cannot
Batcher = Callable[[sqlite3.Connection, list[Body]], list[Outcome] | None]
Job = tuple[int, Body, "asyncio.Future[Any]", asyncio.AbstractEventLoop]
STOP: Any = object()  # put this on the queue to stop the worker
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller was cancelled; the work itself completed
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _deliver(jobs: list[Job], outcomes: list[tuple[Any, BaseException | None]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for job, (result, error) in zip(jobs, outcomes, strict=True):
        by_loop.setdefault(job[3], []).append((job[2], result, error))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # that event loop is closed: nobody is waiting any more
            pass


def serve(
    conn: sqlite3.Connection,
    jobs: queue.SimpleQueue[Job | Any],
    path: str,
    busy_timeout: float,
    batch: Batcher | None = None,
) -> None:
    """The worker thread's body: run jobs until ``STOP``, then close ``conn``."""
    carry: Any = None
    try:
        while True:
            job = carry if carry is not None else jobs.get()
            carry = None
            if job is STOP:
                return
            if type(job) is not list and job[0] == READ:
                _deliver([job], [run_read(conn, job[1], path, busy_timeout)])
                continue
            # a write, or a batch of writes (a list): group what is queued behind it
            group: list[Job] = list(job) if type(job) is list else [job]
            while len(group) < MAX_GROUP and not jobs.empty():
                try:
                    nxt = jobs.get_nowait()
                except queue.Empty:  # only this thread takes jobs, but be safe
                    break
                if nxt is STOP or (type(nxt) is not list and nxt[0] != WRITE):
                    carry = nxt
                    break
                group.extend(nxt) if type(nxt) is list else group.append(nxt)
            for start in range(0, len(group), MAX_GROUP):
                part = group[start : start + MAX_GROUP]
                _deliver(part, run_write(conn, [j[1] for j in part], path, busy_timeout, batch))
    finally:
        conn.close()


def run_read(
    conn: sqlite3.Connection, fn: Body, path: str, busy_timeout: float
) -> tuple[Any, BaseException | None]:
    """Run ``fn(conn)`` as is: ``(result, None)`` or ``(None, error)``."""
    try:
        return fn(conn), None
    except sqlite3.Error as exc:
        return None, map_error(exc, path, busy_timeout)
    except BaseException as exc:  # delivered to the awaiting caller
        return None, exc


def run_write(
    conn: sqlite3.Connection,
    group: list[Body],
    path: str,
    busy_timeout: float,
    batch: Batcher | None = None,
) -> list[tuple[Any, BaseException | None]]:
    """Run the bodies of ``group`` in one transaction; the outcome of each, in order."""
    savepoints = len(group) > 1
    outcomes: list[tuple[Any, BaseException | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        batched = batch(conn, group) if savepoints and batch is not None else None
        if batched is not None:
            outcomes = batched
            group = []
        for body in group:
            if savepoints:
                conn.execute("SAVEPOINT job")
            try:
                result = body(conn)
            except sqlite3.Error:
                raise  # the whole transaction is suspect: fail the group
            except BaseException as exc:  # this job's own failure (a check, bad data)
                if savepoints:
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                else:
                    conn.execute("ROLLBACK")
                outcomes.append((None, exc))
                continue
            if savepoints:
                conn.execute("RELEASE job")
            outcomes.append((result, None))
        if conn.in_transaction:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # the original error matters more
                pass
        failed: list[tuple[Any, BaseException | None]] = []
        for n in range(len(group)):
            own = outcomes[n][1] if n < len(outcomes) else None
            failed.append((None, own if own is not None else map_error(exc, path, busy_timeout)))
        return failed
    return outcomes
