"""Eventual consistency: vector clocks, conflict resolvers, stale-read checks.

``VectorClock`` and ``ClockOrder`` are records (:mod:`tai_fsm.records`); the resolvers
(:mod:`.resolvers`) and ``EventualConsistency`` (:mod:`.eventual`) work on ``StateSnapshot``
versions of one record; ``ReplicatedStore`` (:mod:`.replicated`) keeps several stores in
step with them. See docs/consistency.md.
"""

from tai_fsm.consistency.antientropy import SyncFailure, SyncReport
from tai_fsm.consistency.divergence import RESOLVE_ACTION, Resolution
from tai_fsm.consistency.eventual import EventualConsistency
from tai_fsm.consistency.replicated import ReplicatedStore
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
    "RESOLVE_ACTION",
    "CausalityAwareResolver",
    "ClockOrder",
    "EventualConsistency",
    "LastWriteWinsResolver",
    "MergeFunction",
    "MergeResolver",
    "ReplicatedStore",
    "Resolution",
    "Resolver",
    "SyncFailure",
    "SyncReport",
    "VectorClock",
    "as_resolver",
    "canonical_order",
    "lww_compare",
    "snapshot_order",
]
