"""Open a fresh, isolated store of each backend for tests (the contract suite's fixture
and the runtime tests use this, so one test body runs against every backend).

* ``memory`` — a new ``MemoryStore``;
* ``sqlite`` — a ``SQLiteStore`` on a real file (WAL) under the given directory;
* ``sqlite-blocking`` — a ``BlockingSQLiteStore`` (calls run on the calling thread: the
  store of the blocking runtime) on a real file;
* ``firestore`` — a ``FirestoreStore`` on the emulator named by ``FIRESTORE_EMULATOR_HOST``,
  isolated by a unique prefix (its documents are deleted afterwards).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tai_fsm.stores.base import Store

__all__ = ["ALL_BACKENDS", "EMULATOR_PROJECT", "open_backend"]

ALL_BACKENDS = ("memory", "sqlite", "sqlite-blocking", "firestore")
EMULATOR_PROJECT = "tai-fsm-test"


@asynccontextmanager
async def open_backend(name: str, directory: Path) -> AsyncIterator[Store]:
    """Yield an empty store of backend ``name``; close (and for Firestore, clear) it after."""
    if name == "memory":
        from tai_fsm.stores.memory import MemoryStore

        async with MemoryStore() as memory_store:
            yield memory_store
    elif name == "sqlite":
        from tai_fsm.stores.sqlite import SQLiteStore

        async with SQLiteStore(directory / f"store-{uuid.uuid4().hex[:8]}.db") as sqlite_store:
            yield sqlite_store
    elif name == "sqlite-blocking":
        from tai_fsm.stores.sqlite_blocking import BlockingSQLiteStore

        path = directory / f"store-{uuid.uuid4().hex[:8]}.db"
        async with BlockingSQLiteStore(path) as blocking_store:
            yield blocking_store
    elif name == "firestore":
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            raise RuntimeError(
                "FIRESTORE_EMULATOR_HOST is not set: the Firestore emulator is not running "
                "(scripts/test.sh starts it through the pytest plugin)"
            )
        from tai_fsm.stores.firestore import FirestoreStore

        prefix = f"t{uuid.uuid4().hex[:12]}"
        store = FirestoreStore(project=EMULATOR_PROJECT, prefix=prefix)
        try:
            yield store
        finally:
            await store.drop_all()
            await store.close()
    else:
        raise ValueError(f"unknown backend {name!r}; expected one of {ALL_BACKENDS}")
