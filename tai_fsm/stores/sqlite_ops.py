"""The blocking halves of ``SQLiteStore``'s hooks, run on the store's worker thread
(:mod:`tai_fsm.stores.sqlite_worker`) with the connection it owns; arguments are already
checked and records encoded by the ``Store`` base class.

* Write functions are transaction BODIES: the worker runs them inside ``BEGIN IMMEDIATE``
  (the write lock is taken before any version is read, so a check and the write that
  depends on it cannot interleave with another process) and commits after them. A body that
  raises writes nothing.
* Read functions are single statements (one consistent WAL snapshot each).

``sqlite3`` errors propagate to the worker, which maps them with
:func:`tai_fsm.stores.sqlite_schema.map_error`.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from tai_fsm.errors import VersionConflict
from tai_fsm.records import CleanupResult, StoreStats
from tai_fsm.stores.base import RawRecord
from tai_fsm.stores.ops import LOCKS, STATES, CommitResult
from tai_fsm.stores.planning import (
    Current,
    EventRow,
    Prepared,
    landed_ranges,
    needs,
    plan,
    recognise,
)
from tai_fsm.stores.sqlite_schema import SCHEMA_VERSION

_Conn = sqlite3.Connection
_MAX = 2**63 - 1
_BATCH = 500  # ids per IN (...) query, well under SQLite's variable limit

_UPSERT = (
    "INSERT INTO records (governor, kind, id, version, data, machine, state) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (governor, kind, id) DO UPDATE SET version = excluded.version, "
    "data = excluded.data, machine = excluded.machine, state = excluded.state"
)
_INSERT_EVENT = (
    "INSERT INTO events (governor, stream_id, version, event_id, ts, data) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_HEAD = "SELECT MAX(version) FROM events WHERE governor = ? AND stream_id = ?"
_VERSION = "SELECT version FROM records WHERE governor = ? AND kind = ? AND id = ?"
_HEAD_AND_STATE = (
    "SELECT (SELECT MAX(version) FROM events WHERE governor = ?1 AND stream_id = ?2), "
    "(SELECT version FROM records WHERE governor = ?1 AND kind = 'states' AND id = ?2)"
)


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


# ---------------------------------------------------------------------- records
def read_records(
    governor: str, kind: str, ids: list[str], conn: _Conn
) -> dict[str, RawRecord]:
    if len(ids) == 1:
        row = conn.execute(
            "SELECT version, data FROM records WHERE governor = ? AND kind = ? AND id = ?",
            (governor, kind, ids[0]),
        ).fetchone()
        return {} if row is None else {ids[0]: RawRecord(row[0], row[1])}
    found: dict[str, RawRecord] = {}
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        marks = ", ".join("?" * len(chunk))
        for record_id, version, raw in conn.execute(
            f"SELECT id, version, data FROM records WHERE governor = ? AND kind = ? "
            f"AND id IN ({marks})",
            (governor, kind, *chunk),
        ):
            found[record_id] = RawRecord(version, raw)
    return found


def list_records(governor: str, kind: str, after: str, limit: int, conn: _Conn) -> list[str]:
    rows = conn.execute(
        "SELECT id FROM records WHERE governor = ? AND kind = ? AND id > ? ORDER BY id LIMIT ?",
        (governor, kind, after, limit),
    ).fetchall()
    return [row[0] for row in rows]


def find_states(
    governor: str,
    machine: str | None,
    state: str | None,
    after: str,
    limit: int,
    conn: _Conn,
) -> list[str]:
    """One index range scan (``records_by_machine``, ``records_by_state`` or
    ``records_by_machine_state``), already in id order."""
    where = ["governor = ?", "kind = 'states'"]
    args: list[object] = [governor]
    if machine is not None:
        where.append("machine = ?")
        args.append(machine)
    if state is not None:
        where.append("state = ?")
        args.append(state)
    rows = conn.execute(
        f"SELECT id FROM records WHERE {' AND '.join(where)} AND id > ? ORDER BY id LIMIT ?",
        (*args, after, limit),
    ).fetchall()
    return [row[0] for row in rows]


def list_governors(conn: _Conn) -> list[str]:
    """Distinct governors by index seeks (one per governor and table), not full scans."""
    governors: set[str] = set()
    for table in ("records", "events", "snapshots"):
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


# ---------------------------------------------------------------------- the commit
def commit(governor: str, prepared: list[Prepared], conn: _Conn) -> CommitResult:
    """A transaction body: read what the plan needs, decide, write (see
    :mod:`tai_fsm.stores.planning`)."""
    wanted = needs(prepared)
    current = Current()
    records = list(wanted.records)
    if len(wanted.streams) == 1 and records == [(STATES, wanted.streams[0])]:
        head, version = conn.execute(_HEAD_AND_STATE, (governor, wanted.streams[0])).fetchone()
        current.heads[wanted.streams[0]] = head or 0
        current.versions[records[0]] = version or 0
    else:
        for stream_id in wanted.streams:
            current.heads[stream_id] = conn.execute(_HEAD, (governor, stream_id)).fetchone()[0] or 0
        for kind, record_id in records:
            row = conn.execute(_VERSION, (governor, kind, record_id)).fetchone()
            current.versions[(kind, record_id)] = 0 if row is None else row[0]
    for resource in wanted.fences:
        current.fences[resource] = _fencing(conn, governor, resource)
    for stream_id, ids in wanted.ids.items():
        current.found_ids[stream_id] = _find_ids(conn, governor, stream_id, ids)
    try:
        decided = plan(governor, prepared, current)
    except VersionConflict:
        stored = {
            stream_id: [
                row[0]
                for row in conn.execute(
                    "SELECT event_id FROM events WHERE governor = ? AND stream_id = ? "
                    "AND version >= ? AND version <= ? ORDER BY version",
                    (governor, stream_id, first, last),
                )
            ]
            for stream_id, first, last in landed_ranges(prepared)
        }
        landed = recognise(prepared, stored, {})
        if landed is not None:
            return landed
        raise
    for stream_id, rows in decided.events:
        params = [(governor, stream_id, v, event_id, ts, raw) for v, event_id, ts, raw in rows]
        if len(params) == 1:
            conn.execute(_INSERT_EVENT, params[0])
        else:
            conn.executemany(_INSERT_EVENT, params)
    for kind, record_id, version, raw in decided.puts:
        machine, state = decided.index(kind, record_id)
        conn.execute(_UPSERT, (governor, kind, record_id, version, raw, machine, state))
    for kind, record_id in decided.deletes:
        conn.execute(
            "DELETE FROM records WHERE governor = ? AND kind = ? AND id = ?",
            (governor, kind, record_id),
        )
    return decided.result


def _fencing(conn: _Conn, governor: str, resource: str) -> int | None:
    row = conn.execute(
        "SELECT json_extract(data, '$.data.fencing_token') FROM records "
        "WHERE governor = ? AND kind = ? AND id = ?",
        (governor, LOCKS, resource),
    ).fetchone()
    if row is None or not isinstance(row[0], int):
        return None
    return int(row[0])


def _find_ids(conn: _Conn, governor: str, stream_id: str, ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        marks = ", ".join("?" * len(chunk))
        for event_id, version in conn.execute(
            f"SELECT event_id, version FROM events WHERE governor = ? AND stream_id = ? "
            f"AND event_id IN ({marks})",
            (governor, stream_id, *chunk),
        ):
            found[event_id] = version
    return found


# ---------------------------------------------------------------------- event streams
def event_rows(
    governor: str, stream_id: str, after: int, upper: int | None, limit: int, conn: _Conn
) -> list[tuple[int, int, bytes]]:
    return conn.execute(
        "SELECT version, ts, data FROM events WHERE governor = ? AND stream_id = ? "
        "AND version > ? AND version <= ? ORDER BY version LIMIT ?",
        (governor, stream_id, after, _MAX if upper is None else upper, limit),
    ).fetchall()


def event_versions(
    governor: str,
    stream_id: str,
    after: int,
    upper: int | None,
    cutoff: int | None,
    limit: int,
    conn: _Conn,
) -> list[int]:
    rows = conn.execute(
        "SELECT version FROM events WHERE governor = ? AND stream_id = ? "
        "AND version > ? AND version <= ? AND ts <= ? ORDER BY version LIMIT ?",
        (
            governor, stream_id, after, _MAX if upper is None else upper,
            _MAX if cutoff is None else cutoff, limit,
        ),
    ).fetchall()
    return [row[0] for row in rows]


def stream_head(governor: str, stream_id: str, conn: _Conn) -> int:
    return int(conn.execute(_HEAD, (governor, stream_id)).fetchone()[0] or 0)


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


def load_snapshot(
    governor: str, stream_id: str, limit: int | None, conn: _Conn
) -> tuple[int, bytes] | None:
    row = conn.execute(
        "SELECT version, data FROM snapshots WHERE governor = ? AND stream_id = ? "
        "AND version <= ? ORDER BY version DESC LIMIT 1",
        (governor, stream_id, _MAX if limit is None else limit),
    ).fetchone()
    return None if row is None else (row[0], row[1])


def snapshot_versions(governor: str, stream_id: str, conn: _Conn) -> list[int]:
    rows = conn.execute(
        "SELECT version FROM snapshots WHERE governor = ? AND stream_id = ? ORDER BY version",
        (governor, stream_id),
    ).fetchall()
    return [row[0] for row in rows]


def compact(
    governor: str,
    stream_id: str,
    cut: int,
    last: int,
    rewrite: EventRow | None,
    conn: _Conn,
) -> CleanupResult:
    """A transaction body: see ``Store._compact``."""
    key = (governor, stream_id)
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
    dropped_events, event_bytes = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM events "
        "WHERE governor = ? AND stream_id = ? AND version <= ?",
        (*key, last),
    ).fetchone()
    if dropped_events and rewrite is not None:
        version, _event_id, _ts, raw = rewrite
        old = conn.execute(
            "SELECT LENGTH(data) FROM events WHERE governor = ? AND stream_id = ? AND version = ?",
            (*key, version),
        ).fetchone()
        if old is not None:
            conn.execute(
                "UPDATE events SET data = ? WHERE governor = ? AND stream_id = ? AND version = ?",
                (raw, *key, version),
            )
            event_bytes -= len(raw) - old[0]
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
    "(SELECT COUNT(*) FROM records WHERE governor = :g AND kind = 'states'), "
    "(SELECT COUNT(*) FROM events WHERE governor = :g), "
    "(SELECT COUNT(*) FROM snapshots WHERE governor = :g), "
    "(SELECT MAX(version) FROM records WHERE governor = :g AND kind = 'states'), "
    "(SELECT MAX(version) FROM events WHERE governor = :g), "
    "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM records WHERE governor = :g) + "
    "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM events WHERE governor = :g) + "
    "(SELECT COALESCE(SUM(LENGTH(data)), 0) FROM snapshots WHERE governor = :g)"
)
_STATS_ALL = _STATS_ONE.replace("governor = :g AND ", "").replace(" WHERE governor = :g", "")


def stats(governor: str | None, conn: _Conn) -> StoreStats:
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


# ---------------------------------------------------------------------- maintenance
def _disk_size(path: str) -> int:
    """Bytes the store takes on disk: the file and its write-ahead log."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.path.getsize(path + suffix)
        except OSError:
            pass
    return total


def vacuum(path: str, conn: _Conn) -> tuple[int, int]:
    """Rebuild the file without its free pages (``VACUUM``) and empty the write-ahead log;
    ``(bytes on disk before, after)``. Runs outside any transaction; other connections may
    keep reading meanwhile (a reader holding an old snapshot can keep the log from being
    emptied: the sizes say what was actually freed)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _disk_size(path)
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return before, _disk_size(path)
