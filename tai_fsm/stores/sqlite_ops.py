"""The blocking halves of ``SQLiteStore``'s calls, run on the store's worker thread
(:mod:`tai_fsm.stores.sqlite_worker`) with the connection it owns; arguments are already
validated.

* Write functions are transaction BODIES: the worker runs them inside ``BEGIN IMMEDIATE``
  (the write lock is taken before any version is read, so a check and the write that
  depends on it cannot interleave with another process) and commits after them. A body that
  raises writes nothing.
* Read functions are single statements (one consistent WAL snapshot each).

``sqlite3`` errors propagate to the worker, which maps them with
:func:`tai_fsm.stores.sqlite_schema.map_error`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from tai_fsm.errors import InvalidInput, StateNotFound, VersionConflict
from tai_fsm.records import (
    AppendResult,
    CleanupResult,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
)
from tai_fsm.stores.common import (
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
    micros,
)
from tai_fsm.stores.sqlite_schema import SCHEMA_VERSION

__all__ = [
    "Row",
    "append_events",
    "batch_read_states",
    "compact_stream",
    "delete_state",
    "event_rows",
    "get_stats",
    "list_governors",
    "list_states",
    "list_streams",
    "load_snapshot",
    "pragmas",
    "read_all_events",
    "read_events",
    "read_state",
    "save_snapshot",
    "snapshot_versions",
    "stream_version",
    "write_state",
]

_Conn = sqlite3.Connection
Row = tuple[str, str, int, str, int, bytes]

_UPSERT_STATE = (
    "INSERT INTO states (governor, id, version, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (governor, id) DO UPDATE SET version = excluded.version, data = excluded.data"
)
_INSERT_EVENT = (
    "INSERT INTO events (governor, stream_id, version, event_id, ts, data) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_HEADS = (
    "SELECT (SELECT MAX(version) FROM events WHERE governor = ? AND stream_id = ?), "
    "(SELECT version FROM states WHERE governor = ? AND id = ?)"
)
_STATE_VERSION = "SELECT version FROM states WHERE governor = ? AND id = ?"
_BATCH = 500  # ids per IN (...) query, well under SQLite's variable limit


def pragmas(conn: _Conn) -> dict[str, Any]:
    sync_names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {
        "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower(),
        "synchronous": sync_names.get(sync, str(sync)),
        "busy_timeout": int(conn.execute("PRAGMA busy_timeout").fetchone()[0]),
        "schema_version": int(
            conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        ),
        "supported_schema_version": SCHEMA_VERSION,
    }


# ---------------------------------------------------------------------- state records
def read_state(governor: str, state_id: str, conn: _Conn) -> StoredState:
    row = conn.execute(
        "SELECT version, data FROM states WHERE governor = ? AND id = ?", (governor, state_id)
    ).fetchone()
    if row is None:
        raise StateNotFound(governor, state_id)
    version, raw = row
    return StoredState(snapshot=decode_snapshot(raw, governor, state_id, version), version=version)


def batch_read_states(governor: str, ids: list[str], conn: _Conn) -> dict[str, StoredState]:
    unique = list(dict.fromkeys(ids))
    found: dict[str, StoredState] = {}
    for start in range(0, len(unique), _BATCH):
        chunk = unique[start : start + _BATCH]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT id, version, data FROM states WHERE governor = ? AND id IN ({marks})",
            (governor, *chunk),
        ).fetchall()
        for state_id, version, raw in rows:
            found[state_id] = StoredState(
                snapshot=decode_snapshot(raw, governor, state_id, version), version=version
            )
    return {sid: found[sid] for sid in unique if sid in found}


def write_state(
    governor: str,
    state_id: str,
    snapshot: StateSnapshot,
    expected: int | None,
    raw: bytes | None,
    conn: _Conn,
) -> int:
    """``raw`` is the snapshot encoded at ``expected + 1`` (``None`` when ``expected`` is:
    the version is only known here)."""
    row = conn.execute(_STATE_VERSION, (governor, state_id)).fetchone()
    current = 0 if row is None else row[0]
    if expected is not None and current != expected:
        raise VersionConflict(state_id, expected, current)
    if raw is None:
        raw = encode_snapshot(snapshot, current + 1, f"state {state_id!r}")
    conn.execute(_UPSERT_STATE, (governor, state_id, current + 1, raw))
    return current + 1


def delete_state(governor: str, state_id: str, expected: int | None, conn: _Conn) -> None:
    row = conn.execute(_STATE_VERSION, (governor, state_id)).fetchone()
    if row is None:
        raise StateNotFound(governor, state_id)
    if expected is not None and row[0] != expected:
        raise VersionConflict(state_id, expected, row[0])
    conn.execute("DELETE FROM states WHERE governor = ? AND id = ?", (governor, state_id))


def list_states(governor: str, after: str, limit: int, conn: _Conn) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM states WHERE governor = ? AND id > ? ORDER BY id LIMIT ?",
        (governor, after, limit),
    ).fetchall()
    return [row[0] for row in rows]


def list_governors(conn: _Conn) -> list[str]:
    """Distinct governors by index seeks (one per governor and table), not full scans."""
    governors: set[str] = set()
    for table in ("states", "events", "snapshots"):
        current = ""
        while True:
            row = conn.execute(
                f"SELECT MIN(governor) FROM {table} WHERE governor > ?", (current,)
            ).fetchone()
            if row is None or row[0] is None:
                break
            current = row[0]
            governors.add(current)
    return sorted(governors)


# ---------------------------------------------------------------------- event streams
def event_rows(governor: str, stream_id: str, events: Sequence[Event], base: int) -> list[Row]:
    """The ``events`` rows for ``events`` appended after version ``base`` (encoded)."""
    return [
        (
            governor,
            stream_id,
            base + n,
            event.id,
            micros(event.timestamp),
            encode_event(event, stream_id, base + n),
        )
        for n, event in enumerate(events, start=1)
    ]


def append_events(
    governor: str,
    stream_id: str,
    events: list[Event],
    expected: int | None,
    state: StateSnapshot | None,
    encoded: tuple[list[Row], bytes | None] | None,
    conn: _Conn,
) -> AppendResult:
    """See ``Store.append_events``. ``encoded`` holds the event rows and state record
    already encoded by the caller when ``expected`` is known (so the write lock is held only
    for the checks and inserts); with ``expected=None`` they are encoded here, at the head."""
    count = len(events)
    head, current = conn.execute(_HEADS, (governor, stream_id, governor, stream_id)).fetchone()
    head = head or 0
    if expected is None:
        landed = _find_ids(conn, governor, stream_id, events)
        if landed is not None:
            return landed
        if events[0].version and events[0].version != head + 1:
            raise InvalidInput(
                f"event {events[0].id!r} carries version {events[0].version} but would "
                f"be appended as version {head + 1}",
                field="events",
            )
        rows = event_rows(governor, stream_id, events, head)
        state_raw = (
            None if state is None else encode_snapshot(state, head + count, f"state {stream_id!r}")
        )
    else:
        if head != expected:
            if _landed(conn, governor, stream_id, expected, events):
                return AppendResult(version=expected + count, already_applied=True)
            raise VersionConflict(stream_id, expected, head)
        if state is not None and (current or 0) != expected:
            raise VersionConflict(stream_id, expected, current or 0)
        assert encoded is not None
        rows, state_raw = encoded
    if count == 1:
        conn.execute(_INSERT_EVENT, rows[0])
    else:
        conn.executemany(_INSERT_EVENT, rows)
    new_head = rows[-1][2]
    if state_raw is not None:
        conn.execute(_UPSERT_STATE, (governor, stream_id, new_head, state_raw))
    return AppendResult(version=new_head)


def _landed(conn: _Conn, governor: str, stream_id: str, expected: int, events: list[Event]) -> bool:
    """True when versions ``expected+1 ..`` already hold exactly these event ids."""
    rows = conn.execute(
        "SELECT event_id FROM events WHERE governor = ? AND stream_id = ? "
        "AND version > ? AND version <= ? ORDER BY version",
        (governor, stream_id, expected, expected + len(events)),
    ).fetchall()
    return [row[0] for row in rows] == [event.id for event in events]


def _find_ids(
    conn: _Conn, governor: str, stream_id: str, events: list[Event]
) -> AppendResult | None:
    """For an append without ``expected_version``: ``already_applied`` when every event id
    is in the stream, ``None`` when none is, ``InvalidInput`` when only some are."""
    ids = [event.id for event in events]
    found: list[int] = []
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        marks = ", ".join("?" * len(chunk))
        found.extend(
            row[0]
            for row in conn.execute(
                f"SELECT version FROM events WHERE governor = ? AND stream_id = ? "
                f"AND event_id IN ({marks})",
                (governor, stream_id, *chunk),
            )
        )
    if not found:
        return None
    if len(found) >= len(ids):
        return AppendResult(version=max(found), already_applied=True)
    raise InvalidInput(
        f"some events of this append are already in stream {stream_id!r} and others are not",
        field="events",
    )


def read_events(
    governor: str,
    stream_id: str,
    after: int,
    upper: int,
    cutoff: int,
    limit: int,
    conn: _Conn,
) -> list[Event]:
    rows = conn.execute(
        "SELECT version, data FROM events WHERE governor = ? AND stream_id = ? "
        "AND version > ? AND version <= ? AND ts <= ? ORDER BY version LIMIT ?",
        (governor, stream_id, after, upper, cutoff, limit),
    ).fetchall()
    return [decode_event(raw, governor, stream_id, version) for version, raw in rows]


def read_versions(
    governor: str,
    stream_id: str,
    after: int,
    upper: int,
    cutoff: int,
    limit: int,
    conn: _Conn,
) -> tuple[int, int, int]:
    """``(count, first, last)`` of the versions one ``read_events`` page would return."""
    rows = conn.execute(
        "SELECT version FROM events WHERE governor = ? AND stream_id = ? "
        "AND version > ? AND version <= ? AND ts <= ? ORDER BY version LIMIT ?",
        (governor, stream_id, after, upper, cutoff, limit),
    ).fetchall()
    if not rows:
        return 0, 0, 0
    return len(rows), rows[0][0], rows[-1][0]


def read_all_events(
    governor: str, after_stream: str, after_version: int, limit: int, conn: _Conn
) -> list[Event]:
    rows = conn.execute(
        "SELECT stream_id, version, data FROM events WHERE governor = ? "
        "AND (stream_id, version) > (?, ?) ORDER BY stream_id, version LIMIT ?",
        (governor, after_stream, after_version, limit),
    ).fetchall()
    return [decode_event(raw, governor, sid, version) for sid, version, raw in rows]


def stream_version(governor: str, stream_id: str, conn: _Conn) -> int:
    row = conn.execute(
        "SELECT MAX(version) FROM events WHERE governor = ? AND stream_id = ?",
        (governor, stream_id),
    ).fetchone()
    return int(row[0] or 0)


def list_streams(governor: str, conn: _Conn) -> list[str]:
    """Distinct stream ids by index seeks (one per stream), not a scan of every event."""
    streams: list[str] = []
    current = ""
    while True:
        row = conn.execute(
            "SELECT MIN(stream_id) FROM events WHERE governor = ? AND stream_id > ?",
            (governor, current),
        ).fetchone()
        if row is None or row[0] is None:
            return streams
        current = row[0]
        streams.append(current)


# ---------------------------------------------------------------------- snapshots
def save_snapshot(
    governor: str, stream_id: str, version: int, raw: bytes, keep: int | None, conn: _Conn
) -> None:
    conn.execute(
        "INSERT INTO snapshots (governor, stream_id, version, data) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (governor, stream_id, version) DO UPDATE SET data = excluded.data",
        (governor, stream_id, version, raw),
    )
    if keep is not None:
        conn.execute(
            "DELETE FROM snapshots WHERE governor = ? AND stream_id = ? AND version < ("
            "SELECT version FROM snapshots WHERE governor = ? AND stream_id = ? "
            "ORDER BY version DESC LIMIT 1 OFFSET ?)",
            (governor, stream_id, governor, stream_id, keep - 1),
        )


def load_snapshot(governor: str, stream_id: str, limit: int, conn: _Conn) -> StateSnapshot | None:
    row = conn.execute(
        "SELECT version, data FROM snapshots WHERE governor = ? AND stream_id = ? "
        "AND version <= ? ORDER BY version DESC LIMIT 1",
        (governor, stream_id, limit),
    ).fetchone()
    if row is None:
        return None
    return decode_snapshot(row[1], governor, stream_id, row[0], "snapshot")


def snapshot_versions(governor: str, stream_id: str, conn: _Conn) -> list[int]:
    rows = conn.execute(
        "SELECT version FROM snapshots WHERE governor = ? AND stream_id = ? ORDER BY version",
        (governor, stream_id),
    ).fetchall()
    return [row[0] for row in rows]


def compact_stream(governor: str, stream_id: str, cut: int, conn: _Conn) -> CleanupResult:
    key = (governor, stream_id)
    newest = conn.execute(
        "SELECT MAX(version) FROM snapshots WHERE governor = ? AND stream_id = ?", key
    ).fetchone()[0]
    if newest is None or newest < cut:
        raise InvalidInput(
            f"compact_stream({stream_id!r}, up_to_version={cut}) needs a snapshot at "
            f"version {cut} or later; save one first",
            field="up_to_version",
        )
    covering = conn.execute(
        "SELECT MAX(version) FROM snapshots WHERE governor = ? AND stream_id = ? AND version <= ?",
        (*key, cut),
    ).fetchone()[0]
    dropped_snapshots, snapshot_bytes = 0, 0
    if covering is not None:
        dropped_snapshots, snapshot_bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM snapshots "
            "WHERE governor = ? AND stream_id = ? AND version < ?",
            (*key, covering),
        ).fetchone()
        conn.execute(
            "DELETE FROM snapshots WHERE governor = ? AND stream_id = ? AND version < ?",
            (*key, covering),
        )
    head = stream_version(governor, stream_id, conn)
    last = min(cut, head - 1)  # the head event is never deleted
    dropped_events, event_bytes = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM events "
        "WHERE governor = ? AND stream_id = ? AND version <= ?",
        (*key, last),
    ).fetchone()
    conn.execute(
        "DELETE FROM events WHERE governor = ? AND stream_id = ? AND version <= ?",
        (*key, last),
    )
    return CleanupResult(
        deleted_events=dropped_events,
        deleted_snapshots=dropped_snapshots,
        recovered_bytes=snapshot_bytes + event_bytes,
    )


# ---------------------------------------------------------------------- statistics
_STATS_ONE = (
    "SELECT "
    "(SELECT COUNT(*) FROM states WHERE governor = :g), "
    "(SELECT COUNT(*) FROM events WHERE governor = :g), "
    "(SELECT COUNT(*) FROM snapshots WHERE governor = :g), "
    "(SELECT MAX(version) FROM states WHERE governor = :g), "
    "(SELECT MAX(version) FROM events WHERE governor = :g), "
    "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM states WHERE governor = :g) + "
    "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM events WHERE governor = :g) + "
    "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM snapshots WHERE governor = :g)"
)
_STATS_ALL = _STATS_ONE.replace(" WHERE governor = :g", "")


def get_stats(governor: str | None, conn: _Conn) -> StoreStats:
    if governor is None:
        row = conn.execute(_STATS_ALL).fetchone()
    else:
        row = conn.execute(_STATS_ONE, {"g": governor}).fetchone()
    states, events, snapshots, state_max, event_max, size = row
    return StoreStats(
        total_states=states,
        total_events=events,
        total_snapshots=snapshots,
        max_version=max(state_max or 0, event_max or 0),
        bytes=size,
    )
