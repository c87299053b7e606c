"""Rewinding a diverged stream: the one operation ``ReplicatedStore`` needs that the Store
contract does not have (yet).

Streams are append-only, so the copy of a stream whose branch lost a resolution cannot
become the resolved history by appending: its losing events sit at the versions the kept
branch uses. ``rewind_and_append`` replaces them, atomically:

1. check that the events after ``after_version`` are exactly ``expected_ids`` (else
   ``VersionConflict``: someone appended meanwhile, nothing is changed);
2. delete them, and the stream's snapshots after ``after_version`` (they describe the
   losing branch);
3. when the state record followed the old head (its version was the head), rewind it too,
   so that
4. ``events`` are appended at ``after_version`` with ``state`` — exactly an ``Append`` op of
   :meth:`Store.commit` (``state`` is required when the record followed the old head).

The losing events are not lost: the caller lists them in the ``@resolve`` event it appends.

**A bridge, not the design.** The Store contract should grow this as a commit operation
(``ops.Rewind``, checked by ``prepare`` and decided by ``plan`` like the others). Until it
does, a store may provide it as a method ``rewind_and_append`` with this module's signature
(it is used when present); for the built-in ``MemoryStore`` and ``SQLiteStore`` this module
implements it on their internals, reusing their own planning and encoding so the rows written
are exactly what their ``commit`` would write. Any other store cannot be rewound: a
divergence on it is reported by ``sync`` and left as is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tai_fsm.errors import InvalidInput, VersionConflict
from tai_fsm.records import Event, StateSnapshot
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import STATES, Append
from tai_fsm.stores.planning import Current, Prepared, plan, prepare

__all__ = ["Rewinder", "can_rewind", "rewind_and_append"]

Rewinder = Callable[..., Awaitable[None]]


def _rewinder(store: Store) -> Rewinder | None:
    own = getattr(store, "rewind_and_append", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    from tai_fsm.stores.memory import MemoryStore
    from tai_fsm.stores.sqlite import SQLiteStore

    if isinstance(store, MemoryStore):
        return lambda *args, **kwargs: _rewind_memory(store, *args, **kwargs)
    if isinstance(store, SQLiteStore):
        return lambda *args, **kwargs: _rewind_sqlite(store, *args, **kwargs)
    return None


def can_rewind(store: Store) -> bool:
    """True when ``rewind_and_append`` works on ``store``."""
    return _rewinder(store) is not None


async def rewind_and_append(
    store: Store,
    governor: str,
    stream_id: str,
    *,
    after_version: int,
    expected_ids: Sequence[str],
    events: Sequence[Event],
    state: StateSnapshot | None,
) -> None:
    """Replace the events after ``after_version`` (exactly ``expected_ids``) by ``events``
    (see the module docstring). ``InvalidInput`` when ``store`` cannot be rewound."""
    rewinder = _rewinder(store)
    if rewinder is None:
        raise InvalidInput(
            f"{type(store).__name__} cannot rewind a diverged stream (no rewind_and_append)",
            field="store",
        )
    await rewinder(
        governor, stream_id, after_version=after_version, expected_ids=list(expected_ids),
        events=list(events), state=state,
    )


def _prepared(
    stream_id: str, after: int, events: list[Event], state: StateSnapshot | None
) -> list[Prepared]:
    prior = events[0].from_state if after >= 1 and events else None
    return prepare([Append(stream_id, events, after, state, None, prior)])


def _check(
    stream_id: str, after: int, expected: list[str], head: int, found: list[str], first: int
) -> None:
    if head != after + len(expected) or found != expected:
        raise VersionConflict(stream_id, after + len(expected), head)
    if after + 1 < first:
        raise InvalidInput(
            f"cannot rewind {stream_id!r} to version {after}: events up to {first - 1} "
            "were compacted",
            field="after_version",
        )


def _follows(record_version: int | None, head: int, state: StateSnapshot | None, sid: str) -> bool:
    follows = record_version is not None and record_version == head and head > 0
    if follows and state is None:
        raise InvalidInput(
            f"the state record of {sid!r} follows the stream: rewinding needs "
            "the state that goes with the new head",
            field="state",
        )
    return follows


# ---------------------------------------------------------------------- memory
async def _rewind_memory(
    store: Any,
    governor: str,
    stream_id: str,
    *,
    after_version: int,
    expected_ids: list[str],
    events: list[Event],
    state: StateSnapshot | None,
) -> None:
    from tai_fsm.stores.memory import _Stream

    prepared = _prepared(stream_id, after_version, events, state)  # encoded outside the lock
    key = (governor, stream_id)
    with store._lock:
        store._open()
        stream = store._streams.get(key)
        head = 0 if stream is None else stream.head
        rows = [] if stream is None else stream.rows
        first = 1 if stream is None else stream.first
        found = [row[1] for row in rows if row[0] > after_version]
        _check(stream_id, after_version, expected_ids, head, found, first)
        record = store._records.get((governor, STATES, stream_id))
        follows = _follows(None if record is None else record[0], head, state, stream_id)
        current = Current(heads={stream_id: after_version})
        if record is not None:
            current.versions[(STATES, stream_id)] = after_version if follows else record[0]
        decided = plan(governor, prepared, current)
        # decided: now mutate (no await, no failure point)
        if stream is None:
            stream = store._streams.setdefault(key, _Stream())
        del stream.rows[after_version - stream.first + 1 :]
        snapshots = store._snapshots.get(key, {})
        for version in [v for v in snapshots if v > after_version]:
            del snapshots[version]
        for _, new_rows in decided.events:
            stream.rows.extend(new_rows)
        for kind, record_id, version, raw in decided.puts:
            store._records[(governor, kind, record_id)] = (version, raw)


# ---------------------------------------------------------------------- sqlite
async def _rewind_sqlite(
    store: Any,
    governor: str,
    stream_id: str,
    *,
    after_version: int,
    expected_ids: list[str],
    events: list[Event],
    state: StateSnapshot | None,
) -> None:
    from tai_fsm.stores import sqlite_ops
    from tai_fsm.stores.sqlite_worker import WRITE

    prepared = _prepared(stream_id, after_version, events, state)
    where = "governor = ? AND stream_id = ?"

    def body(conn: sqlite3.Connection) -> None:
        rows = conn.execute(
            f"SELECT version, event_id FROM events WHERE {where} ORDER BY version",
            (governor, stream_id),
        ).fetchall()
        head = rows[-1][0] if rows else 0
        first = rows[0][0] if rows else 1
        found = [event_id for version, event_id in rows if version > after_version]
        _check(stream_id, after_version, expected_ids, head, found, first)
        record = conn.execute(
            "SELECT version FROM records WHERE governor = ? AND kind = ? AND id = ?",
            (governor, STATES, stream_id),
        ).fetchone()
        follows = _follows(None if record is None else record[0], head, state, stream_id)
        conn.execute(f"DELETE FROM events WHERE {where} AND version > ?",
                     (governor, stream_id, after_version))
        conn.execute(f"DELETE FROM snapshots WHERE {where} AND version > ?",
                     (governor, stream_id, after_version))
        if follows:
            conn.execute(
                "UPDATE records SET version = ? WHERE governor = ? AND kind = ? AND id = ?",
                (after_version, governor, STATES, stream_id),
            )
        sqlite_ops.commit(governor, prepared, conn)

    await store._run(body, WRITE)
