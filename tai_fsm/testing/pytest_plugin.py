"""pytest plugin: the ``store`` fixture, one fresh store per test for every backend.

Enable it with ``pytest_plugins = ["tai_fsm.testing.pytest_plugin"]`` in a ``conftest.py``.
``store`` is parametrized over :data:`tai_fsm.testing.backends.ALL_BACKENDS` (test ids
``memory``, ``sqlite``, ``firestore``); the ``firestore`` case is marked
``pytest.mark.firestore`` and starts (once per session) the emulator fixture
``firestore_emulator`` before opening its store. Select backends with ``-k``, e.g.
``-k "not firestore"``.

Third-party store authors run the contract suite against their own backend by defining a
``store`` fixture of their own and importing the tests::

    from tai_fsm.testing.contract import *  # noqa: F403
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tai_fsm.stores.base import Store
from tai_fsm.testing.backends import ALL_BACKENDS, open_backend
from tai_fsm.testing.emulator import firestore_emulator  # noqa: F401

__all__ = ["store", "store_backend"]


def _param(name: str) -> object:
    marks = [pytest.mark.firestore] if name == "firestore" else []
    return pytest.param(name, id=name, marks=marks)


@pytest.fixture(params=[_param(name) for name in ALL_BACKENDS])
def store_backend(request: pytest.FixtureRequest) -> str:
    """The backend name of this test case; for Firestore the emulator is running after it."""
    name: str = request.param
    if name == "firestore":
        request.getfixturevalue("firestore_emulator")
    return name


@pytest.fixture
async def store(store_backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An empty store of backend ``store_backend``, closed (and for Firestore, cleared)
    after the test."""
    async with open_backend(store_backend, tmp_path) as opened:
        yield opened
