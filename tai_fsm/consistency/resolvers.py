"""Conflict resolvers: pick or merge two versions of one record.

Every resolver satisfies the small :class:`Resolver` protocol, ``resolve(a, b) ->
StateSnapshot``, and every one shipped here is **symmetric and deterministic**:
``resolve(a, b) == resolve(b, a)``, and every replica given the same two versions picks the
same result. That is what lets replicas converge without talking to each other.

* :class:`LastWriteWinsResolver` — the newer timestamp wins; ties are broken by a fixed
  total order (see :func:`lww_compare`). Never fails, never merges; may drop a concurrent
  write (and, with skewed clocks, a causally newer one).
* :class:`CausalityAwareResolver` — the causally newer version wins; concurrent versions go
  to a merge function or raise ``ConflictResolutionFailed``.
* :class:`MergeResolver` — wraps a plain function ``merge(a, b)`` and calls it for every
  pair; :func:`as_resolver` turns any such function into a resolver, so a function is
  accepted anywhere a resolver is.

A **merge function** is ``merge(a: StateSnapshot, b: StateSnapshot) -> StateSnapshot | data``:

* it is called with the two versions in a canonical order — the one last-write-wins would
  pick comes second — so a deterministic merge function yields the same result whichever
  order the resolver was given them;
* returning ``a`` or ``b`` itself picks that version, returned unchanged;
* returning any other ``StateSnapshot`` (same record id) makes it the result, with its
  clock replaced as below;
* returning anything else makes it the ``data`` of a new version: same id, the higher of
  the two versions and timestamps, metadata ``changed_by=<node id or "system">``,
  ``reason="merge of concurrent versions"``, ``parent_version`` the higher version and
  ``context={"merged_versions": [lower, higher]}``;
* a merged result's clock is ``a.causality.merge(b.causality)`` (merged further with the
  returned snapshot's own clock), and — only if the resolver was given ``node_id`` —
  incremented for that node. Without the increment, two replicas that merge the same pair
  the same way produce EQUAL versions (no new conflict), so leave ``node_id`` unset for
  deterministic merges; set it when a merge is a new write to attribute to a node;
* it must be synchronous; an exception it raises becomes ``ConflictResolutionFailed``
  (chained), and a ``ConflictResolutionFailed`` it raises passes through.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cmp_to_key
from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic_core import to_jsonable_python

from tai_fsm.consistency.vclock import check_same_record, describe
from tai_fsm.errors import ConflictResolutionFailed, InvalidInput, shown
from tai_fsm.ids import validate_id
from tai_fsm.records import ChangeMetadata, ClockOrder, StateSnapshot

__all__ = [
    "CausalityAwareResolver",
    "LastWriteWinsResolver",
    "MergeFunction",
    "MergeResolver",
    "Resolver",
    "as_resolver",
    "canonical_order",
    "lww_compare",
]

#: ``merge(a, b) -> StateSnapshot | data`` (see the module docstring for the contract).
MergeFunction = Callable[[StateSnapshot, StateSnapshot], Any]

_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


@runtime_checkable
class Resolver(Protocol):
    """Resolves two versions of one record into one. Implementations should be symmetric
    (``resolve(a, b) == resolve(b, a)``) and deterministic, so replicas converge."""

    def resolve(self, a: StateSnapshot, b: StateSnapshot) -> StateSnapshot:
        """The version to keep: one of ``a`` and ``b``, or a merge of both."""
        ...


def _canonical(value: Any) -> bytes:
    """A deterministic encoding of ``value`` (sorted keys), for tie-breaks only."""
    try:
        return orjson.dumps(value, option=_SORTED)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return orjson.dumps(to_jsonable_python(value), option=_SORTED)
    except Exception:  # not JSON at all: fall back to something stable per value
        return repr(value).encode("utf-8", "surrogatepass")


def lww_compare(a: StateSnapshot, b: StateSnapshot) -> int:
    """-1, 0 or 1 as ``a`` loses to, ties with or beats ``b`` under last-write-wins.

    A total order, compared key by key until one differs: ``timestamp``; the sum of the
    vector clock's counters (if one clock happened before the other its sum is smaller,
    so on equal timestamps the causally newer wins); ``version``; the canonical JSON of
    ``data``; the canonical JSON of the whole record. 0 means the two serialise
    identically, so either may stand for both."""
    if a.timestamp != b.timestamp:
        return 1 if a.timestamp > b.timestamp else -1
    sum_a, sum_b = sum(a.causality.clocks.values()), sum(b.causality.clocks.values())
    if sum_a != sum_b:
        return 1 if sum_a > sum_b else -1
    if a.version != b.version:
        return 1 if a.version > b.version else -1
    data_a, data_b = _canonical(a.data), _canonical(b.data)
    if data_a != data_b:
        return 1 if data_a > data_b else -1
    whole_a = _canonical(a.model_dump(mode="json"))
    whole_b = _canonical(b.model_dump(mode="json"))
    return (whole_a > whole_b) - (whole_a < whole_b)


_LWW_KEY = cmp_to_key(lww_compare)


def canonical_order(versions: list[StateSnapshot]) -> list[StateSnapshot]:
    """``versions`` sorted by :func:`lww_compare`, the last-write-wins winner last."""
    return sorted(versions, key=_LWW_KEY)


class LastWriteWinsResolver:
    """The version with the newer ``timestamp`` wins; equal timestamps are settled by
    :func:`lww_compare`'s tie-breaks (clock, version, data, whole record), so every
    replica picks the same winner whatever the argument order. Returns one of its inputs
    unchanged; never raises for two versions of one record.

    Cheap and always available, but a concurrent write is silently dropped, and with
    skewed wall clocks a causally newer write can lose to an older one."""

    __slots__ = ()

    def resolve(self, a: StateSnapshot, b: StateSnapshot) -> StateSnapshot:
        a, b = check_same_record(a, b, "LastWriteWinsResolver.resolve")
        return b if lww_compare(a, b) < 0 else a

    def __repr__(self) -> str:
        return "LastWriteWinsResolver()"


def _check_node(node_id: object) -> str | None:
    return None if node_id is None else validate_id(node_id, "node_id")


def _check_merge(merge: object, who: str) -> None:
    if not callable(merge):
        raise InvalidInput(
            f"{who} merge must be a function merge(a, b) -> StateSnapshot | data, "
            f"got {type(merge).__name__} {shown(merge)}",
            field="merge",
            value=merge,
        )


def _merged(
    a: StateSnapshot, b: StateSnapshot, merge: MergeFunction, node_id: str | None
) -> StateSnapshot:
    """Call ``merge`` on ``a`` and ``b`` in canonical order and build the result (see the
    module docstring)."""
    first, second = (b, a) if lww_compare(a, b) > 0 else (a, b)
    try:
        result = merge(first, second)
    except ConflictResolutionFailed:
        raise
    except Exception as exc:
        raise ConflictResolutionFailed(
            f"the merge function failed on {a.id!r} {describe(first)} and {describe(second)}: "
            f"{type(exc).__name__}: {exc}",
            record_id=a.id,
            conflicting=(first, second),
        ) from exc
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise InvalidInput(
            "merge functions must be synchronous; "
            f"{getattr(merge, '__name__', shown(merge))} returned an awaitable",
            field="merge",
            value=merge,
        )
    if result is first or result is second:
        return result
    clock = a.causality.merge(b.causality)
    if isinstance(result, StateSnapshot):
        if result.id != a.id:
            raise ConflictResolutionFailed(
                f"the merge function returned a version of {result.id!r} "
                f"while merging {a.id!r}",
                record_id=a.id,
                conflicting=(first, second),
            )
        clock = clock.merge(result.causality)
        if node_id is not None:
            clock = clock.increment(node_id)
        return result.model_copy(update={"causality": clock})
    if node_id is not None:
        clock = clock.increment(node_id)
    high = max(a.version, b.version)
    return StateSnapshot(
        id=a.id,
        data=result,
        version=high,
        timestamp=max(a.timestamp, b.timestamp),
        metadata=ChangeMetadata(
            changed_by=node_id or "system",
            reason="merge of concurrent versions",
            parent_version=high,
            context={"merged_versions": sorted((a.version, b.version))},
        ),
        causality=clock,
    )


class CausalityAwareResolver:
    """The causally newer version wins (by vector clock), returned unchanged.

    * one clock happened before the other: the other wins — never the causally older;
    * EQUAL clocks (also two versions with no clock at all): last-write-wins decides
      (:func:`lww_compare`), deterministically;
    * CONCURRENT clocks: ``merge(a, b)`` builds the result (contract in the module
      docstring); without a merge function, ``ConflictResolutionFailed`` names the record
      and both versions.

    ``node_id``: if given, a merged result's clock is also incremented for that node."""

    __slots__ = ("merge", "node_id")

    def __init__(self, merge: MergeFunction | None = None, *, node_id: str | None = None) -> None:
        if merge is not None:
            _check_merge(merge, "CausalityAwareResolver")
        self.merge = merge
        self.node_id = _check_node(node_id)

    def resolve(self, a: StateSnapshot, b: StateSnapshot) -> StateSnapshot:
        a, b = check_same_record(a, b, "CausalityAwareResolver.resolve")
        order = a.causality.compare(b.causality)
        if order is ClockOrder.AFTER:
            return a
        if order is ClockOrder.BEFORE:
            return b
        if order is ClockOrder.EQUAL:
            return b if lww_compare(a, b) < 0 else a
        if self.merge is None:
            first, second = canonical_order([a, b])
            raise ConflictResolutionFailed(
                f"concurrent versions of {a.id!r}: {describe(first)} and {describe(second)}; "
                "neither has seen the other's writes. Give CausalityAwareResolver a merge "
                "function, or use LastWriteWinsResolver to keep the newer timestamp",
                record_id=a.id,
                conflicting=(first, second),
            )
        return _merged(a, b, self.merge, self.node_id)

    def __repr__(self) -> str:
        merge = getattr(self.merge, "__qualname__", None) if self.merge else None
        node = f", node_id={self.node_id!r}" if self.node_id else ""
        return f"CausalityAwareResolver(merge={merge}{node})"


