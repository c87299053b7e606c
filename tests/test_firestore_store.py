"""Firestore-specific behaviour of ``FirestoreStore``, on Google's emulator (never a mock).

The shared contract suite (``tai_fsm.testing.contract``) covers the Store contract on every
backend; these tests cover what only Firestore has: RPCs per operation, the ``update_time``
precondition that stops a stale writer over a compaction-freed key, the key layout, prefix
isolation, limits checked before sending, and the mapping of real emulator errors.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.firestore import AsyncClient

from tai_fsm.errors import (
    InvalidInput,
    OperationTimeout,
    SerializationError,
    StateNotFound,
    StoreUnavailable,
    VersionConflict,
)
from tai_fsm.records import AppendResult, ChangeMetadata, Event, StateSnapshot
from tai_fsm.stores import firestore as firestore_module
from tai_fsm.stores.firestore import FirestoreStore
from tai_fsm.stores.firestore_codec import (
    Token,
    event_key,
    snapshot_key,
    stream_of_key,
    stream_range,
)
from tai_fsm.stores.firestore_errors import FirestoreRequestFailed, translate
from tai_fsm.stores.url import open_store
from tai_fsm.testing import emulator as emulator_module
from tai_fsm.testing.backends import EMULATOR_PROJECT
from tai_fsm.testing.emulator import EmulatorError, FirestoreEmulator, find_emulator_jar

pytestmark = pytest.mark.firestore

GOV = "fs"
_RPCS = (
    "commit",
    "batch_get_documents",
    "get_document",
    "run_query",
    "run_aggregation_query",
    "list_documents",
    "begin_transaction",
)


@pytest.fixture
async def fs(firestore_emulator: str) -> AsyncIterator[FirestoreStore]:
    store = FirestoreStore(project=EMULATOR_PROJECT, prefix=f"f{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        await store.drop_all()
        await store.close()


class RPCs:
    """Counts the gRPC calls a store makes by wrapping its client's API methods (the calls
    still go to the emulator)."""

    def __init__(self, store: FirestoreStore) -> None:
        self.api = store.client._firestore_api
        self.calls: Counter[str] = Counter()
        self._saved: dict[str, Any] = {}

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted

    def __enter__(self) -> RPCs:
        for name in _RPCS:
            self._saved[name] = getattr(self.api, name)
            setattr(self.api, name, self._wrap(name, self._saved[name]))
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        for name, method in self._saved.items():
            setattr(self.api, name, method)

    def total(self) -> int:
        return sum(self.calls.values())


def _event(stream: str, n: int, *, event_id: str | None = None, data: Any = None) -> Event:
    return Event(
        id=event_id or f"e{n}-{uuid.uuid4().hex[:12]}",
        action="step",
        from_state=StateSnapshot(id=stream, data={"n": n - 1}, version=n - 1),
        to_state=StateSnapshot(id=stream, data={"n": n} if data is None else data, version=n),
        metadata=ChangeMetadata(changed_by="test"),
    )


async def _commit(
    store: FirestoreStore, stream: str, n: int, token: str | None = None
) -> AppendResult:
    """The runtime's commit of transition n: event + state record, with the last token."""
    event = _event(stream, n)
    return await store.append_events(
        GOV, stream, [event], expected_version=n - 1, state=event.to_state, token=token
    )


async def _versions(store: FirestoreStore, stream: str) -> list[int]:
    return [e.version async for e in store.read_events(GOV, stream)]


async def _key_exists(store: FirestoreStore, collection: str, key: str) -> bool:
    ref = store.client.collection(f"{store.prefix}governors", GOV, collection).document(key)
    return bool((await ref.get()).exists)


# ---------------------------------------------------------------------- one round trip
async def test_one_commit_rpc_per_transition_when_the_token_is_current(
    fs: FirestoreStore,
) -> None:
    with RPCs(fs) as rpc:
        result = await _commit(fs, "m", 1)  # creation: exists=False precondition, no read
    assert rpc.calls == {"commit": 1}
    for n in range(2, 7):
        with RPCs(fs) as rpc:
            result = await _commit(fs, "m", n, token=result.token)
        assert rpc.calls == {"commit": 1}, f"transition {n}"
        assert result.version == n and not result.already_applied
    stored = await fs.read_state(GOV, "m")
    assert stored.version == 6 and stored.token == result.token
    with RPCs(fs) as rpc:  # the token from a read works the same way
        await _commit(fs, "m", 7, token=stored.token)
    assert rpc.calls == {"commit": 1}


