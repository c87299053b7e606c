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
(it is used when present); for the built-in ``MemoryStore``, ``SQLiteStore`` and
``FirestoreStore`` this module implements it on their internals, reusing their own planning,
encoding and layout so the rows written are exactly what their ``commit`` would write (on
Firestore: one batched write whose preconditions assert every replaced event unchanged since
it was read). Any other store cannot be rewound: a divergence on it is reported by ``sync``
and left as is.
"""

from __future__ import annotations

import asyncio
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
    from tai_fsm.stores.firestore import FirestoreStore
    from tai_fsm.stores.memory import MemoryStore
    from tai_fsm.stores.sqlite import SQLiteStore

    if isinstance(store, MemoryStore):
        return lambda *args, **kwargs: _rewind_memory(store, *args, **kwargs)
    if isinstance(store, SQLiteStore):
        return lambda *args, **kwargs: _rewind_sqlite(store, *args, **kwargs)
    if isinstance(store, FirestoreStore):
        return lambda *args, **kwargs: _rewind_firestore(store, *args, **kwargs)
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
    if after + 1 < first:
        raise InvalidInput(
            f"cannot rewind {stream_id!r} to version {after}: events up to {first - 1} "
            "were compacted",
            field="after_version",
        )
    if head != after + len(expected) or found != expected:
        raise VersionConflict(stream_id, after + len(expected), head)


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


# ---------------------------------------------------------------------- firestore
async def _rewind_firestore(
    store: Any,
    governor: str,
    stream_id: str,
    *,
    after_version: int,
    expected_ids: list[str],
    events: list[Event],
    state: StateSnapshot | None,
) -> None:
    from tai_fsm.stores.firestore_codec import (
        SNAPSHOTS,
        Token,
        create_write,
        delete_write,
        event_fields,
        event_key,
        record_fields,
        set_write,
        snapshot_key,
        stream_range,
        unchanged_write,
        version_of_key,
    )
    from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS

    prepared = _prepared(stream_id, after_version, events, state)
    docs = store._open()
    old_head = after_version + len(expected_ids)
    what = f"rewind of stream {stream_id!r} in {governor!r}"
    record_path = docs.record_path(governor, STATES, stream_id)
    first, _ = stream_range(stream_id)
    found_events, found_snapshots, records = await asyncio.gather(
        docs.fetch(docs.key_range(
            docs.events(governor), event_key(stream_id, max(after_version, 1)),
            event_key(stream_id, old_head + 1), end_inclusive=True, fields=["event_id"],
        ), what),
        docs.fetch(docs.key_range(
            docs.snapshots(governor), first, snapshot_key(stream_id, after_version),
            end_inclusive=False, fields=[],
        ), what),
        docs.get_all([record_path], what),
    )
    stored = {version_of_key(doc.id): doc for doc in found_events}
    above = [v for v in sorted(stored) if v > after_version]
    head = above[-1] if above else (after_version if after_version in stored else 0)
    found = [str(stored[v].get("event_id")) for v in above]
    first_kept = min(stored) if stored else 1
    _check(stream_id, after_version, expected_ids, head, found, first_kept)
    if after_version >= 1 and after_version not in stored:
        raise InvalidInput(
            f"cannot rewind {stream_id!r} to version {after_version}: it was compacted",
            field="after_version",
        )
    record = records.get(record_path)
    record_version = None if record is None else int(record.get("version") or 0)
    follows = _follows(record_version, head, state, stream_id)
    current = Current(heads={stream_id: after_version})
    if record_version is not None:
        current.versions[(STATES, stream_id)] = after_version if follows else record_version
    decided = plan(governor, prepared, current)

    def unchanged_since(doc: Any) -> Any:
        return Token.of(0, doc.update_time, 0)  # only its update_time is used

    writes: list[Any] = []
    if after_version >= 1:  # the base stays, and is what the new events follow
        writes.append(unchanged_write(docs.event_path(governor, stream_id, after_version),
                                      unchanged_since(stored[after_version])))
    rows = {row[0]: row for _, new_rows in decided.events for row in new_rows}
    for version in range(after_version + 1, max(old_head, max(rows, default=0)) + 1):
        path = docs.event_path(governor, stream_id, version)
        row = rows.get(version)
        fields = None if row is None else event_fields(stream_id, *row)
        if version <= old_head:
            when = unchanged_since(stored[version])
            writes.append(delete_write(path, when) if fields is None
                          else set_write(path, fields, when))
        elif fields is not None:
            writes.append(create_write(path, fields))
    if max(rows, default=0) <= old_head:  # nobody appended meanwhile
        writes.append(delete_write(docs.event_path(governor, stream_id, old_head + 1), False))
    for doc in found_snapshots:
        writes.append(delete_write(docs.doc_path(governor, SNAPSHOTS, doc.id)))
    for _, record_id, version, raw in decided.puts:
        when = False if record is None else unchanged_since(record)
        writes.append(set_write(docs.record_path(governor, STATES, record_id),
                                record_fields(version, raw), when))
    if len(writes) > store.max_commit_writes:
        raise InvalidInput(
            f"rewinding {stream_id!r} needs {len(writes)} writes in one commit; Firestore "
            f"takes at most {store.max_commit_writes}",
            field="events",
        )
    try:
        await docs.commit(writes, what)
    except CONFLICT_ERRORS:
        raise VersionConflict(stream_id, old_head, None) from None