class MergeResolver:
    """A plain merge function used as a resolver: ``merge(a, b)`` is called for EVERY pair
    of differing versions (two equal versions resolve to the first without a call), with
    the contract in the module docstring. When the function should only see true
    conflicts — causally ordered versions resolved by their clocks — use
    ``CausalityAwareResolver(merge=...)`` instead."""

    __slots__ = ("merge", "node_id")

    def __init__(self, merge: MergeFunction, *, node_id: str | None = None) -> None:
        _check_merge(merge, "MergeResolver")
        self.merge = merge
        self.node_id = _check_node(node_id)

    def resolve(self, a: StateSnapshot, b: StateSnapshot) -> StateSnapshot:
        a, b = check_same_record(a, b, "MergeResolver.resolve")
        if a == b:
            return a
        return _merged(a, b, self.merge, self.node_id)

    def __repr__(self) -> str:
        node = f", node_id={self.node_id!r}" if self.node_id else ""
        return f"MergeResolver({getattr(self.merge, '__qualname__', self.merge)!r}{node})"


def as_resolver(resolver: Resolver | MergeFunction) -> Resolver:
    """``resolver`` itself if it has a ``resolve`` method, a :class:`MergeResolver` around
    it if it is a plain function, else ``InvalidInput``."""
    if isinstance(resolver, Resolver):
        return resolver
    if callable(resolver):
        return MergeResolver(resolver)
    raise InvalidInput(
        "a resolver is an object with resolve(a, b) -> StateSnapshot or a function "
        f"merge(a, b) -> StateSnapshot | data; got {type(resolver).__name__} {shown(resolver)}",
        field="resolver",
        value=resolver,
    )
