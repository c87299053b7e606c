"""Firestore-specific behaviour of ``FirestoreStore``, on Google's emulator (never a mock).

The shared contract suite (``tai_fsm.testing.contract``) covers the Store contract on every
backend; these tests cover what only Firestore has: RPCs (and writes) per operation, the
preconditions that stop a stale writer — also over keys compaction freed, and where the
state record alone would let it through — unchanged writes that keep ``update_time`` (Expect,
Fence, the head check), compaction in steps that each leave a readable stream, the key
layout, prefix isolation, limits checked before sending, and the mapping of real emulator
errors.
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
    LockNotHeld,
    OperationTimeout,
    SerializationError,
    StateNotFound,
    StoreUnavailable,
    VersionConflict,
)
from tai_fsm.records import AppendResult, ChangeMetadata, Event, StateSnapshot
from tai_fsm.stores import firestore as firestore_module
from tai_fsm.stores import ops
from tai_fsm.stores.firestore import FirestoreStore
from tai_fsm.stores.firestore_codec import (
    Token,
    event_key,
    snapshot_key,
    stream_of_key,
    stream_range,
)
from tai_fsm.stores.firestore_errors import FirestoreRequestFailed, translate
from tai_fsm.stores.firestore_io import Documents
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
    "list_collection_ids",
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
    still go to the emulator); ``writes`` lists the number of writes of each commit."""

    def __init__(self, store: FirestoreStore) -> None:
        self.api = store.client._firestore_api
        self.calls: Counter[str] = Counter()
        self.writes: list[int] = []
        self._saved: dict[str, Any] = {}

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if name == "commit":
                self.writes.append(len(kwargs["request"]["writes"]))
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


# ---------------------------------------------------------------------- the head check
async def test_a_transition_commits_event_head_check_and_state_in_one_rpc(
    fs: FirestoreStore,
) -> None:
    with RPCs(fs) as rpc:
        first = await _commit(fs, "w", 1)
        await _commit(fs, "w", 2, token=first.token)
    # create: event + "compacted" marker asserted absent + state; then event + touch + state
    assert rpc.calls == {"commit": 2} and rpc.writes == [3, 3]


async def test_a_state_token_alone_does_not_let_a_writer_off_the_head(fs: FirestoreStore) -> None:
    # the state record written directly (save_state) is at 3 while the stream is empty: its
    # token is current, yet appending version 4 would leave a gap
    for n in range(3):
        await fs.save_state(GOV, "a", StateSnapshot(id="a", data=n))
    stored = await fs.read_state(GOV, "a")
    event = _event("a", 4)
    with pytest.raises(VersionConflict) as caught:
        await fs.append_events(
            GOV, "a", [event], expected_version=3, state=event.to_state, token=stored.token
        )
    assert (caught.value.expected, caught.value.actual) == (3, 0)
    assert await fs.stream_version(GOV, "a") == 0 and not await _key_exists(
        fs, "events", event_key("a", 4)
    )
    assert (await fs.read_state(GOV, "a")).token == stored.token


async def test_events_logged_without_the_state_then_compacted_stop_a_stale_token(
    fs: FirestoreStore,
) -> None:
    first = await _commit(fs, "b", 1)  # state record at 1 with its token
    for n in range(2, 6):  # events appended without the state record: the token stays
        await fs.log_event(GOV, _event("b", n))
    assert (await fs.read_state(GOV, "b")).token == first.token
    await fs.save_snapshot(GOV, "b", StateSnapshot(id="b", data={"n": 5}, version=5))
    await fs.compact_stream(GOV, "b", up_to_version=5)
    assert not await _key_exists(fs, "events", event_key("b", 2))  # free again
    with pytest.raises(VersionConflict) as caught:
        await _commit(fs, "b", 2, token=first.token)
    assert (caught.value.expected, caught.value.actual) == (1, 5)
    assert await _versions(fs, "b") == [5]


