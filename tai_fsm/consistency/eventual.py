"""``EventualConsistency``: resolve conflicting versions, detect and repair stale reads.

Pure functions over ``StateSnapshot`` versions — no I/O, so they are synchronous and can be
called from async code directly. "Version" below means a ``StateSnapshot`` of one record;
how two versions relate is :func:`tai_fsm.consistency.vclock.snapshot_order` (vector
clocks when both have one, else version numbers).

Staleness is one rule, "does this version include every write the other one has?":

* BEFORE (behind): stale;
* CONCURRENT (each has writes the other lacks): stale too — a read that misses a write
  you have seen is not safe to act on, whatever else it has. ``StaleRead`` says so and
  points to ``resolve_conflict``; with ``repair`` the two are resolved instead;
* EQUAL or AFTER: fine.
"""

from __future__ import annotations

from collections.abc import Iterable

from tai_fsm.consistency.resolvers import (
    LastWriteWinsResolver,
    MergeFunction,
    Resolver,
    as_resolver,
    canonical_order,
)
from tai_fsm.consistency.vclock import check_same_record, describe, snapshot_order
from tai_fsm.errors import InvalidInput, StaleRead, shown
from tai_fsm.records import ClockOrder, StateSnapshot

__all__ = ["EventualConsistency"]


def _stale(
    read: StateSnapshot, newer: StateSnapshot, order: ClockOrder, newer_is: str
) -> StaleRead:
    if order is ClockOrder.CONCURRENT:
        how = (
            f"is concurrent with {describe(newer)}{newer_is}: each has writes the other "
            "lacks; resolve_conflict() settles them (check_read does with repair=True)"
        )
    else:
        how = f"is behind {describe(newer)}{newer_is}; read again"
    return StaleRead(
        f"stale read of {read.id!r}: {describe(read)} {how}",
        record_id=read.id,
        read_version=read.version,
        newer_version=newer.version,
    )


class EventualConsistency:
    """Conflict resolution and stale-read checks for replicated versions of a record.

    ``resolver``: a :class:`~tai_fsm.consistency.resolvers.Resolver`, or a plain merge
    function (wrapped in ``MergeResolver``); default ``LastWriteWinsResolver()``.
    ``repair``: the default for :meth:`check_read` — ``False`` raises ``StaleRead``,
    ``True`` returns the repaired version instead."""

    __slots__ = ("repair", "resolver")

    def __init__(
        self, resolver: Resolver | MergeFunction | None = None, *, repair: bool = False
    ) -> None:
        self.resolver: Resolver = (
            LastWriteWinsResolver() if resolver is None else as_resolver(resolver)
        )
        if not isinstance(repair, bool):
            raise InvalidInput(
                f"repair must be True or False, got {shown(repair)}", field="repair", value=repair
            )
        self.repair = repair

    def __repr__(self) -> str:
        return f"EventualConsistency(resolver={self.resolver!r}, repair={self.repair})"

    def resolve_conflict(self, a: StateSnapshot, b: StateSnapshot) -> StateSnapshot:
        """The version to keep of two versions of one record, as the resolver decides
        (with the default, the newer timestamp, whichever order they are passed in)."""
        a, b = check_same_record(a, b, "resolve_conflict")
        return self.resolver.resolve(a, b)

    def resolve_all(self, versions: Iterable[StateSnapshot]) -> StateSnapshot:
        """Resolve any number of versions of one record (say, one per replica) into one.

        The versions are folded in a canonical order (:func:`canonical_order`), so the
        result does not depend on the order they are given in; with last-write-wins it is
        simply the winner of all."""
        pending = list(versions)
        if not pending:
            raise InvalidInput("resolve_all needs at least one version", field="versions")
        for version in pending:
            check_same_record(pending[0], version, "resolve_all")
        ordered = canonical_order(pending)
        result = ordered[0]
        for version in ordered[1:]:
            result = self.resolver.resolve(result, version)
        return result

    def order(self, a: StateSnapshot, b: StateSnapshot) -> ClockOrder:
        """How ``a`` relates to ``b`` ("a is BEFORE b"): vector clocks when both have
        one, else versions (see :func:`~tai_fsm.consistency.vclock.snapshot_order`)."""
        a, b = check_same_record(a, b, "order")
        return snapshot_order(a, b)

    def is_stale(self, old: StateSnapshot, new: StateSnapshot) -> bool:
        """True when ``old`` lacks a write ``new`` has: BEFORE or CONCURRENT."""
        return self.order(old, new) in (ClockOrder.BEFORE, ClockOrder.CONCURRENT)

    def detect_stale_read(self, old: StateSnapshot, new: StateSnapshot) -> None:
        """Raise ``StaleRead`` when ``old`` is behind ``new`` — by version, or causally by
        vector clock — or concurrent with it (it misses some of ``new``'s writes). Equal
        or newer returns ``None``. The message names the record id and both versions."""
        order = self.order(old, new)
        if order in (ClockOrder.BEFORE, ClockOrder.CONCURRENT):
            raise _stale(old, new, order, "")

    def check_read(
        self, seen: StateSnapshot | None, read: StateSnapshot, *, repair: bool | None = None
    ) -> StateSnapshot:
        """Monotonic reads: ``read`` if it includes everything in ``seen`` (the newest
        version this caller has already seen; ``None`` when it has seen none).

        Otherwise, without repair, ``StaleRead`` naming the record and both versions; with
        repair (``repair=True``, or the instance's default when ``repair`` is ``None``):
        ``seen`` when ``read`` is behind it, ``resolve_conflict(seen, read)`` when the two
        are concurrent."""
        if seen is None:
            check_same_record(read, read, "check_read")
            return read
        read, seen = check_same_record(read, seen, "check_read")
        order = snapshot_order(read, seen)
        if order in (ClockOrder.AFTER, ClockOrder.EQUAL):
            return read
        if not (self.repair if repair is None else repair):
            raise _stale(read, seen, order, " already seen")
        if order is ClockOrder.BEFORE:
            return seen
        return self.resolver.resolve(seen, read)
