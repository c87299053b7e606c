"""Causal order of two versions of one record.

``VectorClock`` and ``ClockOrder`` live in :mod:`tai_fsm.records` (every record carries a
clock); this module adds the rule that orders two ``StateSnapshot`` versions, which the
resolvers and the stale-read checks share:

* both clocks non-empty: the clocks decide (they see across replicas, where versions are
  counted per store); EQUAL clocks fall back to the versions;
* a clock is empty (a record written through the seed-compatible store API, which carries
  no causality): the versions decide — a lower version is BEFORE, never CONCURRENT.
"""

from __future__ import annotations

from tai_fsm.errors import InvalidInput, shown
from tai_fsm.records import MAX_CLOCK_COUNTER, ClockOrder, StateSnapshot, VectorClock

__all__ = [
    "MAX_CLOCK_COUNTER",
    "ClockOrder",
    "VectorClock",
    "check_same_record",
    "describe",
    "snapshot_order",
]


def check_same_record(a: object, b: object, operation: str) -> tuple[StateSnapshot, StateSnapshot]:
    """``(a, b)`` if both are ``StateSnapshot`` versions of one record, else ``InvalidInput``
    saying which argument is wrong."""
    for name, value in (("first", a), ("second", b)):
        if not isinstance(value, StateSnapshot):
            raise InvalidInput(
                f"{operation} needs two StateSnapshot versions; the {name} argument is "
                f"{type(value).__name__} {shown(value)}",
                field=name,
                value=value,
            )
    assert isinstance(a, StateSnapshot) and isinstance(b, StateSnapshot)
    if a.id != b.id:
        raise InvalidInput(
            f"{operation} compares versions of ONE record, got {a.id!r} and {b.id!r}",
            field="id",
            value=(a.id, b.id),
        )
    return a, b


def snapshot_order(a: StateSnapshot, b: StateSnapshot) -> ClockOrder:
    """How version ``a`` relates to version ``b`` of the same record ("a is BEFORE b"):
    by their vector clocks when both have one, else (or when the clocks are EQUAL) by
    version number. Only two non-empty clocks can be CONCURRENT."""
    if a.causality.clocks and b.causality.clocks:
        order = a.causality.compare(b.causality)
        if order is not ClockOrder.EQUAL:
            return order
    if a.version < b.version:
        return ClockOrder.BEFORE
    if a.version > b.version:
        return ClockOrder.AFTER
    return ClockOrder.EQUAL


def describe(snapshot: StateSnapshot) -> str:
    """``version 3 (clock {n1: 2, n2: 1})`` — a version as error messages name it."""
    clocks = snapshot.causality.clocks
    if not clocks:
        return f"version {snapshot.version}"
    text = ", ".join(f"{node}: {count}" for node, count in sorted(clocks.items()))
    if len(text) > 120:
        text = f"{text[:100]}... ({len(clocks)} nodes)"
    return f"version {snapshot.version} (clock {{{text}}})"
