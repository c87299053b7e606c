"""VectorClock: the lattice laws (merge), the causal partial order (compare), input checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import tai_fsm as fsm
from tai_fsm.errors import InvalidInput
from tai_fsm.records import MAX_CLOCK_COUNTER, ClockOrder, VectorClock, construct_trusted

NODES = st.sampled_from(["a", "b", "c", "d"])  # few nodes: overlaps and ties are common
COUNTS = st.integers(min_value=0, max_value=3)
clocks = st.dictionaries(NODES, COUNTS).map(lambda d: VectorClock(clocks=d))
wide_clocks = st.dictionaries(
    st.text(min_size=1, max_size=8).filter(lambda s: "/" not in s and s.isprintable()
                                         and s not in (".", "..")
                                         and not (s.startswith("__") and s.endswith("__"))),
    st.integers(min_value=0, max_value=MAX_CLOCK_COUNTER),
    max_size=6,
).map(lambda d: VectorClock(clocks=d))
INVERSE = {
    ClockOrder.BEFORE: ClockOrder.AFTER,
    ClockOrder.AFTER: ClockOrder.BEFORE,
    ClockOrder.EQUAL: ClockOrder.EQUAL,
    ClockOrder.CONCURRENT: ClockOrder.CONCURRENT,
}


def reference_compare(a: VectorClock, b: VectorClock) -> ClockOrder:
    """The textbook definition, written as plainly as possible."""
    nodes = set(a.clocks) | set(b.clocks)
    le = all(a.get(n) <= b.get(n) for n in nodes)
    ge = all(a.get(n) >= b.get(n) for n in nodes)
    if le and ge:
        return ClockOrder.EQUAL
    if le:
        return ClockOrder.BEFORE
    if ge:
        return ClockOrder.AFTER
    return ClockOrder.CONCURRENT


# --- the pinned surface -------------------------------------------------------------------


def test_pinned_usage() -> None:
    vc = fsm.VectorClock().increment("n1")
    other = vc.increment("n2")
    assert vc.happened_before(other) and not other.happened_before(vc)
    assert not vc.concurrent_with(other)
    assert vc.compare(other) is ClockOrder.BEFORE
    assert vc.merge(other) == other
    assert VectorClock().increment("n1").increment("n1").get("n1") == 2
    assert VectorClock().get("nobody") == 0


def test_immutable_and_hashable() -> None:
    vc = VectorClock(clocks={"a": 1})
    with pytest.raises(ValidationError):
        vc.clocks = {}  # type: ignore[misc]
    assert vc.increment("a") is not vc and vc.get("a") == 1
    assert len({vc, VectorClock(clocks={"a": 1}), VectorClock(clocks={"a": 2})}) == 2


def test_zero_counters_are_dropped_so_equality_is_causal_equality() -> None:
    assert VectorClock(clocks={"a": 0, "b": 1}) == VectorClock(clocks={"b": 1})
    assert VectorClock(clocks={"a": 0}).compare(VectorClock()) is ClockOrder.EQUAL


def test_trusted_clocks_with_zero_entries_compare_correctly() -> None:
    # the runtime builds clocks without validation; zeros must still mean "absent"
    trusted = construct_trusted(VectorClock, {"clocks": {"a": 0, "b": 1}})
    plain = VectorClock(clocks={"b": 1})
    assert trusted.compare(plain) is ClockOrder.EQUAL
    assert plain.compare(trusted) is ClockOrder.EQUAL
    assert plain.merge(trusted) == plain


def test_json_round_trip() -> None:
    vc = VectorClock(clocks={"n1": 3, "n2": MAX_CLOCK_COUNTER})
    text = vc.model_dump_json()
    assert json.loads(text) == {"clocks": {"n1": 3, "n2": MAX_CLOCK_COUNTER}}
    assert VectorClock.model_validate_json(text) == vc
    assert VectorClock.model_validate(vc.model_dump()) == vc
    snap = fsm.StateSnapshot(id="s", causality=vc)
    assert fsm.StateSnapshot.model_validate_json(snap.model_dump_json()).causality == vc


def test_operators_are_a_partial_order_like_sets() -> None:
    a = VectorClock(clocks={"a": 1})
    b = VectorClock(clocks={"b": 1})
    ab = a.merge(b)
    assert a < ab and a <= ab and ab > a and ab >= a and a <= a and a >= a
    assert not (a < a) and not (a > a)
    assert not (a <= b) and not (a >= b) and not (a < b) and not (a > b)  # concurrent
    assert ab.descends(a) and ab.descends(ab) and not a.descends(ab)
    assert VectorClock().__lt__(object()) is NotImplemented


# --- properties ---------------------------------------------------------------------------


@given(clocks, clocks)
def test_compare_matches_the_definition(a: VectorClock, b: VectorClock) -> None:
    assert a.compare(b) is reference_compare(a, b)
    assert b.compare(a) is INVERSE[a.compare(b)]
    assert (a.compare(b) is ClockOrder.EQUAL) == (a == b)


@given(wide_clocks, wide_clocks)
def test_compare_matches_the_definition_on_any_valid_clock(a: VectorClock, b: VectorClock) -> None:
    assert a.compare(b) is reference_compare(a, b)
    assert a.merge(b).descends(a) and a.merge(b).descends(b)


@given(clocks, clocks)
def test_merge_is_commutative(a: VectorClock, b: VectorClock) -> None:
    assert a.merge(b) == b.merge(a)


@given(clocks, clocks, clocks)
def test_merge_is_associative(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c))


@given(clocks)
def test_merge_is_idempotent(a: VectorClock) -> None:
    assert a.merge(a) == a
    assert a.merge(VectorClock()) == a


@given(clocks, clocks, clocks)
def test_merge_is_the_least_upper_bound(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    merged = a.merge(b)
    assert a <= merged and b <= merged
    assert a.compare(merged) in (ClockOrder.BEFORE, ClockOrder.EQUAL)
    if c >= a and c >= b:
        assert c >= merged


@given(clocks, clocks)
def test_merge_is_consistent_with_compare(a: VectorClock, b: VectorClock) -> None:
    # a <= b exactly when merging b into a changes nothing beyond b
    assert (a <= b) == (a.merge(b) == b)


@given(clocks)
def test_happened_before_is_irreflexive(a: VectorClock) -> None:
    assert not a.happened_before(a)
    assert not a.concurrent_with(a)


@given(clocks, clocks)
def test_happened_before_is_asymmetric(a: VectorClock, b: VectorClock) -> None:
    assert not (a.happened_before(b) and b.happened_before(a))


@given(clocks, clocks, clocks)
def test_happened_before_is_transitive(a: VectorClock, b: VectorClock, c: VectorClock) -> None:
    if a.happened_before(b) and b.happened_before(c):
        assert a.happened_before(c)


@given(clocks, clocks)
def test_concurrency_is_symmetric(a: VectorClock, b: VectorClock) -> None:
    assert a.concurrent_with(b) == b.concurrent_with(a)


@given(clocks, clocks)
def test_exactly_one_relation_holds(a: VectorClock, b: VectorClock) -> None:
    relations = [a.happened_before(b), b.happened_before(a), a == b, a.concurrent_with(b)]
    assert relations.count(True) == 1


@given(clocks, NODES)
def test_increment_moves_strictly_forward(a: VectorClock, node: str) -> None:
    later = a.increment(node)
    assert a.happened_before(later)
    assert later.get(node) == a.get(node) + 1
    assert all(later.get(n) == a.get(n) for n in a.clocks if n != node)


@given(clocks, clocks)
def test_hash_agrees_with_equality(a: VectorClock, b: VectorClock) -> None:
    if a == b:
        assert hash(a) == hash(b)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"clocks": {"": 1}}, "node id must not be empty"),
        ({"clocks": {1: 1}}, "node id must be a string"),
        ({"clocks": {"a/b": 1}}, "must not contain '/'"),
        ({"clocks": {"a": -1}}, "must not be negative (got -1)"),
        ({"clocks": {"a": 2**63}}, "does not fit in 64 bits"),
        ({"clocks": {"a": True}}, "must be an int, got bool"),
        ({"clocks": {"a": 1.0}}, "must be an int, got float"),
        ({"clocks": {"a": "1"}}, "must be an int, got str"),
        ({"clocks": {"a": None}}, "must be an int, got NoneType"),
        ({"clocks": [("a", 1)]}, "must be a mapping of node id -> counter, got list"),
        ({"clocks": None}, "must be a mapping"),
        ({"clock": {"a": 1}}, "VectorClock has no field 'clock'"),
    ],
)
def test_bad_construction_raises_invalid_input(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        VectorClock(**kwargs)
    assert fragment in str(caught.value)
    assert not isinstance(caught.value, ValidationError)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"clocks": {"a": 1.5}}', "must be an int, got float"),
        ('{"clocks": {"a": 99999999999999999999999}}', "does not fit in 64 bits"),
        ('{"clocks": {"a": -3}}', "must not be negative"),
        ('{"clocks": {"": 1}}', "node id must not be empty"),
        ("[1, 2]", "built from a mapping like {'clocks'"),
        ('{"clocks": {"a": 1}', "invalid VectorClock"),
        ('{"clocks": {}, "x": 1}', "no field 'x'"),
    ],
)
def test_bad_json_raises_invalid_input(text: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        VectorClock.model_validate_json(text)
    assert fragment in str(caught.value)


def test_bad_model_validate_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="built from a mapping"):
        VectorClock.model_validate(3)
    with pytest.raises(InvalidInput, match="must not be negative"):
        VectorClock.model_validate({"clocks": {"a": -1}})


def test_error_names_the_field_and_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        VectorClock(clocks={"n1": -4})
    assert caught.value.field == "clocks['n1']" and caught.value.value == -4


def test_nested_in_a_snapshot_the_message_is_the_same() -> None:
    with pytest.raises(ValidationError, match="node id must not be empty"):
        fsm.StateSnapshot(id="s", causality={"clocks": {"": 1}})


@given(st.dictionaries(st.one_of(st.text(max_size=3), st.integers()),
                       st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=2),
                                 st.none()), max_size=4))
def test_any_input_either_builds_or_raises_invalid_input(raw: dict[Any, Any]) -> None:
    try:
        vc = VectorClock(clocks=raw)
    except InvalidInput:
        return
    assert all(type(v) is int and 0 < v <= MAX_CLOCK_COUNTER for v in vc.clocks.values())
    assert vc == VectorClock.model_validate_json(vc.model_dump_json())


def test_increment_checks_the_node_and_the_limit() -> None:
    with pytest.raises(InvalidInput, match="node id must not be empty"):
        VectorClock().increment("")
    with pytest.raises(InvalidInput, match="node id must be a string"):
        VectorClock().increment(7)  # type: ignore[arg-type]
    top = VectorClock(clocks={"a": MAX_CLOCK_COUNTER})
    with pytest.raises(InvalidInput, match="64-bit limit"):
        top.increment("a")
    assert top.increment("b").get("b") == 1


@pytest.mark.parametrize("method", ["merge", "compare", "happened_before", "concurrent_with",
                                    "descends"])
def test_operations_refuse_a_non_clock(method: str) -> None:
    with pytest.raises(InvalidInput, match="needs another VectorClock, got dict"):
        getattr(VectorClock(), method)({"a": 1})
