"""The store contract suite (tai_fsm.testing.contract), unchanged, against ReplicatedStore:
a memory primary with a memory replica, a SQLite file primary with a SQLite file replica,
and (marked ``firestore``) a Firestore-emulator primary with a SQLite file replica. After
every test the replica must hold exactly what the primary holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from replicated_support import dump

from tai_fsm.consistency.replicated import ReplicatedStore
from tai_fsm.errors import IntegrityError
from tai_fsm.stores.base import Store
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.testing.backends import open_backend
from tai_fsm.testing.contract import *  # noqa: F403


@pytest.fixture(params=[
    "memory+memory",
    "sqlite+sqlite",
    pytest.param("firestore+sqlite", marks=pytest.mark.firestore),
])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReplicatedStore]:
    tag = uuid.uuid4().hex[:8]
    async with AsyncExitStack() as stack:
        if request.param == "memory+memory":
            primary: Store = await stack.enter_async_context(MemoryStore())
            replica: Store = await stack.enter_async_context(MemoryStore())
        elif request.param == "sqlite+sqlite":
            primary = await stack.enter_async_context(SQLiteStore(tmp_path / f"p-{tag}.db"))
            replica = await stack.enter_async_context(SQLiteStore(tmp_path / f"r-{tag}.db"))
        else:
            request.getfixturevalue("firestore_emulator")  # cleared and closed on exit
            primary = await stack.enter_async_context(open_backend("firestore", tmp_path))
            replica = await stack.enter_async_context(SQLiteStore(tmp_path / f"r-{tag}.db"))
        yield ReplicatedStore(primary, replica, own_stores=False)
        try:
            expected = await dump(primary)
        except IntegrityError:  # a test that damages the primary on purpose
            return
        assert await dump(replica) == expected, "the replica drifted from the primary"
