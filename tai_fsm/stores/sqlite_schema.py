"""The SQLite file format of ``SQLiteStore``: connection settings, schema, error mapping.

Tables follow the logical model of DESIGN.md §3, keyed the same way::

    records(governor, kind, id, version, data, machine, state)
                                                         PRIMARY KEY (governor, kind, id)
    events(governor, stream_id, version, event_id, ts, data)
                                                         PRIMARY KEY (governor, stream_id, version)
    snapshots(governor, stream_id, version, data)        PRIMARY KEY (governor, stream_id, version)
    schema_version(version)

``kind`` is ``states`` for state records (``locks`` for lock leases, ...). ``data`` is
the record's stored JSON (:mod:`tai_fsm.stores.recordcodec`) as a BLOB, ``ts`` the event
timestamp in microseconds since the epoch (UTC) for ``until=`` filters. ``machine`` and
``state`` are a state record's query index fields (:mod:`tai_fsm.stores.query`), written
with the record; three partial indexes on state records answer ``find_states`` by machine,
by state, or both, in id order. Two writers of
the same event version collide on the primary key; the store checks versions inside
``BEGIN IMMEDIATE`` transactions, so several processes may share one file.

The schema is created on first open. A file written by a newer tai-fsm (a higher
``schema_version``) is refused with ``InvalidInput``: opening it could corrupt it.

Schema history: 1 — a pre-release (events held both states; refused, re-create the store);
2 — the first release; 3 — adds ``records.machine`` / ``records.state`` and their indexes.
A schema-2 file is migrated in place when it is opened for writing (one ``BEGIN
IMMEDIATE`` transaction: add the columns, fill them from every state record, create the
indexes; concurrent openers wait and then see schema 3). Stop processes running an older
tai-fsm first: they would keep writing records without the index fields. A schema-2 file
opened ``read_only`` is read as it is; its queries then scan instead of using the index.
"""

from __future__ import annotations

import os
import resource
import sqlite3
from pathlib import Path
from urllib.parse import quote

from tai_fsm.errors import (
    IntegrityError,
    InvalidInput,
    StoreFailure,
    StoreUnavailable,
    TaiFsmError,
)
from tai_fsm.stores.query import index_of_raw

__all__ = [
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "connect",
    "map_error",
    "schema_version",
]

SCHEMA_VERSION = 3
#: Oldest schema this tai-fsm migrates in place.
MIGRATES_FROM = 2
SYNCHRONOUS_MODES = ("NORMAL", "FULL", "EXTRA")

_TABLES = ("events", "records", "schema_version", "snapshots")