async def test_an_empty_stream_is_not_just_a_free_key_1(fs: FirestoreStore) -> None:
    for n in (1, 2, 3):
        await fs.log_event(GOV, _event("c", n))
    await fs.save_snapshot(GOV, "c", StateSnapshot(id="c", data={"n": 3}, version=3))
    await fs.compact_stream(GOV, "c", up_to_version=3)
    assert await _key_exists(fs, "compacted", "c") and not await _key_exists(
        fs, "events", event_key("c", 1)
    )
    for state in (True, False):  # e.g. a new instance reusing the id of a deleted one
        event = _event("c", 1)
        with pytest.raises(VersionConflict) as caught:
            await fs.append_events(
                GOV, "c", [event], expected_version=0, state=event.to_state if state else None
            )
        assert (caught.value.expected, caught.value.actual) == (0, 3)
    assert await _versions(fs, "c") == [3] and not await fs.exists(GOV, "c")


# ---------------------------------------------------------------------- Expect and Fence
async def _update_time(store: FirestoreStore, collection: str, key: str) -> Any:
    ref = store.client.collection(f"{store.prefix}governors", GOV, collection).document(key)
    return (await ref.get()).update_time


async def test_expect_writes_nothing_and_keeps_update_time(fs: FirestoreStore) -> None:
    await fs.save_state(GOV, "x", StateSnapshot(id="x", data="x"))
    stored = await fs.read_state(GOV, "x")
    before = await _update_time(fs, "states", "x")
    with RPCs(fs) as rpc:
        result = await fs.commit(
            GOV, [ops.Expect("x", 1, token=stored.token), ops.Expect("nothing", 0)]
        )
    assert rpc.calls == {"commit": 1} and rpc.writes == [2]
    assert result[0].version == 1 and result[0].token == stored.token
    assert await _update_time(fs, "states", "x") == before
    assert not await _key_exists(fs, "states", "nothing")
    # so another writer's token is still current: its write needs no read and lands
    with RPCs(fs) as rpc:
        await fs.write_state(
            GOV, "x", StateSnapshot(id="x", data="y"), expected_version=1, token=stored.token
        )
    assert rpc.calls == {"commit": 1}
    with pytest.raises(VersionConflict):  # and now the old token is stale for Expect too
        await fs.commit(GOV, [ops.Expect("x", 1, token=stored.token)])


async def test_expect_without_a_token_reads_first(fs: FirestoreStore) -> None:
    await fs.save_state(GOV, "x", StateSnapshot(id="x"))
    with RPCs(fs) as rpc:
        await fs.commit(GOV, [ops.Expect("x", 1), ops.Put("y", StateSnapshot(id="y"), 0)])
    assert rpc.calls == {"batch_get_documents": 1, "commit": 1}


def _lease(resource: str, fencing_token: int) -> StateSnapshot:
    return StateSnapshot(id=resource, data={"holder": "c", "fencing_token": fencing_token})


async def test_fence_refused_after_a_takeover(fs: FirestoreStore) -> None:
    await fs.commit(GOV, [ops.Put("l", _lease("l", 3), 0, kind=ops.LOCKS)])
    with RPCs(fs) as rpc:  # the lease is read, then asserted unchanged in the commit
        done = await fs.commit(GOV, [ops.Fence("l", 3), ops.Put("r", StateSnapshot(id="r"), 0)])
    assert rpc.calls == {"batch_get_documents": 1, "commit": 1} and done[0].version == 3
    await fs.commit(GOV, [ops.Put("l", _lease("l", 4), 1, kind=ops.LOCKS)])  # taken over
    with pytest.raises(LockNotHeld, match="4"):
        await fs.commit(GOV, [ops.Fence("l", 3), ops.Put("r", StateSnapshot(id="r"), 1)])
    assert (await fs.read_state(GOV, "r")).version == 1


