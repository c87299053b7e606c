"""The Store contract suite: plain async pytest tests taking a ``store`` fixture.

Every backend — memory, sqlite, firestore, and third-party stores — must pass this module
unchanged. Run it against your own store by defining a ``store`` fixture that yields a fresh,
empty store, and importing the tests into a test module::

    from tai_fsm.testing.contract import *  # noqa: F403

(the plugin ``tai_fsm.testing.pytest_plugin`` provides ``store`` for the built-in backends;
pytest-asyncio must be in ``auto`` mode). Tests keep their operation counts small so the
suite stays fast on a remote store.

Rules checked: versions start at 1 and grow by exactly 1; optimistic concurrency raises
``VersionConflict`` with the right numbers and writes nothing; appends are all-or-nothing and
retried appends are recognised by their event ids; reads are ordered and paged; snapshots,
retention, compaction and cleanup never lose what recovery needs; stats are exact; governors
are isolated; bad input raises a ``TaiFsmError`` subclass before anything is written.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tai_fsm.codec import MAX_RECORD_BYTES
from tai_fsm.errors import (
    IntegrityError,
    InvalidInput,
    LockNotHeld,
    SerializationError,
    StateNotFound,
    TaiFsmError,
    VersionConflict,
)
from tai_fsm.records import AppendResult, ChangeMetadata, Event, StateSnapshot, StoreStats
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store
from tai_fsm.stores.ops import STATES

GOV = "contract"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------- helpers
def _snap(state_id: str, data: Any = None, *, version: int = 0) -> StateSnapshot:
    return StateSnapshot(id=state_id, data=data, version=version)


def _event(
    stream_id: str,
    n: int,
    *,
    event_id: str | None = None,
    at: datetime | None = None,
    payload: dict[str, Any] | None = None,
    data: Any = None,
) -> Event:
    """The event taking ``stream_id``'s counter from n-1 to n."""
    return Event(
        id=event_id or f"e{n}-{uuid.uuid4().hex[:12]}",
        action="increment",
        from_state=_snap(stream_id, {"n": n - 1}, version=n - 1),
        to_state=_snap(stream_id, {"n": n} if data is None else data, version=n),
        payload=payload or {},
        timestamp=at or datetime.now(UTC),
        metadata=ChangeMetadata(changed_by="contract", reason="test"),
    )


async def _append(
    store: Store, stream_id: str, n: int, *, governor: str = GOV, at: datetime | None = None
) -> AppendResult:
    """Commit event n with its state record, as the runtime does."""
    event = _event(stream_id, n, at=at)
    return await store.append_events(
        governor, stream_id, [event], expected_version=n - 1, state=event.to_state
    )


async def _versions(store: Store, stream_id: str, governor: str = GOV, **kw: Any) -> list[int]:
    return [e.version async for e in store.read_events(governor, stream_id, **kw)]


async def _assert_empty(store: Store) -> None:
    assert await store.list_governors() == []
    assert await store.get_stats() == StoreStats()


async def _rebuild(store: Store, stream_id: str, governor: str = GOV) -> Any:
    """Newest snapshot + the events after it: the data recovery would produce."""
    snapshot = await store.load_snapshot(governor, stream_id)
    data = snapshot.data if snapshot is not None else None
    after = snapshot.version if snapshot is not None else 0
    async for event in store.read_events(governor, stream_id, after_version=after):
        data = event.to_state.data
    return data


# ---------------------------------------------------------------------- seed scenarios
async def test_seed_first_save_is_version_1(store: Store) -> None:
    version = await store.save_state(GOV, "counter", _snap("counter", {"count": 0}))
    assert version == 1
    snapshot, got = await store.get_state(GOV, "counter")
    assert got == 1 and snapshot.version == 1 and snapshot.data == {"count": 0}


async def test_seed_update_with_current_version_returns_next(store: Store) -> None:
    v1 = await store.save_state(GOV, "counter", _snap("counter", {"count": 0}))
    meta = ChangeMetadata(changed_by="alice", reason="increment", parent_version=v1)
    v2 = await store.update_state(GOV, "counter", _snap("counter", {"count": 1}), v1, meta)
    assert v2 == v1 + 1
    snapshot, version = await store.get_state(GOV, "counter")
    assert version == 2 and snapshot.data == {"count": 1}
    assert snapshot.metadata.changed_by == "alice" and snapshot.metadata.parent_version == 1


async def test_seed_update_with_wrong_version_is_conflict(store: Store) -> None:
    await store.save_state(GOV, "counter", _snap("counter", {"count": 0}))
    await store.update_state(GOV, "counter", _snap("counter", {"count": 1}), 1)
    with pytest.raises(VersionConflict) as caught:
        await store.update_state(GOV, "counter", _snap("counter", {"count": 99}), 1)
    assert (caught.value.doc_id, caught.value.expected, caught.value.actual) == ("counter", 1, 2)
    assert caught.value.is_transient()
    snapshot, version = await store.get_state(GOV, "counter")
    assert version == 2 and snapshot.data == {"count": 1}


async def test_seed_logged_event_is_returned_by_get_all_events(store: Store) -> None:
    event = _event("counter", 1, event_id="evt1")
    logged = await store.log_event(GOV, event)
    assert logged.version == 1 and logged.stream_id == "counter"
    events = await store.get_all_events(GOV)
    assert [(e.id, e.version, e.action) for e in events] == [("evt1", 1, "increment")]
    assert events[0].to_state.data == {"n": 1}


async def test_seed_replaying_three_increments_yields_third_state(store: Store) -> None:
    for n in (1, 2, 3):
        await store.log_event(GOV, _event("counter", n, at=T0 + timedelta(minutes=n)))
    events = await store.get_all_events(GOV)
    state = await store.replay_events(events)
    assert state.data == {"n": 3} and state.version == 3
    earlier = await store.replay_events(events, until=T0 + timedelta(minutes=2))
    assert earlier.data == {"n": 2} and earlier.version == 2


async def test_seed_created_snapshot_loads_back(store: Store) -> None:
    snapshot = _snap("counter", {"count": 7}, version=7)
    await store.create_snapshot(GOV, "counter", snapshot)
    loaded = await store.load_snapshot(GOV, "counter")
    assert loaded is not None
    assert (loaded.id, loaded.data, loaded.version) == ("counter", {"count": 7}, 7)
    assert loaded.timestamp == snapshot.timestamp


