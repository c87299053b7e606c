"""open_store(url): the URL forms of DESIGN.md §2 and clear errors for everything else."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tai_fsm.errors import InvalidInput
from tai_fsm.records import StateSnapshot
from tai_fsm.stores import open_store, parse_store_url
from tai_fsm.stores.memory import MemoryStore
from tai_fsm.stores.sqlite import SQLiteStore
from tai_fsm.stores.url import SUPPORTED_FORMS, StoreURL


async def test_memory_url_opens_a_fresh_memory_store() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    assert isinstance(first, MemoryStore) and first.url == "memory://"
    await first.save_state("g", "s", StateSnapshot(id="s"))
    assert not await second.exists("g", "s")


async def test_relative_sqlite_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///relative/path.db") as store:
        assert isinstance(store, SQLiteStore)
        await store.save_state("g", "s", StateSnapshot(id="s"))
    assert (tmp_path / "relative" / "path.db").is_file()
    async with open_store("sqlite:///tai_fsm.db") as store:
        assert store.url == "sqlite:///tai_fsm.db"
    assert (tmp_path / "tai_fsm.db").is_file()


async def test_absolute_sqlite_url_has_four_slashes(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    assert path.is_absolute()
    async with open_store(f"sqlite:///{path}") as store:
        assert isinstance(store, SQLiteStore) and store.path == str(path)
        await store.save_state("g", "s", StateSnapshot(id="s"))
    async with open_store(f"sqlite:///{path}") as store:
        assert await store.exists("g", "s")


async def test_sqlite_options_come_from_the_query_string(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/o.db?synchronous=NORMAL&busy_timeout=1.5") as s:
        assert isinstance(s, SQLiteStore)
        settings = await s.pragmas()
    assert (settings["synchronous"], settings["busy_timeout"]) == ("NORMAL", 1500)


def test_parse_store_url_forms() -> None:
    assert parse_store_url("memory://") == StoreURL("memory")
    assert parse_store_url("sqlite:///a/b.db").options == {"path": "a/b.db"}
    assert parse_store_url("sqlite:////abs/b.db").options == {"path": "/abs/b.db"}
    assert parse_store_url("SQLITE:///my%20file.db").options == {"path": "my file.db"}
    assert parse_store_url("firestore://proj") == StoreURL(
        "firestore", {"project": "proj", "database": "(default)", "prefix": ""}
    )
    assert parse_store_url("firestore://proj/db2?prefix=test-") == StoreURL(
        "firestore", {"project": "proj", "database": "db2", "prefix": "test-"}
    )


def test_firestore_url_lazily_opens_firestore_store(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class FakeFirestoreStore:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

    fake = types.ModuleType("tai_fsm.stores.firestore")
    fake.FirestoreStore = FakeFirestoreStore  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tai_fsm.stores.firestore", fake)
    store = open_store("firestore://my-project/my-db?prefix=p1")
    assert isinstance(store, FakeFirestoreStore)
    assert seen == {"project": "my-project", "database": "my-db", "prefix": "p1"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://localhost", "unknown scheme 'redis'"),
        ("postgres:///db", "unknown scheme"),
        ("", "empty"),
        ("tai_fsm.db", "missing '://'"),
        ("sqlite:tai_fsm.db", "missing '://'"),
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///folder/", "names no database file"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///x.db?synchronous=OFF", "synchronous"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout must be seconds >= 0"),
        ("sqlite:///x.db?cache=big", "unknown option 'cache'"),
        ("sqlite:///x.db?synchronous=FULL&synchronous=NORMAL", "given twice"),
        ("sqlite:///x.db#frag", "fragment"),
        ("sqlite:///my file.db", "whitespace"),
        ("memory://somewhere", "takes no path"),
        ("memory://?x=1", "takes no path"),
        ("firestore://", "project id"),
        ("firestore:///db", "project id"),
        ("firestore://p/a/b", "single path segment"),
        ("firestore://p?region=eu", "unknown option 'region'"),
    ],
)
def test_malformed_urls_raise_invalid_input_listing_the_forms(
    url: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput) as caught:
        open_store(url)
    message = str(caught.value)
    assert reason in message
    for form in SUPPORTED_FORMS:
        assert form in message
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_open_store_is_exported_from_the_stores_package() -> None:
    import tai_fsm.stores as stores

    assert stores.open_store is open_store and "open_store" in stores.__all__


def test_memory_and_sqlite_urls_never_import_the_firestore_client(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from tai_fsm.stores import open_store\n"
        "open_store('memory://')\n"
        f"open_store('sqlite:///{tmp_path}/lazy.db')\n"
        "mods = ('tai_fsm.stores.firestore', 'google.cloud.firestore')\n"
        "print(*(m in sys.modules for m in mods))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