async def test_without_a_token_the_commit_reads_the_state_first(fs: FirestoreStore) -> None:
    await _commit(fs, "m", 1)
    with RPCs(fs) as rpc:
        result = await _commit(fs, "m", 2, token=None)
    assert rpc.calls["commit"] == 1 and rpc.total() == 2
    assert result.version == 2 and Token.parse(result.token) is not None


async def test_token_keeps_nanoseconds_and_the_version(fs: FirestoreStore) -> None:
    result = await _commit(fs, "t", 1)
    token = Token.parse(result.token)
    assert token is not None and token.version == 1
    assert str(token) == result.token
    assert token.update_time.timestamp_pb().nanos == token.nanos


# ---------------------------------------------------------------------- concurrency
async def test_stale_writer_over_a_compaction_freed_key_is_refused(fs: FirestoreStore) -> None:
    tokens: dict[int, str | None] = {0: None}
    for n in range(1, 6):
        tokens[n] = (await _commit(fs, "s", n, token=tokens[n - 1])).token
    await fs.save_snapshot(GOV, "s", StateSnapshot(id="s", data={"n": 5}, version=5))
    done = await fs.compact_stream(GOV, "s", up_to_version=5)
    assert done.deleted_events == 4
    assert not await _key_exists(fs, "events", event_key("s", 3))  # the key is free again
    stale = _event("s", 3)
    with pytest.raises(VersionConflict) as caught:
        await fs.append_events(
            GOV, "s", [stale], expected_version=2, state=stale.to_state, token=tokens[2]
        )
    assert (caught.value.expected, caught.value.actual) == (2, 5)
    assert not await _key_exists(fs, "events", event_key("s", 3))  # nothing was written
    assert await _versions(fs, "s") == [5]
    assert (await fs.read_state(GOV, "s")).version == 5
    # the same stale writer without a token, and an append without a state record
    with pytest.raises(VersionConflict):
        await fs.append_events(GOV, "s", [stale], expected_version=2, state=stale.to_state)
    with pytest.raises(VersionConflict) as bare:
        await fs.append_events(GOV, "s", [stale], expected_version=2)
    assert bare.value.actual == 5
    with pytest.raises(VersionConflict):
        await fs.append_events(GOV, "s", [_event("s", 1)], expected_version=0)
    assert await _versions(fs, "s") == [5]
    assert await fs.stream_version(GOV, "s") == 5
    logged = await fs.log_event(GOV, _event("s", 6))
    assert logged.version == 6 and await _versions(fs, "s") == [5, 6]


async def test_a_retried_commit_that_landed_is_recognised(fs: FirestoreStore) -> None:
    first = await _commit(fs, "r", 1)
    event = _event("r", 2)
    landed = await fs.append_events(
        GOV, "r", [event], expected_version=1, state=event.to_state, token=first.token
    )
    with RPCs(fs) as rpc:
        again = await fs.append_events(
            GOV, "r", [event], expected_version=1, state=event.to_state, token=first.token
        )
    assert again.already_applied and again.version == 2 and again.token == landed.token
    assert rpc.calls["commit"] == 1  # the retry itself; its failure is explained by reads
    assert await _versions(fs, "r") == [1, 2]


async def test_concurrent_writers_exactly_one_wins(fs: FirestoreStore) -> None:
    first = await _commit(fs, "c", 1)
    outcomes = await asyncio.gather(
        *(_commit(fs, "c", 2, token=first.token) for _ in range(4)), return_exceptions=True
    )
    wins = [o for o in outcomes if isinstance(o, AppendResult)]
    losses = [o for o in outcomes if isinstance(o, VersionConflict)]
    assert len(wins) == 1 and len(losses) == 3
    assert all((c.expected, c.actual) == (1, 2) for c in losses)
    assert await _versions(fs, "c") == [1, 2]


async def test_concurrent_log_events_all_land_once(fs: FirestoreStore) -> None:
    events = [_event("l", 1, event_id=f"l-{i}") for i in range(6)]
    logged = await asyncio.gather(*(fs.log_event(GOV, e) for e in events))
    assert sorted(e.version for e in logged) == [1, 2, 3, 4, 5, 6]
    again = await fs.log_event(GOV, events[0])  # a retry: recognised by its id
    assert again.version == next(e.version for e in logged if e.id == "l-0")
    assert await _versions(fs, "l") == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------------- layout