async def test_seed_batch_get_states_returns_what_exists(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", 1))
    await store.save_state(GOV, "b", _snap("b", 2))
    await store.save_state(GOV, "b", _snap("b", 3))
    got = await store.batch_get_states(GOV, ["a", "missing", "b"])
    assert set(got) == {"a", "b"}
    assert (got["a"][0].data, got["a"][1]) == (1, 1)
    assert (got["b"][0].data, got["b"][1]) == (3, 2)
    assert await store.batch_get_states(GOV, []) == {}
    stored = await store.batch_read_states(GOV, ["b"])
    assert stored["b"].version == 2 and stored["b"].snapshot.version == 2


async def test_seed_get_stats_counts_states_and_max_version(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a"))
    for _ in range(3):
        await store.save_state(GOV, "b", _snap("b"))
    stats = await store.get_stats(GOV)
    assert stats.total_states == 2 and stats.max_version == 3


async def test_seed_exists_is_false_after_delete_state(store: Store) -> None:
    await store.save_state(GOV, "doomed", _snap("doomed"))
    assert await store.exists(GOV, "doomed")
    await store.delete_state(GOV, "doomed")
    assert not await store.exists(GOV, "doomed")
    with pytest.raises(StateNotFound):
        await store.get_state(GOV, "doomed")


# ---------------------------------------------------------------------- state records
async def test_state_versions_start_at_1_and_grow_by_1(store: Store) -> None:
    assert [await store.save_state(GOV, "s", _snap("s", i)) for i in range(4)] == [1, 2, 3, 4]
    stored = await store.read_state(GOV, "s")
    assert stored.version == 4 and stored.snapshot.version == 4 and stored.snapshot.data == 3


async def test_write_state_expected_zero_means_must_not_exist(store: Store) -> None:
    assert await store.write_state(GOV, "s", _snap("s"), expected_version=0) == 1
    with pytest.raises(VersionConflict) as caught:
        await store.write_state(GOV, "s", _snap("s", "again"), expected_version=0)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    with pytest.raises(VersionConflict) as missing:
        await store.write_state(GOV, "new", _snap("new"), expected_version=3)
    assert (missing.value.doc_id, missing.value.expected, missing.value.actual) == ("new", 3, 0)
    assert not await store.exists(GOV, "new")
    assert (await store.read_state(GOV, "s")).snapshot.data is None


async def test_missing_state_raises_state_not_found(store: Store) -> None:
    with pytest.raises(StateNotFound):
        await store.read_state(GOV, "nobody")
    assert not await store.exists(GOV, "nobody")
    with pytest.raises(StateNotFound):
        await store.delete_state(GOV, "nobody")


async def test_delete_state_checks_version_and_keeps_the_event_stream(store: Store) -> None:
    await _append(store, "s", 1)
    await _append(store, "s", 2)
    with pytest.raises(VersionConflict) as caught:
        await store.delete_state(GOV, "s", expected_version=1)
    assert (caught.value.expected, caught.value.actual) == (1, 2)
    assert await store.exists(GOV, "s")
    await store.delete_state(GOV, "s", expected_version=2)
    assert not await store.exists(GOV, "s")
    assert await _versions(store, "s") == [1, 2]  # the audit trail stays
    assert await store.save_state(GOV, "s", _snap("s")) == 1  # a new record starts at 1


async def test_list_states_and_governors_ascending(store: Store) -> None:
    for state_id in ("b", "a", "c"):
        await store.save_state("g2", state_id, _snap(state_id))
    await store.log_event("g1", _event("x", 1))
    await store.save_snapshot("g3", "y", _snap("y", version=1))
    assert [sid async for sid in store.list_states("g2")] == ["a", "b", "c"]
    assert [sid async for sid in store.list_states("g1")] == []
    assert await store.list_governors() == ["g1", "g2", "g3"]


async def test_unusual_valid_ids_round_trip(store: Store) -> None:
    ids = ["a b", "ünï-cødé", "#hash?q=1&x", "%2F", ".hidden", "__x", "x__", "x" * 512, "日本"]
    for n, state_id in enumerate(ids):
        assert await store.save_state(f"gov {n}", state_id, _snap(state_id, n)) == 1
        await store.log_event(f"gov {n}", _event(state_id, 1))
    for n, state_id in enumerate(ids):
        snapshot, version = await store.get_state(f"gov {n}", state_id)
        assert (snapshot.data, version) == (n, 1)
        assert await store.list_streams(f"gov {n}") == [state_id]
        assert await _versions(store, state_id, f"gov {n}") == [1]


# ---------------------------------------------------------------------- event streams
async def test_append_versions_start_at_1_and_grow_by_1(store: Store) -> None:
    assert await store.stream_version(GOV, "s") == 0
    first = await store.append_events(GOV, "s", [_event("s", 1)], expected_version=0)
    assert first == AppendResult(version=1, token=first.token, already_applied=False)
    batch = [_event("s", 2), _event("s", 3)]
    second = await store.append_events(GOV, "s", batch, expected_version=1)
    assert second.version == 3 and not second.already_applied
    assert await store.stream_version(GOV, "s") == 3
    events = [e async for e in store.read_events(GOV, "s")]
    assert [(e.version, e.stream_id) for e in events] == [(1, "s"), (2, "s"), (3, "s")]
    assert [e.id for e in events[1:]] == [e.id for e in batch]
    assert events[2].to_state.data == {"n": 3}


async def test_append_with_stale_expected_version_conflicts(store: Store) -> None:
    await store.append_events(GOV, "s", [_event("s", 1)], expected_version=0)
    before = await store.get_stats()
    for stale in (0, 5):
        with pytest.raises(VersionConflict) as caught:
            await store.append_events(GOV, "s", [_event("s", stale + 1)], expected_version=stale)
        assert (caught.value.doc_id, caught.value.expected, caught.value.actual) == ("s", stale, 1)
    assert await store.stream_version(GOV, "s") == 1
    assert await store.get_stats() == before


async def test_append_of_n_events_is_all_or_nothing(store: Store) -> None:
    await _append(store, "s", 1)
    before = await store.get_stats()
    bad_middles: list[tuple[Event, type[Exception]]] = [
        (_event("s", 3, payload={"bad": object()}), SerializationError),
        (_event("s", 3, data="x" * 1_000_001), SerializationError),
        (_event("other", 3), InvalidInput),
    ]
    for bad, error in bad_middles:
        events = [_event("s", 2), bad, _event("s", 4)]
        with pytest.raises(error):
            await store.append_events(
                GOV, "s", events, expected_version=1, state=events[-1].to_state
            )
    with pytest.raises(SerializationError):  # good events, bad state record
        await store.append_events(
            GOV, "s", [_event("s", 2)], expected_version=1, state=_snap("s", {"x": object()})
        )
    assert await _versions(store, "s") == [1]
    assert (await store.read_state(GOV, "s")).version == 1
    assert await store.get_stats() == before


async def test_append_with_state_writes_the_state_record_atomically(store: Store) -> None:
    result = await _append(store, "s", 1)
    stored = await store.read_state(GOV, "s")
    assert (result.version, stored.version, stored.snapshot.version) == (1, 1, 1)
    assert stored.snapshot.data == {"n": 1}
    events = [_event("s", 2), _event("s", 3)]
    result = await store.append_events(
        GOV, "s", events, expected_version=1, state=events[-1].to_state, token=result.token
    )
    stored = await store.read_state(GOV, "s")
    assert (result.version, stored.version, stored.snapshot.data) == (3, 3, {"n": 3})


async def test_append_with_state_checks_the_state_version(store: Store) -> None:
    await store.save_state(GOV, "s", _snap("s", "written directly"))  # state v1, stream empty
    event = _event("s", 1)
    with pytest.raises(VersionConflict) as caught:
        await store.append_events(GOV, "s", [event], expected_version=0, state=event.to_state)
    assert (caught.value.doc_id, caught.value.expected) == ("s", 0)
    assert await store.stream_version(GOV, "s") == 0
    stored = await store.read_state(GOV, "s")
    assert (stored.version, stored.snapshot.data) == (1, "written directly")


async def test_retried_append_is_recognised_not_duplicated(store: Store) -> None:
    events = [_event("s", 1), _event("s", 2)]
    first = await store.append_events(
        GOV, "s", events, expected_version=0, state=events[-1].to_state
    )
    assert first.version == 2 and not first.already_applied
    await _append(store, "s", 3)  # the stream moved on after the lost reply
    again = await store.append_events(
        GOV, "s", events, expected_version=0, state=events[-1].to_state
    )
    assert again.version == 2 and again.already_applied
    assert await _versions(store, "s") == [1, 2, 3]
    assert (await store.read_state(GOV, "s")).version == 3
    other_ids = [_event("s", 1), _event("s", 2)]  # same versions, different events
    with pytest.raises(VersionConflict) as caught:
        await store.append_events(GOV, "s", other_ids, expected_version=0)
    assert caught.value.actual == 3


async def test_retried_log_event_is_recognised(store: Store) -> None:
    event = _event("s", 1, event_id="once")
    first = await store.log_event(GOV, event)
    again = await store.log_event(GOV, event)
    assert first.version == again.version == 1 and again.id == "once"
    retried = await store.append_events(GOV, "s", [event], expected_version=None)
    assert retried.already_applied and retried.version == 1
    assert len(await store.get_all_events(GOV)) == 1
    nxt = await store.log_event(GOV, _event("s", 2))
    assert nxt.version == 2


async def test_concurrent_appends_have_one_winner(store: Store) -> None:
    attempts = [_event("s", 1) for _ in range(5)]
    results = await asyncio.gather(
        *(
            store.append_events(GOV, "s", [e], expected_version=0, state=e.to_state)
            for e in attempts
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, AppendResult)]
    losers = [r for r in results if isinstance(r, VersionConflict)]
    assert len(winners) == 1 and len(losers) == 4, results
    assert all(loser.expected == 0 for loser in losers)
    events = [e async for e in store.read_events(GOV, "s")]
    assert len(events) == 1 and events[0].version == 1
    assert (await store.read_state(GOV, "s")).snapshot.data == events[0].to_state.data


async def test_append_rejects_malformed_batches(store: Store) -> None:
    e1 = _event("s", 1)
    cases: list[Any] = [
        [],  # nothing to append
        [e1, e1],  # the same event id twice
        [_event("s", 1).model_copy(update={"version": 5})],  # version it would not get
        [_event("s", 1).model_copy(update={"stream_id": "t"})],  # another stream's event
        ["not an event"],
        e1,  # a single event, not a sequence
    ]
    for events in cases:
        with pytest.raises(InvalidInput):
            await store.append_events(GOV, "s", events, expected_version=0)
    bad_expected: list[Any] = [-1, "0", True, 1.0]
    for wrong in bad_expected:
        with pytest.raises(InvalidInput):
            await store.append_events(GOV, "s", [e1], expected_version=wrong)
    await _assert_empty(store)
    ok = await store.append_events(
        GOV, "s", [_event("s", 1).model_copy(update={"version": 1})], expected_version=0
    )
    assert ok.version == 1


async def test_read_order_and_paging(store: Store) -> None:
    for start in range(0, 25, 5):  # 25 events in 5 commits of 5
        events = [_event("s", n) for n in range(start + 1, start + 6)]
        await store.append_events(GOV, "s", events, expected_version=start)
    assert await _versions(store, "s", batch_size=7) == list(range(1, 26))
    assert await _versions(store, "s", batch_size=1, after_version=20) == [21, 22, 23, 24, 25]
    assert await _versions(store, "s", batch_size=7, after_version=10) == list(range(11, 26))
    assert await _versions(store, "s", batch_size=7, up_to_version=12) == list(range(1, 13))
    assert await _versions(store, "s", batch_size=7, after_version=5, up_to_version=14) == list(
        range(6, 15)
    )
    assert await _versions(store, "s", after_version=25) == []
    assert await _versions(store, "s", after_version=3, up_to_version=3) == []
    assert await _versions(store, "s", up_to_version=99, batch_size=25) == list(range(1, 26))


async def test_read_until_filters_by_timestamp(store: Store) -> None:
    for n in range(1, 7):
        await _append(store, "s", n, at=T0 + timedelta(minutes=n))
    cutoff = T0 + timedelta(minutes=3)
    assert await _versions(store, "s", until=cutoff, batch_size=2) == [1, 2, 3]
    assert await _versions(store, "s", until=cutoff, after_version=1) == [2, 3]
    assert await _versions(store, "s", until=T0) == []
    as_paris = cutoff.astimezone(timezone(timedelta(hours=1)))
    assert await _versions(store, "s", until=as_paris) == [1, 2, 3]
    with pytest.raises(InvalidInput):
        await _versions(store, "s", until=datetime(2024, 1, 1))  # naive
    with pytest.raises(InvalidInput):
        await _versions(store, "s", until="2024-01-01")  # not a datetime


async def test_event_span_summarises_exactly_what_read_events_yields(store: Store) -> None:
    for n in range(1, 13):
        await _append(store, "s", n, at=T0 + timedelta(minutes=n))
    cases: list[dict[str, Any]] = [
        {},
        {"batch_size": 5},
        {"after_version": 4, "batch_size": 3},
        {"after_version": 2, "up_to_version": 9, "batch_size": 4},
        {"until": T0 + timedelta(minutes=7), "batch_size": 2},
        {"after_version": 12},
    ]
    for filters in cases:
        events = [e async for e in store.read_events(GOV, "s", **filters)]
        span = await store.read_event_span(GOV, "s", **filters)
        assert span.count == len(events), filters
        if events:
            assert (span.first_version, span.last_version) == (
                events[0].version, events[-1].version
            )
            assert span.last == events[-1] and span.dense
        else:
            assert span.last is None and span.dense
    missing = await store.read_event_span(GOV, "nope")
    assert (missing.count, missing.last) == (0, None)
    with pytest.raises(InvalidInput):
        await store.read_event_span(GOV, "s", until=datetime(2024, 1, 1))


async def test_iter_all_events_orders_by_stream_then_version(store: Store) -> None:
    for stream_id, count in (("b", 2), ("a", 3), ("c", 1)):
        events = [_event(stream_id, n) for n in range(1, count + 1)]
        await store.append_events(GOV, stream_id, events, expected_version=0)
    await store.log_event("elsewhere", _event("a", 1))
    got = [(e.stream_id, e.version) async for e in store.iter_all_events(GOV, batch_size=2)]
    assert got == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2), ("c", 1)]
    assert [(e.stream_id, e.version) for e in await store.get_all_events(GOV)] == got
    assert await store.list_streams(GOV) == ["a", "b", "c"]


