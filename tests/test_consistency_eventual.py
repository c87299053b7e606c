"""EventualConsistency: the seed scenarios, stale-read detection, check_read and repair."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tai_fsm as fsm
from tai_fsm.consistency import CausalityAwareResolver, snapshot_order
from tai_fsm.errors import InvalidInput, StaleRead
from tai_fsm.records import ChangeMetadata, ClockOrder, StateSnapshot, VectorClock

T0 = datetime(2024, 1, 20, 15, 30, tzinfo=UTC)
clocks = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 2)).map(
    lambda d: VectorClock(clocks=d)
)
snapshots = st.builds(
    lambda data, version, seconds, clock: StateSnapshot(
        id="r", data=data, version=version, timestamp=T0 + timedelta(seconds=seconds),
        causality=clock,
    ),
    st.lists(st.sampled_from("xyz"), max_size=3),
    st.integers(0, 3),
    st.integers(0, 2),
    clocks,
)


def snap(data: Any = None, *, version: int = 1, seconds: float = 0,
         clock: dict[str, int] | None = None) -> StateSnapshot:
    return StateSnapshot(id="counter", data=data, version=version,
                         timestamp=T0 + timedelta(seconds=seconds),
                         causality=VectorClock(clocks=clock or {}))


# --- the seed scenarios, as written -------------------------------------------------------


def test_seed_resolve_conflict_returns_the_newer_timestamp_in_either_order() -> None:
    state1 = StateSnapshot(id="counter", data={"value": 1},
                           metadata=ChangeMetadata(changed_by="system", reason="init"))
    state2 = StateSnapshot(id="counter", data={"value": 2},
                           timestamp=state1.timestamp + timedelta(milliseconds=10),
                           metadata=ChangeMetadata(changed_by="system", reason="update"))
    ec = fsm.EventualConsistency()
    assert ec.resolve_conflict(state1, state2) == state2
    assert ec.resolve_conflict(state2, state1) == state2
    explicit = fsm.EventualConsistency(resolver=fsm.LastWriteWinsResolver())
    assert explicit.resolve_conflict(state1, state2) == state2


def test_seed_detect_stale_read_raises_when_old_is_behind() -> None:
    old = StateSnapshot(id="counter", data={"value": 1}, version=1)
    new = StateSnapshot(id="counter", data={"value": 2}, version=2)
    ec = fsm.EventualConsistency()
    with pytest.raises(fsm.StaleRead) as caught:
        ec.detect_stale_read(old, new)
    message = str(caught.value)
    assert "'counter'" in message and "version 1" in message and "version 2" in message
    assert (caught.value.record_id, caught.value.read_version, caught.value.newer_version) == (
        "counter", 1, 2)
    assert caught.value.is_transient()
    ec.detect_stale_read(new, old)  # newer: fine
    ec.detect_stale_read(new, new)  # equal: fine


# --- detect_stale_read --------------------------------------------------------------------


def test_stale_by_clock_even_when_versions_disagree() -> None:
    # versions are counted per store; across replicas the clocks decide
    old = snap(version=7, clock={"n1": 1})
    new = snap(version=2, clock={"n1": 2})
    with pytest.raises(StaleRead, match=r"version 7 \(clock \{n1: 1\}\) is behind version 2"):
        fsm.EventualConsistency().detect_stale_read(old, new)
    fsm.EventualConsistency().detect_stale_read(new, old)


def test_equal_clocks_fall_back_to_versions() -> None:
    with pytest.raises(StaleRead):
        fsm.EventualConsistency().detect_stale_read(snap(version=1, clock={"a": 1}),
                                                    snap(version=2, clock={"a": 1}))


def test_a_missing_clock_means_versions_decide() -> None:
    ec = fsm.EventualConsistency()
    ec.detect_stale_read(snap(version=3), snap(version=2, clock={"a": 5}))
    with pytest.raises(StaleRead):
        ec.detect_stale_read(snap(version=2, clock={"a": 5}), snap(version=3))


def test_concurrent_is_stale_and_says_how_to_settle_it() -> None:
    a, b = snap(version=2, clock={"a": 2, "b": 1}), snap(version=2, clock={"a": 1, "b": 2})
    ec = fsm.EventualConsistency()
    assert ec.order(a, b) is ClockOrder.CONCURRENT
    for x, y in ((a, b), (b, a)):
        with pytest.raises(StaleRead, match=r"is concurrent with .*resolve_conflict"):
            ec.detect_stale_read(x, y)


@given(snapshots, snapshots)
def test_detect_stale_read_agrees_with_order(old: StateSnapshot, new: StateSnapshot) -> None:
    ec = fsm.EventualConsistency()
    order = ec.order(old, new)
    assert ec.order(new, old) is {ClockOrder.BEFORE: ClockOrder.AFTER,
                                  ClockOrder.AFTER: ClockOrder.BEFORE}.get(order, order)
    stale = order in (ClockOrder.BEFORE, ClockOrder.CONCURRENT)
    assert ec.is_stale(old, new) is stale
    if stale:
        with pytest.raises(StaleRead):
            ec.detect_stale_read(old, new)
    else:
        ec.detect_stale_read(old, new)
    ec.detect_stale_read(old, old)
    if old.causality.happened_before(new.causality) and old.causality.clocks:
        assert stale


@given(snapshots, snapshots, snapshots)
def test_snapshot_order_before_is_transitive(
    a: StateSnapshot, b: StateSnapshot, c: StateSnapshot
) -> None:
    # the rule mixes clocks and versions, so only a chain of one kind is transitive
    with_clocks = [bool(s.causality.clocks) for s in (a, b, c)]
    if (
        snapshot_order(a, b) is ClockOrder.BEFORE
        and snapshot_order(b, c) is ClockOrder.BEFORE
        and (all(with_clocks) or not any(with_clocks))
    ):
        assert snapshot_order(a, c) is ClockOrder.BEFORE


# --- check_read ---------------------------------------------------------------------------


def test_check_read_accepts_equal_or_newer() -> None:
    ec = fsm.EventualConsistency()
    seen, newer = snap(version=2), snap(version=3)
    assert ec.check_read(None, seen) is seen
    assert ec.check_read(seen, seen) is seen
    assert ec.check_read(seen, newer) is newer


def test_check_read_refuses_an_older_read() -> None:
    seen, read = snap(version=3, clock={"n": 3}), snap(version=2, clock={"n": 2})
    with pytest.raises(StaleRead) as caught:
        fsm.EventualConsistency().check_read(seen, read)
    assert str(caught.value) == (
        "stale read of 'counter': version 2 (clock {n: 2}) is behind "
        "version 3 (clock {n: 3}) already seen; read again"
    )
    assert (caught.value.read_version, caught.value.newer_version) == (2, 3)


def test_check_read_repairs_by_option() -> None:
    seen, read = snap(version=3), snap(version=2)
    assert fsm.EventualConsistency().check_read(seen, read, repair=True) is seen
    repairing = fsm.EventualConsistency(repair=True)
    assert repairing.check_read(seen, read) is seen
    with pytest.raises(StaleRead):
        repairing.check_read(seen, read, repair=False)


def test_check_read_repairs_a_concurrent_read_with_the_resolver() -> None:
    seen = snap(["x"], seconds=1, clock={"a": 1})
    read = snap(["y"], seconds=2, clock={"b": 1})
    with pytest.raises(StaleRead, match="concurrent"):
        fsm.EventualConsistency().check_read(seen, read)
    assert fsm.EventualConsistency().check_read(seen, read, repair=True) is read  # LWW
    ec = fsm.EventualConsistency(
        CausalityAwareResolver(merge=lambda a, b: sorted(a.data + b.data)), repair=True
    )
    repaired = ec.check_read(seen, read)
    assert repaired.data == ["x", "y"]
    assert repaired.causality.descends(seen.causality)


@given(snapshots, snapshots)
def test_a_repaired_read_includes_everything_seen(seen: StateSnapshot, read: StateSnapshot) -> None:
    ec = fsm.EventualConsistency(CausalityAwareResolver(merge=lambda a, b: a.data + b.data),
                                 repair=True)
    result = ec.check_read(seen, read)
    assert snapshot_order(result, seen) in (ClockOrder.AFTER, ClockOrder.EQUAL)


# --- resolve_all --------------------------------------------------------------------------


@given(st.lists(snapshots, min_size=1, max_size=5), st.randoms())
def test_resolve_all_does_not_depend_on_the_order(versions: list[StateSnapshot],
                                                  random: Any) -> None:
    shuffled = list(versions)
    random.shuffle(shuffled)
    lww = fsm.EventualConsistency()
    assert lww.resolve_all(versions) == lww.resolve_all(shuffled)
    winner = lww.resolve_all(versions)
    assert winner.timestamp == max(v.timestamp for v in versions)
    # a commutative, associative, idempotent merge converges whatever the order
    crdt = fsm.EventualConsistency(CausalityAwareResolver(
        merge=lambda a, b: sorted(set(a.data) | set(b.data))))
    assert crdt.resolve_all(versions) == crdt.resolve_all(shuffled)


# --- bad input ----------------------------------------------------------------------------


def test_bad_arguments_raise_invalid_input() -> None:
    ec = fsm.EventualConsistency()
    a = snap()
    other = StateSnapshot(id="elsewhere")
    for call in (
        lambda: ec.resolve_conflict(a, other),
        lambda: ec.detect_stale_read(a, other),
        lambda: ec.check_read(other, a),
        lambda: ec.resolve_all([a, other]),
    ):
        with pytest.raises(InvalidInput, match="ONE record, got"):
            call()
    with pytest.raises(InvalidInput, match="the second argument is str"):
        ec.detect_stale_read(a, "v2")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="the first argument is dict"):
        ec.check_read(None, {"id": "x"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="at least one version"):
        ec.resolve_all([])
    with pytest.raises(InvalidInput, match="repair must be True or False"):
        fsm.EventualConsistency(repair="yes")  # type: ignore[arg-type]


def test_repr() -> None:
    assert repr(fsm.EventualConsistency()) == (
        "EventualConsistency(resolver=LastWriteWinsResolver(), repair=False)"
    )
