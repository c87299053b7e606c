"""The store contract suite (tai_fsm.testing.contract), unchanged, against ReplicatedStore:
a memory primary with a memory replica, and a SQLite file primary with a SQLite file
replica. After every test the replica must hold exactly what the primary holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from replicated_support import dump

from tai_fsm.consistency.replicated import ReplicatedStore
from tai_fsm.errors import IntegrityError
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.testing.contract import *  # noqa: F403


@pytest.fixture(params=["memory+memory", "sqlite+sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ReplicatedStore]:
    if request.param == "memory+memory":
        primary, replica = MemoryStore(), MemoryStore()
    else:
        tag = uuid.uuid4().hex[:8]
        primary = SQLiteStore(tmp_path / f"primary-{tag}.db")
        replica = SQLiteStore(tmp_path / f"replica-{tag}.db")
    replicated = ReplicatedStore(primary, replica, own_stores=False)
    try:
        yield replicated
        try:
            expected = await dump(primary)
        except IntegrityError:  # a test that damages the primary on purpose
            return
        assert await dump(replica) == expected, "the replica drifted from the primary"
    finally:
        await primary.close()
        await replica.close()