async def test_missing_stream_reads_empty(store: Store) -> None:
    assert await _versions(store, "none") == []
    assert await store.stream_version(GOV, "none") == 0
    assert await store.list_streams(GOV) == []
    assert await store.get_all_events(GOV) == []
    assert await store.load_snapshot(GOV, "none") is None
    assert await store.snapshot_versions(GOV, "none") == []
    await _assert_empty(store)


# ---------------------------------------------------------------------- snapshots
async def test_snapshot_newest_and_at_or_before(store: Store) -> None:
    for version in (6, 3, 9):
        await store.save_snapshot(GOV, "s", _snap("s", {"at": version}, version=version))
    assert await store.snapshot_versions(GOV, "s") == [3, 6, 9]
    newest = await store.load_snapshot(GOV, "s")
    assert newest is not None and (newest.version, newest.data) == (9, {"at": 9})
    older = await store.load_snapshot(GOV, "s", at_or_before=8)
    assert older is not None and older.version == 6
    exact = await store.load_snapshot(GOV, "s", at_or_before=3)
    assert exact is not None and exact.version == 3
    assert await store.load_snapshot(GOV, "s", at_or_before=2) is None
    await store.save_snapshot(GOV, "s", _snap("s", "replaced", version=6))
    replaced = await store.load_snapshot(GOV, "s", at_or_before=6)
    assert replaced is not None and replaced.data == "replaced"
    assert await store.snapshot_versions(GOV, "s") == [3, 6, 9]