async def test_keys_order_streams_by_id_then_version(fs: FirestoreStore) -> None:
    ids = ["b", "a", "a:b", "ab", "日本", "\U0001f600", "\ufffd", "x" * 512]
    for stream in ids:
        for n in (1, 2):
            await fs.log_event(GOV, _event(stream, n))
    assert await fs.list_streams(GOV) == sorted(ids)
    order = [(e.stream_id, e.version) async for e in fs.iter_all_events(GOV, batch_size=3)]
    assert order == sorted((s, v) for s in ids for v in (1, 2))
    for stream in ids:
        first, after = stream_range(stream)
        assert first <= event_key(stream, 1) < event_key(stream, 2) < after
        assert stream_of_key(event_key(stream, 7)) == stream
        assert snapshot_key(stream, 9) < snapshot_key(stream, 2)  # newest first
        assert len(event_key(stream, 1).encode()) <= 1500


async def test_list_streams_skips_across_pages(
    fs: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(firestore_module, "_LIST_PAGE", 2)
    for stream in ("p1", "p2", "p3", "p4", "p5"):
        for n in (1, 2, 3):
            await fs.log_event(GOV, _event(stream, n))
    assert await fs.list_streams(GOV) == ["p1", "p2", "p3", "p4", "p5"]


async def test_reads_use_one_query_per_batch(fs: FirestoreStore) -> None:
    events = [_event("big", n) for n in range(1, 8)]
    await fs.append_events(GOV, "big", events, expected_version=0)
    with RPCs(fs) as rpc:
        got = [e.version async for e in fs.read_events(GOV, "big", batch_size=3)]
    assert got == [1, 2, 3, 4, 5, 6, 7] and rpc.calls == {"run_query": 3}
    with RPCs(fs) as rpc:
        got = [
            e.version async for e in fs.read_events(GOV, "big", after_version=2, up_to_version=5)
        ]
    assert got == [3, 4, 5] and rpc.calls == {"run_query": 1}


async def test_batch_read_and_snapshot_reads_are_single_rpcs(fs: FirestoreStore) -> None:
    for sid in ("a", "b", "c"):
        await _commit(fs, sid, 1)
    for version in (3, 6, 9):
        await fs.save_snapshot(GOV, "a", StateSnapshot(id="a", data=version, version=version))
    with RPCs(fs) as rpc:
        found = await fs.batch_read_states(GOV, ["a", "b", "c", "nope"])
    assert sorted(found) == ["a", "b", "c"] and rpc.calls == {"batch_get_documents": 1}
    with RPCs(fs) as rpc:
        newest = await fs.load_snapshot(GOV, "a")
        older = await fs.load_snapshot(GOV, "a", at_or_before=8)
        none = await fs.load_snapshot(GOV, "a", at_or_before=2)
    assert newest is not None and newest.version == 9
    assert older is not None and older.version == 6 and none is None
    assert rpc.calls == {"run_query": 3}


# ---------------------------------------------------------------------- isolation and URLs
async def test_prefixes_isolate_stores_sharing_a_database(firestore_emulator: str) -> None:
    one = FirestoreStore(project=EMULATOR_PROJECT, prefix=f"i{uuid.uuid4().hex[:8]}_")
    two = FirestoreStore(project=EMULATOR_PROJECT, prefix=f"j{uuid.uuid4().hex[:8]}_")
    try:
        await one.save_state(GOV, "same", StateSnapshot(id="same", data="one"))
        await two.save_state(GOV, "same", StateSnapshot(id="same", data="two"))
        await two.save_state(GOV, "same", StateSnapshot(id="same", data="two again"))
        await one.log_event("other", _event("x", 1))
        assert (await one.get_state(GOV, "same"))[0].data == "one"
        assert (await two.get_state(GOV, "same"))[1] == 2
        assert await one.list_governors() == ["fs", "other"]
        assert await two.list_governors() == ["fs"]
        assert (await two.get_stats()).total_events == 0
        assert await one.drop_all() == 2
        assert await one.list_governors() == []
        assert (await two.get_state(GOV, "same"))[0].data == "two again"
    finally:
        await one.drop_all()
        await two.drop_all()
        await one.close()
        await two.close()


async def test_open_store_firestore_url(firestore_emulator: str) -> None:
    prefix = f"u{uuid.uuid4().hex[:8]}"
    store = open_store(f"firestore://{EMULATOR_PROJECT}?prefix={prefix}")
    assert isinstance(store, FirestoreStore)
    assert (store.project, store.database, store.prefix) == (EMULATOR_PROJECT, "(default)", prefix)
    assert store.url == f"firestore://{EMULATOR_PROJECT}?prefix={prefix}"
    try:
        assert await store.save_state(GOV, "u", StateSnapshot(id="u")) == 1
        assert await store.exists(GOV, "u")
    finally:
        await store.drop_all()
        await store.close()
    named = open_store("firestore://proj/other-db")
    assert isinstance(named, FirestoreStore)
    assert (named.database, named.prefix, named.url) == (
        "other-db",
        "",
        "firestore://proj/other-db",
    )
    await named.close()


# ---------------------------------------------------------------------- limits, before sending
async def test_batches_over_500_writes_are_refused_before_sending(fs: FirestoreStore) -> None:
    events = [_event("huge", n) for n in range(1, 500)]  # 499 events + state = 500 writes...
    with RPCs(fs) as rpc, pytest.raises(InvalidInput, match="500"):
        # ... plus the head check: over the limit
        await fs.append_events(GOV, "huge", events, expected_version=0, state=events[-1].to_state)
    assert rpc.total() == 0
    fits = events[:498]
    result = await fs.append_events(GOV, "huge", fits, expected_version=0, state=fits[-1].to_state)
    assert result.version == 498


async def test_records_over_1_mib_are_refused_before_sending(fs: FirestoreStore) -> None:
    big = _event("fat", 1, data={"blob": "x" * 1_100_000})
    with RPCs(fs) as rpc:
        with pytest.raises(SerializationError, match="limit"):
            await fs.append_events(GOV, "fat", [big], expected_version=0, state=big.to_state)
        with pytest.raises(SerializationError):
            await fs.save_state(GOV, "fat", big.to_state)
        with pytest.raises(SerializationError):
            await fs.save_snapshot(GOV, "fat", big.to_state.model_copy(update={"version": 1}))
    assert rpc.calls["commit"] == 0
    assert not await fs.exists(GOV, "fat") and await fs.stream_version(GOV, "fat") == 0


async def test_invalid_ids_are_refused_before_any_rpc(fs: FirestoreStore) -> None:
    with RPCs(fs) as rpc:
        for bad in ("", "a/b", ".", "..", "__x__", "x" * 513, "tab\there"):
            with pytest.raises(InvalidInput):
                await fs.save_state(GOV, bad, StateSnapshot(id="x"))
            with pytest.raises(InvalidInput):
                await fs.append_events(bad, "s", [_event("s", 1)], expected_version=0)
    assert rpc.total() == 0
    with pytest.raises(InvalidInput):
        FirestoreStore(project=EMULATOR_PROJECT, prefix="a/b")


# ---------------------------------------------------------------------- errors
async def test_real_emulator_errors_map_onto_the_error_tree(fs: FirestoreStore) -> None:
    # precondition failures: VersionConflict / StateNotFound with the real numbers
    await fs.save_state(GOV, "e", StateSnapshot(id="e"))
    with pytest.raises(VersionConflict) as exists:
        await fs.write_state(GOV, "e", StateSnapshot(id="e"), expected_version=0)
    assert (exists.value.expected, exists.value.actual) == (0, 1)
    with pytest.raises(StateNotFound):
        await fs.delete_state(GOV, "missing")
    first = await _commit(fs, "e2", 1)
    await _commit(fs, "e2", 2, token=first.token)
    stale = _event("e2", 2)
    with pytest.raises(VersionConflict) as failed:
        await fs.append_events(
            GOV, "e2", [stale], expected_version=1, state=stale.to_state, token=first.token
        )
    assert failed.value.actual == 2
    # errors raised by the emulator itself, translated
    col = fs.client.collection(f"{fs.prefix}governors", GOV, "events")
    with pytest.raises(gexc.InvalidArgument) as invalid:
        await col.order_by("__name__").count().sum("size").get()
    assert isinstance(translate(invalid.value, "query"), InvalidInput)
    ref = fs.client.collection(f"{fs.prefix}contended").document("doc")
    await ref.set({"n": 0})
    one, two = fs.client.transaction(max_attempts=1), fs.client.transaction(max_attempts=1)
    await one._begin()
    await two._begin()
    await ref.get(transaction=one)
    await ref.get(transaction=two)
    one.update(ref, {"n": 1})
    two.update(ref, {"n": 2})
    results = await asyncio.gather(one._commit(), two._commit(), return_exceptions=True)
    aborted = [r for r in results if isinstance(r, gexc.Aborted)]
    assert aborted  # the emulator aborts one or both after its ~2 s lock wait
    mapped = translate(aborted[0], "commit")
    assert isinstance(mapped, StoreUnavailable) and mapped.is_transient()


async def test_an_unreachable_server_is_a_transient_error(firestore_emulator: str) -> None:
    saved = os.environ["FIRESTORE_EMULATOR_HOST"]
    os.environ["FIRESTORE_EMULATOR_HOST"] = "127.0.0.1:1"  # nothing listens there
    try:
        client = AsyncClient(project=EMULATOR_PROJECT)
    finally:
        os.environ["FIRESTORE_EMULATOR_HOST"] = saved
    with pytest.raises(gexc.ServiceUnavailable) as caught:
        await client.collection("x").document("y").get(retry=None, timeout=5)
    mapped = translate(caught.value, "read")
    assert isinstance(mapped, StoreUnavailable) and mapped.is_transient()
    await client._firestore_api.transport.close()


@pytest.mark.parametrize(
    ("google_error", "ours", "transient"),
    [
        (gexc.Aborted("x"), StoreUnavailable, True),
        (gexc.ServiceUnavailable("x"), StoreUnavailable, True),
        (gexc.ResourceExhausted("x"), StoreUnavailable, True),
        (gexc.InternalServerError("x"), StoreUnavailable, True),
        (gexc.DeadlineExceeded("x"), OperationTimeout, True),
        (gexc.RetryError("gave up", None), OperationTimeout, True),
        (gexc.InvalidArgument("x"), InvalidInput, False),
        (gexc.PermissionDenied("x"), FirestoreRequestFailed, False),
        (gexc.Unauthenticated("x"), FirestoreRequestFailed, False),
        (gexc.FailedPrecondition("The query requires an index"), FirestoreRequestFailed, False),
    ],
)
def test_error_table(google_error: Exception, ours: type[Exception], transient: bool) -> None:
    mapped = translate(google_error, "call")
    assert type(mapped) is ours
    assert mapped.is_transient() is transient


def test_token_parsing_rejects_foreign_tokens() -> None:
    assert Token.parse(None) is None and Token.parse("") is None
    assert Token.parse("garbage") is None and Token.parse("1@x.y") is None
    token = Token(3, 1_700_000_000, 123_456_789)
    assert Token.parse(str(token)) == token
    assert token.update_time.timestamp_pb().seconds == 1_700_000_000
    assert datetime.fromtimestamp(1_700_000_000, UTC) <= token.update_time


# ---------------------------------------------------------------------- the emulator itself
def test_emulator_runs_as_our_own_pid_and_restores_the_environment() -> None:
    before = os.environ.get("FIRESTORE_EMULATOR_HOST")
    emulator = FirestoreEmulator(export=True)
    with emulator:
        pid = emulator.pid
        assert pid is not None and os.path.exists(f"/proc/{pid}")
        assert os.environ["FIRESTORE_EMULATOR_HOST"] == emulator.host
        assert emulator.host.startswith("127.0.0.1:")
    assert emulator.pid is None
    assert os.environ.get("FIRESTORE_EMULATOR_HOST") == before
    assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped


def test_a_missing_jar_fails_loudly_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAI_FSM_FIRESTORE_JAR", raising=False)
    monkeypatch.setattr(emulator_module.shutil, "which", lambda name: None)  # no dpkg
    with pytest.raises(EmulatorError, match="google-cloud-cli-firestore-emulator"):
        find_emulator_jar()
    with pytest.raises(EmulatorError, match="google-cloud-cli-firestore-emulator"):
        FirestoreEmulator().start()
    monkeypatch.setenv("TAI_FSM_FIRESTORE_JAR", "/nonexistent/emulator.jar")
    with pytest.raises(EmulatorError, match="TAI_FSM_FIRESTORE_JAR"):
        find_emulator_jar()
