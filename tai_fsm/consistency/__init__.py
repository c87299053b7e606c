"""Eventual consistency: vector clocks, conflict resolvers, stale-read checks.

``VectorClock`` and ``ClockOrder`` are records (:mod:`tai_fsm.records`); the resolvers
(:mod:`.resolvers`) and ``EventualConsistency`` (:mod:`.eventual`) work on ``StateSnapshot``
versions of one record. See docs/consistency.md.
"""

from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.resolvers import (
    CausalityAwareResolver,
    LastWriteWinsResolver,
    MergeFunction,
    MergeResolver,
    Resolver,
    as_resolver,
    canonical_order,
    lww_compare,
)
from tai_fsm.consistency.vclock import ClockOrder, VectorClock, snapshot_order

__all__ = [
    "CausalityAwareResolver",
    "ClockOrder",
    "EventualConsistency",
    "LastWriteWinsResolver",
    "MergeFunction",
    "MergeResolver",
    "Resolver",
    "VectorClock",
    "as_resolver",
    "canonical_order",
    "lww_compare",
    "snapshot_order",
]
