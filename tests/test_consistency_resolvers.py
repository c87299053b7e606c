"""Resolvers: deterministic and symmetric (ties included), causality respected, merges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tai_fsm as fsm
from tai_fsm.consistency import (
    CausalityAwareResolver,
    LastWriteWinsResolver,
    MergeResolver,
    Resolver,
    as_resolver,
    canonical_order,
    lww_compare,
)
from tai_fsm.errors import ConflictResolutionFailed, InvalidInput
from tai_fsm.records import ChangeMetadata, ClockOrder, StateSnapshot, VectorClock

T0 = datetime(2024, 1, 20, 15, 30, tzinfo=UTC)
NODES = st.sampled_from(["a", "b", "c"])
clocks = st.dictionaries(NODES, st.integers(0, 2)).map(lambda d: VectorClock(clocks=d))
json_data = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                max_size=3),
    max_leaves=6,
)
# few distinct values everywhere, so equal timestamps, clocks, versions and data are common
snapshots = st.builds(
    lambda data, version, seconds, clock, who: StateSnapshot(
        id="r", data=data, version=version, timestamp=T0 + timedelta(seconds=seconds),
        causality=clock, metadata=ChangeMetadata(changed_by=who),
    ),
    st.sampled_from([None, 1, {"k": 1}]) | json_data,
    st.integers(0, 2),
    st.integers(0, 1),
    clocks,
    st.sampled_from(["x", "y"]),
)


def snap(data: Any = None, *, version: int = 1, seconds: float = 0, clock: dict[str, int]
         | None = None, id: str = "r") -> StateSnapshot:
    return StateSnapshot(id=id, data=data, version=version,
                         timestamp=T0 + timedelta(seconds=seconds),
                         causality=VectorClock(clocks=clock or {}))


def union(a: StateSnapshot, b: StateSnapshot) -> Any:
    """A commutative, associative, idempotent merge: the union of two lists."""
    return sorted(set(a.data or []) | set(b.data or []))


# --- last-write-wins ----------------------------------------------------------------------


def test_lww_newer_timestamp_wins_in_either_order() -> None:
    old, new = snap("old", version=2, seconds=0), snap("new", version=1, seconds=5)
    resolver = LastWriteWinsResolver()
    assert resolver.resolve(old, new) is new
    assert resolver.resolve(new, old) is new


def test_lww_tie_breaks_on_clock_then_version_then_data() -> None:
    resolver = LastWriteWinsResolver()
    causally_older = snap("x", clock={"a": 1})
    causally_newer = snap("x", clock={"a": 1, "b": 1})
    assert resolver.resolve(causally_newer, causally_older) is causally_newer
    assert resolver.resolve(causally_older, causally_newer) is causally_newer
    v1, v2 = snap("x", version=1), snap("x", version=2)
    assert resolver.resolve(v1, v2) is v2 and resolver.resolve(v2, v1) is v2
    d1, d2 = snap({"k": 1}), snap({"k": 2})
    assert resolver.resolve(d1, d2) is resolver.resolve(d2, d1)


def test_lww_tie_on_everything_but_metadata_is_still_deterministic() -> None:
    a = snap("x").model_copy(update={"metadata": ChangeMetadata(changed_by="alice")})
    b = snap("x").model_copy(update={"metadata": ChangeMetadata(changed_by="bob")})
    resolver = LastWriteWinsResolver()
    assert resolver.resolve(a, b) is resolver.resolve(b, a)


@given(snapshots, snapshots)
def test_lww_is_deterministic_and_symmetric(a: StateSnapshot, b: StateSnapshot) -> None:
    resolver = LastWriteWinsResolver()
    winner = resolver.resolve(a, b)
    assert winner in (a, b)
    assert winner == resolver.resolve(b, a)
    assert winner == LastWriteWinsResolver().resolve(a, b)  # another replica agrees
    assert winner.timestamp == max(a.timestamp, b.timestamp)


@given(snapshots, snapshots)
def test_lww_compare_is_antisymmetric_and_zero_only_for_identical_records(
    a: StateSnapshot, b: StateSnapshot
) -> None:
    assert lww_compare(a, b) == -lww_compare(b, a)
    if lww_compare(a, b) == 0:
        assert a.model_dump(mode="json") == b.model_dump(mode="json")


@given(snapshots, snapshots, snapshots)
def test_lww_is_associative_so_replicas_converge(
    a: StateSnapshot, b: StateSnapshot, c: StateSnapshot
) -> None:
    r = LastWriteWinsResolver()
    assert r.resolve(r.resolve(a, b), c) == r.resolve(a, r.resolve(b, c))


@given(snapshots, snapshots)
def test_lww_prefers_the_causally_newer_on_equal_timestamps(
    a: StateSnapshot, b: StateSnapshot
) -> None:
    b = b.model_copy(update={"timestamp": a.timestamp})
    if a.causality.happened_before(b.causality):
        assert LastWriteWinsResolver().resolve(a, b) is b


# --- causality-aware ----------------------------------------------------------------------


def test_causal_picks_the_causally_newer_even_with_an_older_timestamp() -> None:
    older = snap("v1", seconds=10, clock={"a": 1})
    newer = snap("v2", seconds=0, clock={"a": 2})  # its wall clock was behind
    resolver = CausalityAwareResolver()
    assert resolver.resolve(older, newer) is newer
    assert resolver.resolve(newer, older) is newer
    assert LastWriteWinsResolver().resolve(older, newer) is older  # the trade-off


def test_causal_equal_clocks_fall_back_to_lww() -> None:
    a, b = snap("a", seconds=1), snap("b", seconds=2)  # no clocks at all: EQUAL
    assert CausalityAwareResolver().resolve(a, b) is b
    assert CausalityAwareResolver().resolve(b, a) is b


def test_causal_concurrent_without_merge_names_both_versions() -> None:
    a = snap("a", version=3, clock={"n1": 2, "n2": 1})
    b = snap("b", version=4, clock={"n1": 1, "n2": 2})
    for x, y in ((a, b), (b, a)):
        with pytest.raises(ConflictResolutionFailed) as caught:
            CausalityAwareResolver().resolve(x, y)
        message = str(caught.value)
        assert "'r'" in message and "version 3 (clock {n1: 2, n2: 1})" in message
        assert "version 4 (clock {n1: 1, n2: 2})" in message
        assert caught.value.record_id == "r"
        assert list(caught.value.conflicting) in ([a, b], [b, a])


def test_causal_merge_gets_canonical_order_and_merged_clock() -> None:
    a = snap(["x"], version=3, seconds=1, clock={"n1": 2, "n2": 1})
    b = snap(["y"], version=4, seconds=2, clock={"n1": 1, "n2": 2})
    calls: list[tuple[Any, Any]] = []

    def merge(first: StateSnapshot, second: StateSnapshot) -> Any:
        calls.append((first.data, second.data))
        return first.data + second.data  # order-sensitive on purpose

    resolver = CausalityAwareResolver(merge=merge)
    one, two = resolver.resolve(a, b), resolver.resolve(b, a)
    assert one == two
    assert calls == [(["x"], ["y"]), (["x"], ["y"])]  # LWW winner (b) second, both times
    assert one.data == ["x", "y"] and one.id == "r"
    assert one.version == 4 and one.timestamp == b.timestamp
    assert one.causality == VectorClock(clocks={"n1": 2, "n2": 2})
    assert one.causality > a.causality and one.causality > b.causality
    assert one.metadata.reason == "merge of concurrent versions"
    assert one.metadata.context == {"merged_versions": [3, 4]}


def test_causal_merge_with_node_id_increments_that_node() -> None:
    a = snap(["x"], clock={"n1": 1})
    b = snap(["y"], clock={"n2": 1})
    merged = CausalityAwareResolver(merge=union, node_id="w1").resolve(a, b)
    assert merged.causality == VectorClock(clocks={"n1": 1, "n2": 1, "w1": 1})
    assert merged.metadata.changed_by == "w1"


def test_merge_returning_a_snapshot_keeps_it_with_the_merged_clock() -> None:
    a = snap(1, clock={"n1": 1})
    b = snap(2, clock={"n2": 1})

    def merge(first: StateSnapshot, second: StateSnapshot) -> StateSnapshot:
        return StateSnapshot(id="r", data=3, version=9, causality=VectorClock(clocks={"z": 1}))

    merged = CausalityAwareResolver(merge=merge).resolve(a, b)
    assert (merged.data, merged.version) == (3, 9)
    assert merged.causality == VectorClock(clocks={"n1": 1, "n2": 1, "z": 1})


def test_merge_returning_one_input_picks_it_unchanged() -> None:
    a = snap({"p": 1}, clock={"n1": 1})
    b = snap({"p": 5}, clock={"n2": 1})

    def higher_priority(first: StateSnapshot, second: StateSnapshot) -> StateSnapshot:
        return first if first.data["p"] > second.data["p"] else second

    resolver = CausalityAwareResolver(merge=higher_priority)
    assert resolver.resolve(a, b) is b and resolver.resolve(b, a) is b


def test_merge_errors() -> None:
    a, b = snap(1, clock={"n1": 1}), snap(2, clock={"n2": 1})

    def broken(first: StateSnapshot, second: StateSnapshot) -> Any:
        raise KeyError("missing")

    with pytest.raises(ConflictResolutionFailed, match="merge function failed on 'r'") as caught:
        CausalityAwareResolver(merge=broken).resolve(a, b)
    assert isinstance(caught.value.__cause__, KeyError)

    def refuses(first: StateSnapshot, second: StateSnapshot) -> Any:
        raise ConflictResolutionFailed("cannot merge these")

    with pytest.raises(ConflictResolutionFailed, match=r"^cannot merge these$"):
        CausalityAwareResolver(merge=refuses).resolve(a, b)

    def other_record(first: StateSnapshot, second: StateSnapshot) -> Any:
        return StateSnapshot(id="elsewhere")

    with pytest.raises(ConflictResolutionFailed, match="returned a version of 'elsewhere'"):
        CausalityAwareResolver(merge=other_record).resolve(a, b)

    async def asynchronous(first: StateSnapshot, second: StateSnapshot) -> Any:
        return 1

    with pytest.raises(InvalidInput, match="must be synchronous"):
        CausalityAwareResolver(merge=asynchronous).resolve(a, b)


@given(snapshots, snapshots)
def test_causal_never_picks_the_causally_older(a: StateSnapshot, b: StateSnapshot) -> None:
    resolver = CausalityAwareResolver(merge=lambda x, y: [x.data, y.data])
    result = resolver.resolve(a, b)
    assert not result.causality.happened_before(a.causality)
    assert not result.causality.happened_before(b.causality)
    assert result.causality >= a.causality or result.causality >= b.causality
    if a.causality.happened_before(b.causality):
        assert result is b
    if a.causality.concurrent_with(b.causality):
        assert result.causality == a.causality.merge(b.causality)


@given(snapshots, snapshots)
def test_causal_is_deterministic_and_symmetric(a: StateSnapshot, b: StateSnapshot) -> None:
    # an order-sensitive merge: symmetry comes from the canonical argument order
    resolver = CausalityAwareResolver(merge=lambda x, y: [x.data, y.data], node_id="w")
    assert resolver.resolve(a, b) == resolver.resolve(b, a)
    plain = CausalityAwareResolver()
    if a.causality.concurrent_with(b.causality):
        with pytest.raises(ConflictResolutionFailed):
            plain.resolve(a, b)
        with pytest.raises(ConflictResolutionFailed):
            plain.resolve(b, a)
    else:
        assert plain.resolve(a, b) == plain.resolve(b, a)
        assert plain.resolve(a, b) in (a, b)


# --- plain functions as resolvers ---------------------------------------------------------


def test_a_plain_function_is_a_resolver() -> None:
    resolver = as_resolver(union)
    assert isinstance(resolver, MergeResolver) and isinstance(resolver, Resolver)
    a, b = snap(["x"], version=1), snap(["y"], version=2)
    merged = resolver.resolve(a, b)
    assert merged.data == ["x", "y"] and merged.version == 2
    assert fsm.EventualConsistency(union).resolve_conflict(b, a) == merged
    assert fsm.EventualConsistency(resolver=union).resolve_conflict(a, b) == merged
    assert as_resolver(LastWriteWinsResolver()).__class__ is LastWriteWinsResolver


def test_merge_resolver_skips_the_call_for_equal_versions() -> None:
    calls = []
    resolver = MergeResolver(lambda a, b: calls.append(1))
    a = snap("x")
    assert resolver.resolve(a, a.model_copy()) == a and calls == []


@given(snapshots, snapshots)
def test_merge_resolver_is_symmetric(a: StateSnapshot, b: StateSnapshot) -> None:
    resolver = MergeResolver(lambda x, y: {"first": x.data, "second": y.data})
    assert resolver.resolve(a, b) == resolver.resolve(b, a)


@given(st.lists(snapshots, min_size=1, max_size=5), st.randoms())
def test_canonical_order_ignores_the_input_order(
    versions: list[StateSnapshot], random: Any
) -> None:
    shuffled = list(versions)
    random.shuffle(shuffled)
    dumps = [[v.model_dump(mode="json") for v in canonical_order(x)] for x in (versions, shuffled)]
    assert dumps[0] == dumps[1]


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize("resolver", [LastWriteWinsResolver(), CausalityAwareResolver(),
                                      MergeResolver(union)])
def test_resolvers_refuse_bad_arguments(resolver: Resolver) -> None:
    a = snap("x")
    with pytest.raises(InvalidInput, match="the second argument is dict"):
        resolver.resolve(a, {"id": "r"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="the first argument is NoneType"):
        resolver.resolve(None, a)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="versions of ONE record, got 'r' and 'q'"):
        resolver.resolve(a, snap("x", id="q"))


def test_constructors_refuse_bad_arguments() -> None:
    with pytest.raises(InvalidInput, match="merge must be a function"):
        CausalityAwareResolver(merge=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="merge must be a function"):
        MergeResolver("union")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="node_id must not be empty"):
        CausalityAwareResolver(node_id="")
    with pytest.raises(InvalidInput, match="a resolver is an object with resolve"):
        fsm.EventualConsistency(resolver=42)  # type: ignore[arg-type]


def test_reprs() -> None:
    assert repr(LastWriteWinsResolver()) == "LastWriteWinsResolver()"
    assert repr(CausalityAwareResolver(union, node_id="w")) == (
        "CausalityAwareResolver(merge=union, node_id='w')"
    )
    assert "union" in repr(MergeResolver(union))
    assert ClockOrder.CONCURRENT.value == "concurrent"