_DDL = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE records (
        governor TEXT NOT NULL,
        kind     TEXT NOT NULL,
        id       TEXT NOT NULL,
        version  INTEGER NOT NULL,
        data     BLOB NOT NULL,
        machine  TEXT,
        state    TEXT,
        PRIMARY KEY (governor, kind, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE events (
        governor  TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        version   INTEGER NOT NULL,
        event_id  TEXT NOT NULL,
        ts        INTEGER NOT NULL,
        data      BLOB NOT NULL,
        PRIMARY KEY (governor, stream_id, version)
    ) WITHOUT ROWID""",
    "CREATE INDEX events_by_event_id ON events (governor, stream_id, event_id)",
    """CREATE TABLE snapshots (
        governor  TEXT NOT NULL,
        stream_id TEXT NOT NULL,
        version   INTEGER NOT NULL,
        data      BLOB NOT NULL,
        PRIMARY KEY (governor, stream_id, version)
    ) WITHOUT ROWID""",
)

#: The query indexes of schema 3 (partial: only state records are indexed).
_INDEXES = (
    "CREATE INDEX records_by_machine ON records (governor, machine, id) "
    "WHERE kind = 'states'",
    "CREATE INDEX records_by_state ON records (governor, state, id) WHERE kind = 'states'",
    "CREATE INDEX records_by_machine_state ON records (governor, machine, state, id) "
    "WHERE kind = 'states'",
)


def check_synchronous(value: object) -> str:
    """``NORMAL``, ``FULL`` or ``EXTRA`` (any case), else ``InvalidInput``."""
    mode = value.upper() if isinstance(value, str) else ""
    if mode not in SYNCHRONOUS_MODES:
        raise InvalidInput(
            f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {value!r}",
            field="synchronous",
            value=value,
        )
    return mode


def connect(
    path: str,
    *,
    synchronous: str,
    busy_timeout: float,
    create: bool = True,
    read_only: bool = False,
) -> sqlite3.Connection:
    """Open ``path`` (creating parent folders and the schema if needed) in WAL mode with the
    given ``synchronous`` level and busy timeout (seconds). The connection is in autocommit
    mode (``isolation_level=None``): the store issues its own ``BEGIN``/``COMMIT``.

    ``create=False``: a missing or empty file is ``StoreFailure("missing")`` — "no store at
    PATH" — and nothing is created (no folder, no file). ``read_only=True`` implies it and
    opens the file read-only, also on a read-only medium."""
    memory = path == ":memory:" or path.startswith("file::memory:")
    if (not create or read_only) and not memory:
        try:
            size = os.path.getsize(path)
        except OSError:
            size = -1
        if size <= 0:
            state = "an empty file" if size == 0 else "no such file"
            raise StoreFailure(f"no store at {path} ({state})", condition="missing")
    if read_only and not memory:
        return _connect_read_only(path, busy_timeout)
    if not memory:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the folder for SQLite file {path}: {exc}"
            ) from None
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
    except sqlite3.Error as exc:
        raise map_error(exc, path, busy_timeout) from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(busy_timeout * 1000))}")
        mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        if mode != "wal" and not memory:
            raise StoreUnavailable(f"SQLite file {path} could not switch to WAL (mode {mode})")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        _ensure_schema(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise map_error(exc, path, busy_timeout) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: str, busy_timeout: float) -> sqlite3.Connection:
    """A read-only connection. A WAL database needs its ``-shm`` file even for reading; on a
    read-only medium that cannot be created, so the file is then opened as immutable (safe:
    nothing can write to a read-only medium)."""
    uri = f"file:{quote(os.path.abspath(path))}"
    last: sqlite3.Error | None = None
    for flags in ("?mode=ro", "?mode=ro&immutable=1"):
        try:
            conn = sqlite3.connect(
                uri + flags, uri=True, timeout=busy_timeout, isolation_level=None,
                check_same_thread=False, cached_statements=256,
            )
        except sqlite3.Error as exc:
            last = exc
            continue
        try:
            _check_schema(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            last = exc
            continue
        except BaseException:
            conn.close()
            raise
        return conn
    assert last is not None
    raise map_error(last, path, busy_timeout) from None


def _ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    if not _has_table(conn, "schema_version"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _has_table(conn, "schema_version"):  # another process may have won
                foreign = [
                    name
                    for (name,) in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite_%'"
                    )
                ]
                if foreign:
                    raise InvalidInput(
                        f"{path} is a SQLite database but not a tai-fsm store (it has tables "
                        f"{', '.join(sorted(foreign))} and no schema_version table)",
                        field="path",
                        value=path,
                    )
                for statement in (*_DDL, *_INDEXES):
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    if _check_schema(conn, path) < SCHEMA_VERSION:
        _migrate(conn, path)
        _check_schema(conn, path)


def _index_field(raw: object, which: int) -> str | None:
    """SQL function of the migration: index field ``which`` (0 machine, 1 state) of a
    stored state record — the same rule as every write (:func:`query.index_of_raw`)."""
    if not isinstance(raw, bytes):
        return None
    return index_of_raw(raw)[which]


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Schema 2 -> 3 in one ``BEGIN IMMEDIATE`` transaction (all or nothing; a concurrent
    opener waits for the write lock, then finds schema 3 and does nothing)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if schema_version(conn) == MIGRATES_FROM:
            columns = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
            for name in ("machine", "state"):
                if name not in columns:
                    conn.execute(f"ALTER TABLE records ADD COLUMN {name} TEXT")
            conn.create_function("tai_index_field", 2, _index_field, deterministic=True)
            conn.execute(
                "UPDATE records SET machine = tai_index_field(data, 0), "
                "state = tai_index_field(data, 1) WHERE kind = 'states'"
            )
            for statement in _INDEXES:
                conn.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.create_function("tai_index_field", 2, None)


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's schema version (``MAX(version)`` of ``schema_version``; 0 if unreadable)."""
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    found = row[0] if row else None
    return found if isinstance(found, int) else 0


def _check_schema(conn: sqlite3.Connection, path: str) -> int:
    """The schema version of a tai-fsm file this tai-fsm can open (3, or 2 to migrate or
    read as it is); ``InvalidInput`` / ``IntegrityError`` for anything else."""
    if not _has_table(conn, "schema_version"):
        raise InvalidInput(
            f"{path} is a SQLite database but not a tai-fsm store (no schema_version table)",
            field="path",
            value=path,
        )
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    found = row[0] if row else None
    if not isinstance(found, int):
        raise IntegrityError(f"{path}: the schema_version table is empty or corrupt ({found!r})")
    if found > SCHEMA_VERSION:
        raise InvalidInput(
            f"{path} has tai-fsm schema version {found}, newer than this tai-fsm supports "
            f"({SCHEMA_VERSION}); upgrade tai-fsm to open it",
            field="path",
            value=path,
        )
    if found < MIGRATES_FROM:  # schema 1 was a pre-release: events held both states
        raise InvalidInput(
            f"{path} has tai-fsm schema version {found}, written by a pre-release of tai-fsm "
            f"that stored events differently; this tai-fsm reads schema {SCHEMA_VERSION}. "
            "Re-create the store (export it with the old version first if you need its history)",
            field="path",
            value=path,
        )
    missing = [name for name in _TABLES if not _has_table(conn, name)]
    if missing:
        raise IntegrityError(f"{path}: tai-fsm tables missing: {', '.join(missing)}")
    return found


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def map_error(exc: sqlite3.Error, path: str, busy_timeout: float) -> TaiFsmError:
    """The ``TaiFsmError`` for a ``sqlite3`` error.

    * busy / locked (another connection held the write lock past the busy timeout) ->
      ``StoreUnavailable`` (transient: retry with backoff);
    * read-only file or medium, disk full, the process's file-size limit, a file that cannot
      be opened, other I/O errors -> ``StoreFailure`` naming the condition (permanent:
      retrying cannot help);
    * a damaged file (not a database, malformed image, missing table, constraint broken)
      -> ``IntegrityError``;
    * other operational errors -> ``StoreUnavailable``; anything else -> ``TaiFsmError``."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc)
    lowered = text.lower()
    where = f"SQLite file {path}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in lowered or (
        not name and ("locked" in lowered or "busy" in lowered)
    ):
        return StoreUnavailable(
            f"{where} is locked by another writer (waited {busy_timeout:g}s): {text}"
        )
    if name.startswith("SQLITE_READONLY") or "readonly" in lowered or "read-only" in lowered:
        return StoreFailure(
            f"{where}: the file is read-only (permissions, a read-only mount, or opened "
            f"read-only); nothing was written ({text})",
            condition="read_only",
        )
    if name == "SQLITE_FULL" or "disk is full" in lowered:
        return _full(path, where, text)
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in lowered:
        return _io_failure(path, where, text)
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in lowered:
        return StoreFailure(f"{where} cannot be opened: {text}", condition="cannot_open")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in lowered:
        return IntegrityError(f"{where} is damaged or not a tai-fsm store: {text}")
    if isinstance(exc, sqlite3.OperationalError) and not (
        "no such table" in lowered or "no such column" in lowered
    ):
        return StoreUnavailable(f"{where}: {text}")
    if isinstance(exc, sqlite3.DatabaseError):
        return IntegrityError(f"{where} is damaged or not a tai-fsm store: {text}")
    return TaiFsmError(f"{where}: {text}")


def _file_limit_reached(path: str) -> bool:
    soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft == resource.RLIM_INFINITY:
        return False
    sizes = []
    for suffix in ("", "-wal", "-journal"):
        try:
            sizes.append(os.path.getsize(path + suffix))
        except OSError:
            pass
    return any(size + 65_536 >= soft for size in sizes)


def _disk_full(path: str) -> bool:
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < 1_048_576


def _full(path: str, where: str, text: str) -> StoreFailure:
    if _file_limit_reached(path):
        return StoreFailure(
            f"{where}: the file reached the process's file-size limit (ulimit -f); nothing "
            f"was written ({text})",
            condition="file_too_large",
        )
    return StoreFailure(
        f"{where}: the disk is full; nothing was written ({text})", condition="disk_full"
    )


def _io_failure(path: str, where: str, text: str) -> StoreFailure:
    """SQLite reports ENOSPC and EFBIG on some paths as a plain I/O error: tell them apart."""
    if _file_limit_reached(path) or _disk_full(path):
        return _full(path, where, text)
    return StoreFailure(f"{where}: disk I/O error ({text})", condition="io_error")