async def test_snapshot_retention_keeps_newest_k(store: Store) -> None:
    for version in range(1, 7):
        await store.save_snapshot(GOV, "s", _snap("s", version, version=version), keep=3)
    assert await store.snapshot_versions(GOV, "s") == [4, 5, 6]
    await store.save_snapshot(GOV, "s", _snap("s", 2, version=2), keep=3)  # older than kept
    assert await store.snapshot_versions(GOV, "s") == [4, 5, 6]
    await store.save_snapshot(GOV, "s", _snap("s", 7, version=7), keep=1)
    assert await store.snapshot_versions(GOV, "s") == [7]
    assert (await store.get_stats(GOV)).total_snapshots == 1


async def test_snapshot_version_must_be_positive(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await store.save_snapshot(GOV, "s", _snap("s", version=0))
    with pytest.raises(InvalidInput):
        await store.save_snapshot(GOV, "s", _snap("s", version=1), keep=0)
    await _assert_empty(store)
    await store.create_snapshot(GOV, "s", _snap("s", "seed"))  # seed API: version 0 -> 1
    assert await store.snapshot_versions(GOV, "s") == [1]


# ---------------------------------------------------------------------- compaction, cleanup
async def _history(store: Store, stream_id: str, count: int, snapshots: tuple[int, ...]) -> None:
    for n in range(1, count + 1):
        await _append(store, stream_id, n)
        if n in snapshots:
            await store.save_snapshot(GOV, stream_id, _snap(stream_id, {"n": n}, version=n))


async def test_compact_stream_keeps_what_recovery_needs(store: Store) -> None:
    await _history(store, "s", 10, snapshots=(4, 8))
    before = await store.get_stats(GOV)
    result = await store.compact_stream(GOV, "s", up_to_version=8)
    after = await store.get_stats(GOV)
    assert (result.deleted_events, result.deleted_snapshots) == (8, 1)
    assert result.recovered_bytes == before.bytes - after.bytes > 0
    assert (after.total_events, after.total_snapshots) == (2, 1)
    assert await _versions(store, "s") == [9, 10]
    assert await store.snapshot_versions(GOV, "s") == [8]
    assert await store.stream_version(GOV, "s") == 10
    assert await _rebuild(store, "s") == (await store.read_state(GOV, "s")).snapshot.data
    again = await store.compact_stream(GOV, "s", up_to_version=8)
    assert (again.deleted_events, again.deleted_snapshots, again.recovered_bytes) == (0, 0, 0)


async def test_compact_stream_never_deletes_the_head_event(store: Store) -> None:
    await _history(store, "s", 3, snapshots=(3,))
    result = await store.compact_stream(GOV, "s", up_to_version=3)
    assert result.deleted_events == 2
    assert await _versions(store, "s") == [3]
    assert await store.stream_version(GOV, "s") == 3
    with pytest.raises(VersionConflict):  # the head is still known: no version reuse
        await _append(store, "s", 3)
    assert (await _append(store, "s", 4)).version == 4


async def test_compact_stream_requires_a_covering_snapshot(store: Store) -> None:
    await _history(store, "s", 6, snapshots=(2,))
    before = await store.get_stats(GOV)
    with pytest.raises(InvalidInput):
        await store.compact_stream(GOV, "s", up_to_version=5)
    with pytest.raises(InvalidInput):
        await store.compact_stream(GOV, "s", up_to_version=0)
    assert await store.get_stats(GOV) == before
    await store.save_snapshot(GOV, "s", _snap("s", {"n": 5}, version=5))
    result = await store.compact_stream(GOV, "s", up_to_version=3)  # snapshot 5 covers it
    assert (result.deleted_events, result.deleted_snapshots) == (3, 0)
    assert await _versions(store, "s") == [4, 5, 6]
    assert await _rebuild(store, "s") == {"n": 6}


async def test_cleanup_old_data_compacts_only_what_is_old(store: Store) -> None:
    old = datetime.now(UTC) - timedelta(days=40)
    for n in range(1, 7):  # "old": every event 40 days old, snapshots at 2 and 4
        await _append(store, "old", n, at=old + timedelta(minutes=n))
        if n in (2, 4):
            await store.save_snapshot(GOV, "old", _snap("old", {"n": n}, version=n))
    for n in range(1, 6):  # "mixed": events 1-3 old, 4-5 recent; snapshots at 3 and 5
        await _append(store, "mixed", n, at=old + timedelta(minutes=n) if n <= 3 else None)
        if n in (3, 5):
            await store.save_snapshot(GOV, "mixed", _snap("mixed", {"n": n}, version=n))
    await _history(store, "new", 3, snapshots=(3,))
    before = await store.get_stats(GOV)
    result = await store.cleanup_old_data(GOV, older_than=timedelta(days=30))
    after = await store.get_stats(GOV)
    assert (result.deleted_events, result.deleted_snapshots) == (4 + 3, 1)
    assert result.recovered_bytes == before.bytes - after.bytes > 0
    assert await _versions(store, "old") == [5, 6]
    assert await _versions(store, "mixed") == [4, 5]
    assert await _versions(store, "new") == [1, 2, 3]
    for stream_id, head in (("old", 6), ("mixed", 5), ("new", 3)):
        assert await _rebuild(store, stream_id) == {"n": head}
        assert await store.stream_version(GOV, stream_id) == head
    nothing = await store.cleanup_old_data(GOV, older_than=timedelta(days=30))
    assert (nothing.deleted_events, nothing.deleted_snapshots, nothing.recovered_bytes) == (
        0,
        0,
        0,
    )
    with pytest.raises(InvalidInput):
        await store.cleanup_old_data(GOV, older_than=timedelta(days=-1))


# ---------------------------------------------------------------------- statistics
async def test_stats_are_exact_per_governor_and_overall(store: Store) -> None:
    assert await store.get_stats() == StoreStats()
    await store.save_state("ga", "s1", _snap("s1"))
    await store.save_state("ga", "s1", _snap("s1"))
    await store.save_state("ga", "s2", _snap("s2"))
    events = [_event("s1", n) for n in (1, 2, 3)]
    await store.append_events("ga", "s1", events, expected_version=0)
    await store.save_snapshot("ga", "s1", _snap("s1", version=2))
    await store.save_state("gb", "t", _snap("t"))
    await store.log_event("gb", _event("t", 1))
    ga, gb, total = (
        await store.get_stats("ga"),
        await store.get_stats("gb"),
        await store.get_stats(),
    )
    assert (ga.total_states, ga.total_events, ga.total_snapshots, ga.max_version) == (2, 3, 1, 3)
    assert (gb.total_states, gb.total_events, gb.total_snapshots, gb.max_version) == (1, 1, 0, 1)
    assert (total.total_states, total.total_events, total.total_snapshots) == (3, 4, 1)
    assert total.max_version == 3
    assert ga.bytes > 0 and gb.bytes > 0 and total.bytes == ga.bytes + gb.bytes
    assert await store.get_stats("nobody") == StoreStats()
    await store.delete_state("ga", "s2")
    smaller = await store.get_stats("ga")
    assert smaller.total_states == 1 and 0 < smaller.bytes < ga.bytes


# ---------------------------------------------------------------------- the commit primitive
def _lease(resource: str, fencing_token: int) -> StateSnapshot:
    return StateSnapshot(id=resource, data={"holder": "c", "fencing_token": fencing_token})


async def _state_of(store: Store, kind: str = STATES) -> dict[str, Any]:
    """Every record of ``kind`` in GOV: id -> (version, data)."""
    found: dict[str, Any] = {}
    async for record_id in store.list_records(GOV, kind=kind):
        stored = await store.read_record(GOV, record_id, kind=kind)
        found[record_id] = (stored.version, stored.snapshot.data)
    return found


async def test_commit_applies_every_kind_of_operation_together(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", {"balance": 10}))
    await store.save_state(GOV, "gone", _snap("gone", 1))
    await store.commit(GOV, [ops.Put("l", _lease("l", 3), 0, kind=ops.LOCKS)])
    event = _event("s", 1)
    result = await store.commit(GOV, [
        ops.Append("s", [event], 0, state=event.to_state),
        ops.Put("a", _snap("a", {"balance": 7}), expected_version=1),
        ops.Put("b", _snap("b", {"balance": 3}), expected_version=0),
        ops.Delete("gone", expected_version=1),
        ops.Expect("never", 0),
        ops.Fence("l", 3),
    ])
    assert [r.version for r in result] == [1, 2, 1, 0, 0, 3]
    assert not result.already_applied and not any(r.already_applied for r in result)
    assert await _state_of(store) == {
        "a": (2, {"balance": 7}), "b": (1, {"balance": 3}), "s": (1, {"n": 1}),
    }
    assert await _versions(store, "s") == [1]


FAILING_PRECONDITIONS = [
    pytest.param(ops.Append("s", [], 5), VersionConflict, id="append-stale-head"),
    pytest.param(ops.Put("a", _snap("a", 0), expected_version=7), VersionConflict, id="put-stale"),
    pytest.param(ops.Put("a", _snap("a", 0), expected_version=0), VersionConflict,
                 id="put-must-not-exist"),
    pytest.param(ops.Delete("missing"), StateNotFound, id="delete-missing"),
    pytest.param(ops.Delete("a", expected_version=2), VersionConflict, id="delete-stale"),
    pytest.param(ops.Expect("a", 2), VersionConflict, id="expect-stale"),
    pytest.param(ops.Expect("a", 0), VersionConflict, id="expect-absent"),
    pytest.param(ops.Expect("missing", 1), VersionConflict, id="expect-present"),
    pytest.param(ops.Fence("l", 2), LockNotHeld, id="fence-taken-over"),
    pytest.param(ops.Fence("no-lease", 1), LockNotHeld, id="fence-never-issued"),
]


@pytest.mark.parametrize(("failing", "error"), FAILING_PRECONDITIONS)
async def test_commit_is_all_or_none_for_each_precondition(
    store: Store, failing: Any, error: type[Exception]
) -> None:
    await store.save_state(GOV, "a", _snap("a", {"balance": 10}))
    await store.commit(GOV, [ops.Put("l", _lease("l", 3), 0, kind=ops.LOCKS)])
    await _append(store, "s", 1)
    if isinstance(failing, ops.Append):
        failing = ops.Append("s", [_event("s", 6)], 5)
    before = await store.get_stats(GOV)
    event = _event("t", 1)
    with pytest.raises(error):
        await store.commit(GOV, [
            ops.Append("t", [event], 0, state=event.to_state),
            ops.Put("b", _snap("b", "new"), expected_version=0),
            failing,
        ])
    assert await store.get_stats(GOV) == before
    assert await store.stream_version(GOV, "t") == 0
    assert not await store.exists(GOV, "b")
    assert (await store.read_state(GOV, "a")).version == 1


async def test_commit_names_the_first_failed_precondition(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", 1))
    await store.save_state(GOV, "b", _snap("b", 1))
    with pytest.raises(VersionConflict) as caught:
        await store.commit(GOV, [ops.Expect("a", 1), ops.Expect("b", 4), ops.Expect("a2", 9)])
    assert (caught.value.doc_id, caught.value.expected, caught.value.actual) == ("b", 4, 1)


async def test_retried_commit_is_recognised_not_applied_twice(store: Store) -> None:
    await store.save_state(GOV, "a", _snap("a", 1))
    event = _event("s", 1)
    commit: list[ops.Op] = [
        ops.Append("s", [event], 0, state=event.to_state), ops.Put("a", _snap("a", 2), 1)
    ]
    first = await store.commit(GOV, commit)
    again = await store.commit(GOV, commit)
    assert not first.already_applied and again.already_applied
    assert again[0].version == 1 and again[0].already_applied
    assert (await store.read_state(GOV, "a")).version == 2
    assert await _versions(store, "s") == [1]
    other = _event("s", 1)
    with pytest.raises(VersionConflict):  # same versions, other events: a real conflict
        await store.commit(GOV, [ops.Append("s", [other], 0), ops.Put("a", _snap("a", 3), 1)])


async def test_concurrent_commits_on_shared_records_have_one_winner(store: Store) -> None:
    await store.save_state(GOV, "from", _snap("from", {"balance": 10}))
    await store.save_state(GOV, "to", _snap("to", {"balance": 0}))

    async def transfer(amount: int) -> Any:
        return await store.commit(GOV, [
            ops.Put("from", _snap("from", {"balance": 10 - amount}), expected_version=1),
            ops.Put("to", _snap("to", {"balance": amount}), expected_version=1),
        ])

    results = await asyncio.gather(*(transfer(n) for n in range(1, 6)), return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1, results
    assert all(isinstance(r, VersionConflict) for r in results if r not in winners)
    state = await _state_of(store)
    assert state["from"][0] == state["to"][0] == 2
    assert state["from"][1]["balance"] + state["to"][1]["balance"] == 10


async def test_records_of_other_kinds_are_kept_apart(store: Store) -> None:
    await store.save_state(GOV, "x", _snap("x", "state"))
    await store.commit(GOV, [ops.Put("x", _lease("x", 1), 0, kind=ops.LOCKS)])
    await store.commit(GOV, [ops.Put("y", _lease("y", 1), 0, kind="inbox")])
    assert (await store.read_state(GOV, "x")).snapshot.data == "state"
    assert (await store.read_record(GOV, "x", kind=ops.LOCKS)).snapshot.data["fencing_token"] == 1
    assert [r async for r in store.list_records(GOV, kind=ops.LOCKS)] == ["x"]
    assert [r async for r in store.list_states(GOV)] == ["x"]
    found = await store.batch_read_records(GOV, ["y", "z"], kind="inbox")
    assert list(found) == ["y"]
    assert (await store.get_stats(GOV)).total_states == 1
    await store.commit(GOV, [ops.Delete("x", 1, kind=ops.LOCKS)])
    with pytest.raises(StateNotFound):
        await store.read_record(GOV, "x", kind=ops.LOCKS)
    assert await store.exists(GOV, "x")


async def test_commit_rejects_malformed_operations_before_any_write(store: Store) -> None:
    event = _event("s", 1)
    cases: list[Any] = [
        [],
        ops.Expect("a", 0),  # one op, not a list
        ["not an op"],
        [ops.Put("a", _snap("a")), ops.Delete("a")],  # one record twice
        [ops.Append("s", [event], 0, state=event.to_state), ops.Put("s", _snap("s"))],
        [ops.Append("s", [event], 0), ops.Append("s", [_event("s", 2)], 1)],
        [ops.Put("a", "not a snapshot")],  # type: ignore[arg-type]
        [ops.Put("a/b", _snap("a"))],
        [ops.Put("a", _snap("a"), kind="bad/kind")],
        [ops.Put("a", _snap("a"), expected_version=-1)],
        [ops.Expect("a", True)],
        [ops.Fence("l", "3")],  # type: ignore[arg-type]
        [ops.Put("a", _snap("a"), token=5)],  # type: ignore[arg-type]
        [ops.Put("ok", _snap("ok")), ops.Put("bad", _snap("bad", {"x": float("nan")}))],
    ]
    for case in cases:
        with pytest.raises((InvalidInput, SerializationError)):
            await store.commit(GOV, case)
    with pytest.raises(InvalidInput):
        await store.commit("bad/gov", [ops.Put("a", _snap("a"))])
    await _assert_empty(store)


# ---------------------------------------------------------------------- each state stored once
async def test_from_state_is_the_previous_to_state(store: Store) -> None:
    first = _event("s", 1).model_copy(update={"from_state": _snap("s", {"seed": True})})
    await store.append_events(GOV, "s", [first], expected_version=0)
    liar = _event("s", 2).model_copy(update={"from_state": _snap("s", {"made": "up"})})
    await store.append_events(GOV, "s", [liar, _event("s", 3)], expected_version=1)
    events = [e async for e in store.read_events(GOV, "s")]
    assert events[0].from_state is not None and events[0].from_state.data == {"seed": True}
    assert events[1].from_state == events[0].to_state  # stored once, derived on read
    assert events[2].from_state == events[1].to_state
    later = [e async for e in store.read_events(GOV, "s", after_version=2)]
    assert later == events[2:]


async def test_large_records_are_stored_as_small_deltas(store: Store) -> None:
    data = {"text": "x" * 10_000, "n": 0}
    prior: StateSnapshot | None = None
    sizes = []
    for n in range(1, 41):
        data = {**data, "n": n}
        event = _event("big", n, data=data)
        before = (await store.get_stats(GOV)).bytes
        await store.append_events(
            GOV, "big", [event], expected_version=n - 1, state=event.to_state, prior=prior
        )
        sizes.append((await store.get_stats(GOV)).bytes - before)
        prior = event.to_state
    events = [e async for e in store.read_events(GOV, "big")]
    assert [e.to_state.data["n"] for e in events] == list(range(1, 41))
    assert all(e.to_state.data["text"] == "x" * 10_000 for e in events)
    tail = [e async for e in store.read_events(GOV, "big", after_version=37, batch_size=1)]
    assert [e.version for e in tail] == [38, 39, 40] and tail == events[37:]
    span = await store.read_event_span(GOV, "big")
    assert span.last == events[-1]
    # after the first commit (which also creates the state record, rewritten in place
    # since), the growth per commit is the event itself: full every 16th, deltas between
    assert sum(sizes[1:]) / len(sizes[1:]) < 1_500, sizes


async def test_a_delta_against_a_wrong_prior_is_detected_on_read(store: Store) -> None:
    data = {"text": "y" * 5_000, "n": 1}
    await store.append_events(GOV, "s", [_event("s", 1, data=data)], expected_version=0)
    wrong = _snap("s", {**data, "extra": True}, version=1)  # not what version 1 holds
    await store.append_events(
        GOV, "s", [_event("s", 2, data={**data, "n": 2})], expected_version=1, prior=wrong
    )
    with pytest.raises(IntegrityError, match="version 2"):
        _ = [e async for e in store.read_events(GOV, "s")]


async def test_a_record_may_fill_the_document_limit_minus_its_envelope(store: Store) -> None:
    near = "x" * (MAX_RECORD_BYTES - 2_000)
    event = _event("s", 1, data=near)
    await store.append_events(GOV, "s", [event], expected_version=0, state=event.to_state)
    assert (await store.read_state(GOV, "s")).snapshot.data == near
    assert [e.to_state.data async for e in store.read_events(GOV, "s")] == [near]
    over = _event("s", 2, data="x" * MAX_RECORD_BYTES)
    with pytest.raises(SerializationError):
        await store.append_events(GOV, "s", [over], expected_version=1, state=over.to_state)
    assert await store.stream_version(GOV, "s") == 1


# ---------------------------------------------------------------------- isolation
async def test_governors_are_isolated(store: Store) -> None:
    await store.save_state("ga", "x", _snap("x", "a1"))
    await store.save_state("ga", "x", _snap("x", "a2"))
    with pytest.raises(StateNotFound):
        await store.read_state("gb", "x")
    assert await store.save_state("gb", "x", _snap("x", "b1")) == 1
    await store.append_events("ga", "x", [_event("x", 1), _event("x", 2)], expected_version=0)
    assert await store.stream_version("gb", "x") == 0
    assert (await store.append_events("gb", "x", [_event("x", 1)], expected_version=0)).version == 1
    await store.save_snapshot("ga", "x", _snap("x", version=2))
    assert await store.load_snapshot("gb", "x") is None
    await store.delete_state("gb", "x")
    assert (await store.read_state("ga", "x")).snapshot.data == "a2"
    assert [e.version for e in await store.get_all_events("gb")] == [1]
    assert await store.list_governors() == ["ga", "gb"]
    assert [sid async for sid in store.list_states("gb")] == []


# ---------------------------------------------------------------------- bad input
BAD_IDS = [
    pytest.param("", id="empty"),
    pytest.param("x" * 513, id="513-bytes"),
    pytest.param("é" * 257, id="514-utf8-bytes"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\nb", id="newline"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("\x7f", id="del"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("__x__", id="reserved"),
    pytest.param(7, id="not-a-string"),
]


@pytest.mark.parametrize("role", ["governor", "state_id"])
@pytest.mark.parametrize("bad", BAD_IDS)
async def test_bad_ids_are_rejected_before_any_write(store: Store, role: str, bad: Any) -> None:
    governor, state_id = (bad, "ok") if role == "governor" else (GOV, bad)
    snap = _snap("ok", 1)
    attempts = [
        store.save_state(governor, state_id, snap),
        store.write_state(governor, state_id, snap, expected_version=0),
        store.append_events(governor, state_id, [_event("ok", 1)], expected_version=0),
        store.save_snapshot(governor, state_id, _snap("ok", version=1)),
        store.read_state(governor, state_id),
        store.delete_state(governor, state_id),
        store.stream_version(governor, state_id),
        store.load_snapshot(governor, state_id),
        store.compact_stream(governor, state_id, up_to_version=1),
        store.batch_read_states(governor, [state_id]),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInput):
            await attempt
    with pytest.raises(InvalidInput):
        await _versions(store, state_id, governor)
    if role == "governor":
        with pytest.raises(InvalidInput):
            await store.get_stats(governor)
        with pytest.raises(InvalidInput):
            await store.list_streams(governor)
    await _assert_empty(store)


async def test_non_json_data_is_rejected_before_any_write(store: Store) -> None:
    for bad in ({"x": object()}, {"big": 2**70}, [1, "\ud800"]):
        with pytest.raises(SerializationError):
            await store.save_state(GOV, "s", _snap("s", bad))
        with pytest.raises(SerializationError):
            await store.append_events(GOV, "s", [_event("s", 1, data=bad)], expected_version=0)
        with pytest.raises(SerializationError):
            await store.log_event(GOV, _event("s", 1, payload={"p": bad}))
        with pytest.raises(SerializationError):
            await store.save_snapshot(GOV, "s", _snap("s", bad, version=1))
    await _assert_empty(store)


async def test_records_over_1_mib_are_rejected_before_any_write(store: Store) -> None:
    huge = "x" * 1_000_001
    with pytest.raises(SerializationError):
        await store.save_state(GOV, "s", _snap("s", huge))
    with pytest.raises(SerializationError):
        await store.append_events(GOV, "s", [_event("s", 1, data=huge)], expected_version=0)
    with pytest.raises(SerializationError):
        await store.save_snapshot(GOV, "s", _snap("s", huge, version=1))
    await _assert_empty(store)
    assert await store.save_state(GOV, "s", _snap("s", "y" * 900_000)) == 1
    assert (await store.read_state(GOV, "s")).snapshot.data == "y" * 900_000


async def test_naive_timestamps_are_rejected_before_any_write(store: Store) -> None:
    naive = datetime(2024, 1, 1, 12, 0)
    bad_snap = _snap("s").model_copy(update={"timestamp": naive})
    with pytest.raises(InvalidInput):
        await store.save_state(GOV, "s", bad_snap)
    with pytest.raises(InvalidInput):
        await store.save_snapshot(GOV, "s", bad_snap.model_copy(update={"version": 1}))
    bad_event = _event("s", 1).model_copy(update={"timestamp": naive})
    with pytest.raises(InvalidInput):
        await store.append_events(GOV, "s", [bad_event], expected_version=0)
    nested = _event("s", 1).model_copy(update={"to_state": bad_snap})
    with pytest.raises(InvalidInput):
        await store.append_events(GOV, "s", [nested], expected_version=0)
    good = _event("s", 1)
    with pytest.raises(InvalidInput):
        await store.append_events(GOV, "s", [good], expected_version=0, state=bad_snap)
    await _assert_empty(store)


async def test_bad_numbers_are_rejected(store: Store) -> None:
    await _append(store, "s", 1)
    with pytest.raises(InvalidInput):
        await store.write_state(GOV, "s", _snap("s"), expected_version=-1)
    with pytest.raises(InvalidInput):
        await store.delete_state(GOV, "s", expected_version=-2)
    bad_reads: list[dict[str, Any]] = [
        {"batch_size": 0},
        {"after_version": -1},
        {"up_to_version": -1},
    ]
    for kwargs in bad_reads:
        with pytest.raises(InvalidInput):
            await _versions(store, "s", **kwargs)
    with pytest.raises(InvalidInput):
        await store.load_snapshot(GOV, "s", at_or_before=-1)
    with pytest.raises(InvalidInput):
        [e async for e in store.iter_all_events(GOV, batch_size=0)]
    assert await _versions(store, "s") == [1]
    assert (await store.read_state(GOV, "s")).version == 1


# ---------------------------------------------------------------------- property test
_bad_id_values = st.sampled_from(["", ".", "..", "__a__", "a/b", "\x00", "\ud800", "é" * 300])
_ids = st.one_of(st.text(min_size=1, max_size=12), _bad_id_values)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_data = st.one_of(
    _json,
    st.builds(object),
    st.just(b"\xff\xfe"),
    st.just(float("nan")),
    st.just({"surrogate": "\udc80"}),
    st.just("z" * 1_000_050),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(governor=_ids, state_id=_ids, data=_data)
async def test_random_input_raises_only_tai_fsm_errors(
    store: Store, governor: str, state_id: str, data: Any
) -> None:
    """Whatever ids and data come in, the store either accepts them (and reads them back at
    the version it returned) or raises a TaiFsmError subclass."""
    try:
        version = await store.save_state(governor, state_id, _snap("p", data))
    except TaiFsmError:
        pass
    else:
        assert (await store.read_state(governor, state_id)).version == version
    event = Event(
        id=f"p-{uuid.uuid4().hex}",
        action="set",
        to_state=_snap(state_id, data),
        payload={"d": data},
    )
    try:
        result = await store.append_events(governor, state_id, [event], expected_version=None)
    except TaiFsmError:
        pass
    else:
        stored = [e async for e in store.read_events(governor, state_id)]
        assert stored[-1].id == event.id and stored[-1].version == result.version
    try:
        await store.get_stats(governor)
        await store.load_snapshot(governor, state_id)
    except TaiFsmError:
        pass




# ---------------------------------------------------------------------- queries
def _instance(machine: Any, state: Any, **data: Any) -> dict[str, Any]:
    """A runtime instance's state record data."""
    return {"machine": machine, "state": state, "data": data}


async def _put(store: Store, record_id: str, data: Any, *, governor: str = GOV,
               kind: str = STATES) -> None:
    await store.commit(governor, [ops.Put(record_id, _snap(record_id, data), None, kind=kind)])


async def _found(store: Store, governor: str = GOV, **filters: Any) -> list[str]:
    return [i async for i in store.list_states(governor, **filters)]


async def test_find_states_by_machine_state_or_both(store: Store) -> None:
    await _put(store, "o-2", _instance("order", "paid"))
    await _put(store, "o-1", _instance("order", "paid"))
    await _put(store, "o-3", _instance("order", "pending"))
    await _put(store, "j-1", _instance("job", "paid"))
    await _put(store, "seed", {"count": 1})  # not an instance: only listed unfiltered
    await _put(store, "text", "paid")
    assert await store.find_states(GOV, machine="order") == ["o-1", "o-2", "o-3"]
    assert await store.find_states(GOV, state="paid") == ["j-1", "o-1", "o-2"]
    assert await store.find_states(GOV, machine="order", state="paid") == ["o-1", "o-2"]
    assert await store.find_states(GOV, machine="order", state="shipped") == []
    assert await store.find_states(GOV, machine="ghost") == []
    assert await store.find_states(GOV) == ["j-1", "o-1", "o-2", "o-3", "seed", "text"]
    assert await _found(store, machine="order", state="paid") == ["o-1", "o-2"]
    assert await _found(store) == await _found(store, machine=None, state=None)


async def test_find_states_pages_in_id_order(store: Store) -> None:
    ids = [f"o-{n:02d}" for n in range(7)]
    for record_id in reversed(ids):
        await _put(store, record_id, _instance("order", "paid"))
    await _put(store, "o-03x", _instance("order", "pending"))
    first = await store.find_states(GOV, state="paid", limit=3)
    second = await store.find_states(GOV, state="paid", after=first[-1], limit=3)
    third = await store.find_states(GOV, state="paid", after=second[-1], limit=3)
    assert (first, second, third) == (ids[:3], ids[3:6], ids[6:])
    assert await store.find_states(GOV, state="paid", after=ids[-1]) == []
    assert await _found(store, state="paid", batch_size=2) == ids
    assert await _found(store, machine="order", batch_size=1) == sorted([*ids, "o-03x"])


async def test_find_states_follows_every_write(store: Store) -> None:
    """The index is written with the record, in the same commit: appends with their state
    record, puts, seed writes and deletes move an id between query results at once."""
    created = Event(
        id=f"c-{uuid.uuid4().hex[:8]}", action="@create",
        to_state=_snap("o-1", _instance("order", "pending")), timestamp=T0,
    )
    await store.append_events(GOV, "o-1", [created], expected_version=0,
                              state=created.to_state)
    assert await store.find_states(GOV, state="pending") == ["o-1"]
    paid = Event(
        id=f"p-{uuid.uuid4().hex[:8]}", action="pay", from_state=created.to_state,
        to_state=_snap("o-1", _instance("order", "paid")), timestamp=T0,
    )
    result = await store.append_events(GOV, "o-1", [paid], expected_version=1,
                                       state=paid.to_state)
    assert await store.find_states(GOV, state="pending") == []
    assert await store.find_states(GOV, state="paid") == ["o-1"]
    refused = Event(id="refused", action="x", to_state=_snap("o-1", _instance("order", "gone")))
    with pytest.raises(VersionConflict):
        await store.append_events(GOV, "o-1", [refused], expected_version=1,
                                  state=refused.to_state)
    assert await store.find_states(GOV, state="gone") == []  # nothing written, index too
    await store.write_state(GOV, "o-1", _snap("o-1", _instance("order", "shipped")),
                            expected_version=result.version, token=result.token)
    assert await store.find_states(GOV, machine="order", state="shipped") == ["o-1"]
    await store.save_state(GOV, "o-1", _snap("o-1", {"no": "machine"}))
    assert await store.find_states(GOV, machine="order") == []
    assert await store.find_states(GOV) == ["o-1"]
    await store.save_state(GOV, "o-1", _snap("o-1", _instance("order", "cancelled")))
    assert await store.find_states(GOV, state="cancelled") == ["o-1"]
    await store.delete_state(GOV, "o-1")
    assert await store.find_states(GOV, machine="order") == []
    assert await store.find_states(GOV) == []


async def test_find_states_keeps_governors_and_kinds_apart(store: Store) -> None:
    await _put(store, "a", _instance("order", "paid"), governor="g1")
    await _put(store, "b", _instance("order", "paid"), governor="g2")
    await _put(store, "c", _instance("order", "paid"), kind=ops.LOCKS)
    await _put(store, "d", _instance(7, ["paid"]))  # not strings: never matched
    await _put(store, "e", {"machine": "order"})  # no state: matched by machine only
    assert await store.find_states("g1", state="paid") == ["a"]
    assert await store.find_states("g2", machine="order") == ["b"]
    assert await store.find_states(GOV, state="paid") == []
    assert await store.find_states(GOV, machine="order") == ["e"]
    assert await store.find_states(GOV, machine="order", state="paid") == []
    assert await store.find_states(GOV) == ["d", "e"]


async def test_find_states_matches_state_paths_exactly(store: Store) -> None:
    names = ["deploying", "deploying.canary", "ünï cødé", "paid " * 3]
    for n, state in enumerate(names):
        await _put(store, f"d-{n}", _instance("deployment", state))
    for n, state in enumerate(names):
        assert await store.find_states(GOV, state=state) == [f"d-{n}"]
    assert await store.find_states(GOV, state="deploying.") == []


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"machine": ""}, "machine"),
        ({"machine": 5}, "machine"),
        ({"state": b"paid"}, "state"),
        ({"state": "x" * 513}, "state"),
        ({"state": "\ud800"}, "state"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"after": None}, "after"),
    ],
)
async def test_find_states_rejects_bad_arguments(
    store: Store, arguments: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await store.find_states(GOV, **arguments)
    assert caught.value.field == field
    with pytest.raises(InvalidInput):
        await store.find_states("a/b")
    with pytest.raises(InvalidInput):
        [i async for i in store.list_states(GOV, batch_size=0)]


__all__ = [name for name in list(globals()) if name.startswith("test_")]