async def test_fence_refused_when_the_takeover_lands_between_read_and_commit(
    fs: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fs.commit(GOV, [ops.Put("l", _lease("l", 3), 0, kind=ops.LOCKS)])
    other = FirestoreStore(project=EMULATOR_PROJECT, prefix=fs.prefix)
    real_commit = Documents.commit
    interfere: list[int] = [4]  # the fencing token the other client writes, once

    async def commit_after_a_takeover(self: Documents, writes: list[Any], what: str) -> Any:
        if interfere and self is fs._docs:
            token = interfere.pop()
            lease = await other.read_record(GOV, "l", kind=ops.LOCKS)
            await other.commit(GOV, [ops.Put("l", _lease("l", token), lease.version,
                                             token=lease.token, kind=ops.LOCKS)])
        return await real_commit(self, writes, what)

    monkeypatch.setattr(Documents, "commit", commit_after_a_takeover)
    try:
        with pytest.raises(LockNotHeld):
            await fs.commit(GOV, [ops.Fence("l", 3), ops.Put("r", StateSnapshot(id="r"), 0)])
        assert not await fs.exists(GOV, "r")
        # a renewal by the holder (same fencing token) in between: the commit is retried
        interfere.append(4)
        done = await fs.commit(GOV, [ops.Fence("l", 4), ops.Put("r", StateSnapshot(id="r"), 0)])
        assert done[1].version == 1 and not interfere
    finally:
        await other.close()


# ---------------------------------------------------------------------- commits
async def test_a_transfer_with_current_tokens_is_one_rpc(fs: FirestoreStore) -> None:
    a = await fs.write_state(GOV, "a", StateSnapshot(id="a", data=10), expected_version=0)
    b = await fs.write_state(GOV, "b", StateSnapshot(id="b", data=0), expected_version=0)
    tokens = await fs.batch_read_states(GOV, ["a", "b"])
    assert a == b == 1
    with RPCs(fs) as rpc:
        done = await fs.commit(GOV, [
            ops.Put("a", StateSnapshot(id="a", data=7), 1, token=tokens["a"].token),
            ops.Put("b", StateSnapshot(id="b", data=3), 1, token=tokens["b"].token),
        ])
    assert rpc.calls == {"commit": 1}
    assert [Token.parse(r.token) is not None for r in done] == [True, True]
    stale = [
        ops.Put("a", StateSnapshot(id="a", data=0), 1, token=tokens["a"].token),
        ops.Put("b", StateSnapshot(id="b", data=0), 1, token=tokens["b"].token),
    ]
    with RPCs(fs) as rpc, pytest.raises(VersionConflict) as caught:
        await fs.commit(GOV, stale)  # stale tokens: refused, then explained by reads
    assert (caught.value.doc_id, caught.value.expected, caught.value.actual) == ("a", 1, 2)
    assert rpc.calls == {"commit": 1, "batch_get_documents": 1}


async def test_a_stale_token_of_the_current_version_is_retried(fs: FirestoreStore) -> None:
    await fs.save_state(GOV, "t", StateSnapshot(id="t"))
    token = (await fs.read_state(GOV, "t")).token
    assert token is not None
    forged = str(Token(1, 1, 0, Token.scope_of(GOV, "states", "t")))  # the time is wrong
    assert forged != token
    with RPCs(fs) as rpc:
        version = await fs.write_state(
            GOV, "t", StateSnapshot(id="t", data=2), expected_version=1, token=forged
        )
    assert version == 2 and rpc.calls["commit"] == 2  # refused, explained, retried


async def test_a_token_of_another_record_is_not_trusted(fs: FirestoreStore) -> None:
    # one commit gives both records the same update_time; b is then at version 3
    await fs.save_state(GOV, "b", StateSnapshot(id="b"))
    await fs.save_state(GOV, "b", StateSnapshot(id="b"))
    done = await fs.commit(GOV, [
        ops.Put("a", StateSnapshot(id="a"), 0), ops.Put("b", StateSnapshot(id="b"), 2)
    ])
    a_token, b_token = done[0].token, done[1].token
    assert a_token is not None and b_token is not None and a_token != b_token
    assert a_token.split("~")[0] == "1" + b_token.split("~")[0][1:]  # same update time
    with pytest.raises(VersionConflict) as caught:  # a's token cannot vouch for b
        await fs.write_state(GOV, "b", StateSnapshot(id="b"), expected_version=1, token=a_token)
    assert (caught.value.expected, caught.value.actual) == (1, 3)
    assert (await fs.read_state(GOV, "b")).version == 3


async def test_unconditional_writes_race_and_all_land(fs: FirestoreStore) -> None:
    versions = await asyncio.gather(
        *(fs.save_state(GOV, "u", StateSnapshot(id="u", data=n)) for n in range(5))
    )
    assert sorted(versions) == [1, 2, 3, 4, 5]
    with RPCs(fs) as rpc:  # without contention: a read, then one commit
        await fs.save_state(GOV, "u", StateSnapshot(id="u"))
    assert rpc.calls == {"batch_get_documents": 1, "commit": 1}
    with RPCs(fs) as rpc:  # a delete without a version: one delete that must find the record
        await fs.delete_state(GOV, "u")
    assert rpc.calls == {"commit": 1}


async def test_a_reply_lost_after_the_commit_is_recognised_on_retry(
    fs: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await _commit(fs, "lost", 1)
    real_commit = Documents.commit
    lose = [True]

    async def commit_then_lose_the_reply(self: Documents, writes: list[Any], what: str) -> Any:
        result = await real_commit(self, writes, what)
        if lose:
            lose.pop()
            raise StoreUnavailable("the reply was lost")
        return result

    monkeypatch.setattr(Documents, "commit", commit_then_lose_the_reply)
    event = _event("lost", 2)
    with pytest.raises(StoreUnavailable):
        await fs.append_events(
            GOV, "lost", [event], expected_version=1, state=event.to_state, token=first.token
        )
    again = await fs.append_events(
        GOV, "lost", [event], expected_version=1, state=event.to_state, token=first.token
    )
    assert again.already_applied and again.version == 2
    assert again.token == (await fs.read_state(GOV, "lost")).token
    assert await _versions(fs, "lost") == [1, 2]


# ---------------------------------------------------------------------- compaction
async def test_compaction_in_steps_leaves_a_readable_stream_after_each_commit(
    fs: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "z" * 2_000  # large enough for deltas between full events
    prior: StateSnapshot | None = None
    token: str | None = None
    for n in range(1, 21):
        event = _event("k", n, data={"n": n, "big": big})
        done = await fs.append_events(
            GOV, "k", [event], expected_version=n - 1, state=event.to_state, token=token,
            prior=prior,
        )
        prior, token = event.to_state, done.token
    await fs.save_snapshot(GOV, "k", StateSnapshot(id="k", data={"n": 15}, version=15))
    before = await fs.get_stats(GOV)
    real_commit = Documents.commit
    seen: list[list[int]] = []

    async def commit_and_read(self: Documents, writes: list[Any], what: str) -> Any:
        result = await real_commit(self, writes, what)
        if what.startswith("compaction"):
            events = [e async for e in fs.read_events(GOV, "k")]  # every event decodes
            versions = [e.version for e in events]
            assert versions == list(range(versions[0], 21)), versions
            assert all(e.to_state.data == {"n": e.version, "big": big} for e in events)
            assert events[0].from_state is not None  # the first kept is self-contained
            seen.append(versions)
        return result

    monkeypatch.setattr(Documents, "commit", commit_and_read)
    fs.max_commit_writes = 6  # 4 deletions, the first kept event, the marker per commit
    result = await fs.compact_stream(GOV, "k", up_to_version=15)
    assert [v[0] for v in seen] == [5, 9, 13, 16]
    after = await fs.get_stats(GOV)
    assert result.deleted_events == 15 and result.recovered_bytes == before.bytes - after.bytes
    with pytest.raises(VersionConflict):  # a writer from before the compaction
        await _commit(fs, "k", 3)
    assert (await _commit(fs, "k", 21, token=token)).version == 21


# ---------------------------------------------------------------------- layout
async def test_record_kinds_named_like_the_layout_stay_apart(fs: FirestoreStore) -> None:
    for kind in ("events", "snapshots", "compacted", "~events"):
        await fs.commit(GOV, [ops.Put("x", StateSnapshot(id="x", data=kind), 0, kind=kind)])
    assert await fs.list_streams(GOV) == [] and await fs.snapshot_versions(GOV, "x") == []
    for kind, collection in (("events", "~events"), ("~events", "~~events")):
        assert await _key_exists(fs, collection, "x")
        assert (await fs.read_record(GOV, "x", kind=kind)).snapshot.data == kind
    stats = await fs.get_stats(GOV)
    assert (stats.total_states, stats.total_events, stats.total_snapshots) == (0, 0, 0)
    assert stats.bytes > 0
    await fs.log_event(GOV, _event("x", 1))
    assert await fs.list_streams(GOV) == ["x"]


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
    token = Token(3, 1_700_000_000, 123_456_789, Token.scope_of("g", "states", "s"))
    assert Token.parse(str(token)) == token
    assert Token.parse("3@1700000000.123456789") is None  # no key check: not trusted
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
