"""Compaction and statistics for the Firestore store (the ``_compact`` and ``_stats`` hooks).

**Compaction** cannot be one atomic commit (a stream may hold more old events than one
commit's 500 writes), so it is a series of commits, oldest events first, each of which
leaves a valid compacted stream behind: a commit deletes up to 498 events and, in the same
commit, rewrites the first event it keeps self-contained (explicit ``from_state``, full
data — the events it referred to are gone) and, when it deletes version 1, creates the
stream's ``compacted`` marker (appends to an "empty" stream assert it absent: a free key 1
no longer proves the stream empty). So a reader at any moment sees a contiguous log whose
first event reads on its own; a writer whose view predates the compaction still fails its
head check (the event at its expected version is gone, or the one after it is there).

**Statistics** are exact aggregation queries: count and sum of ``size`` per collection and
the highest state and event ``version``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from google.cloud.firestore_v1.async_aggregation import AsyncAggregationQuery
from google.cloud.firestore_v1.async_collection import AsyncCollectionReference

from tai_fsm.records import CleanupResult, StoreStats
from tai_fsm.stores.firestore_codec import (
    COMPACTED,
    EVENTS,
    SNAPSHOTS,
    Token,
    delete_write,
    event_fields,
    event_key,
    index_write,
    kind_collection,
    set_write,
    snapshot_key,
    snapshot_version_of_key,
    stream_range,
    version_of_key,
)
from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS, call
from tai_fsm.stores.firestore_io import Documents, int_field, raw_of
from tai_fsm.stores.ops import STATES
from tai_fsm.stores.planning import EventRow
from tai_fsm.stores.query import index_of_raw

__all__ = ["compact", "governor_stats", "reindex_states"]

#: Builds the self-contained row of the event at a version (the base class's
#: ``Store._decode_document_at`` for one stream), None when there is no such event.
SelfContained = Callable[[int], Awaitable[EventRow | None]]


async def compact(
    docs: Documents,
    governor: str,
    stream_id: str,
    cut: int,
    last: int,
    rewrite: EventRow | None,
    self_contained: SelfContained,
    max_writes: int,
) -> CleanupResult:
    """``Store._compact``: delete the events ``<= last`` (see the module docstring), then
    the snapshots older than the newest one at or before ``cut``."""
    what = f"compaction of {stream_id!r}"
    events, event_bytes = 0, 0
    if last >= 1:
        events, event_bytes = await _compact_events(
            docs, governor, stream_id, last, rewrite, self_contained, max_writes, what
        )
    snapshots, snapshot_bytes = await _drop_snapshots(docs, governor, stream_id, cut, what)
    return CleanupResult(
        deleted_events=events,
        deleted_snapshots=snapshots,
        recovered_bytes=event_bytes + snapshot_bytes,
    )


async def _compact_events(
    docs: Documents,
    governor: str,
    stream_id: str,
    last: int,
    rewrite: EventRow | None,
    self_contained: SelfContained,
    max_writes: int,
    what: str,
) -> tuple[int, int]:
    """Commits of up to ``max_writes - 2`` deletions + the first kept event rewritten +
    the marker; returns (events deleted, bytes recovered)."""
    col = docs.events(governor)
    start = stream_range(stream_id)[0]
    end = event_key(stream_id, last + 1)
    page = max_writes - 1  # the deletions and the event kept after them
    deleted, recovered = 0, 0
    while True:
        query = docs.key_range(col, start, end, end_inclusive=True, fields=["size"])
        found = await docs.fetch(query.limit(page), what)
        doomed = [doc for doc in found if version_of_key(doc.id) <= last][: page - 1]
        if not doomed:
            return deleted, recovered
        boundary = version_of_key(doomed[-1].id) + 1
        kept = next((doc for doc in found if version_of_key(doc.id) == boundary), None)
        writes: list[Any] = [delete_write(str(doc.reference._document_path)) for doc in doomed]
        if version_of_key(doomed[0].id) == 1:
            writes.append(
                set_write(docs.marker_path(governor, stream_id), {"stream_id": stream_id})
            )
        row = rewrite if boundary == last + 1 else await self_contained(boundary)
        if row is not None and kept is not None:
            version, event_id, ts, raw = row
            fields = event_fields(stream_id, version, event_id, ts, raw)
            path = docs.event_path(governor, stream_id, version)
            writes.append(set_write(path, fields, True))  # must still exist
            recovered -= len(raw) - int_field(kept, "size")
        await docs.commit(writes, what)
        deleted += len(doomed)
        recovered += sum(int_field(doc, "size") for doc in doomed)
        if len(found) < page:  # the whole range was in this page
            return deleted, recovered
        start = event_key(stream_id, boundary)


async def _drop_snapshots(
    docs: Documents, governor: str, stream_id: str, cut: int, what: str
) -> tuple[int, int]:
    """Delete the snapshots older than the newest one at or before ``cut``: one query
    finds that one, then the older ones are deleted (keys invert versions, so they are
    the keys after it)."""
    end = stream_range(stream_id)[1]
    col = docs.snapshots(governor)
    query = docs.key_range(col, snapshot_key(stream_id, cut), end, end_inclusive=False, fields=[])
    covering = await docs.fetch(query.limit(1), what)
    if not covering:
        return 0, 0
    older = snapshot_key(stream_id, snapshot_version_of_key(covering[0].id) - 1)
    return await docs.delete_range(col, older, end, what, end_inclusive=False)


# ---------------------------------------------------------------------- statistics
async def governor_stats(docs: Documents, governors: list[str]) -> StoreStats:
    """Exact figures summed over ``governors`` (each in parallel)."""
    parts = await asyncio.gather(*(_one_governor(docs, g) for g in governors))
    return StoreStats(
        total_states=sum(p.total_states for p in parts),
        total_events=sum(p.total_events for p in parts),
        total_snapshots=sum(p.total_snapshots for p in parts),
        max_version=max((p.max_version for p in parts), default=0),
        bytes=sum(p.bytes for p in parts),
    )


async def _one_governor(docs: Documents, governor: str) -> StoreStats:
    """One governor: its collections (one ListCollectionIds), then in parallel count and
    sum of ``size`` per collection and the highest state and event ``version``. ``bytes``
    covers records of every kind, events and snapshots (not the ``compacted`` markers)."""

    async def totals(col: AsyncCollectionReference) -> dict[str, int]:
        # no ordering: sum() cannot follow an order on __name__
        counted = cast(AsyncAggregationQuery, cast(Any, col).count(alias="n"))
        return await docs.aggregate(counted.sum("size", alias="b"), "statistics")

    async def highest(col: AsyncCollectionReference) -> int:
        query = col.order_by("version", direction="DESCENDING").select(["version"])
        found = await docs.fetch(query.limit(1), "statistics")
        return int_field(found[0], "version") if found else 0

    async def names() -> list[str]:
        return [col.id async for col in docs.governor(governor).collections()]

    collections = [name for name in await call(names(), "statistics") if name != COMPACTED]
    states = kind_collection(STATES)
    sums_and_tops = await asyncio.gather(
        *(totals(docs.collection(governor, name)) for name in collections),
        highest(docs.collection(governor, states)),
        highest(docs.events(governor)),
    )
    sums = dict(zip(collections, cast(list[dict[str, int]], sums_and_tops[:-2]), strict=True))
    empty = {"n": 0, "b": 0}
    return StoreStats(
        total_states=sums.get(states, empty)["n"],
        total_events=sums.get(EVENTS, empty)["n"],
        total_snapshots=sums.get(SNAPSHOTS, empty)["n"],
        max_version=max(cast(int, sums_and_tops[-2]), cast(int, sums_and_tops[-1])),
        bytes=sum(part["b"] for part in sums.values()),
    )


async def reindex_states(docs: Documents, governor: str, page: int = 300) -> int:
    """Write the ``machine``/``state`` fields of every state document of ``governor`` whose
    fields differ from what its record holds (one small commit per such document,
    preconditioned on its ``update_time``: a document changed meanwhile fails the
    precondition and is skipped — its writer set the fields). Returns how many were
    written."""
    col = docs.records(governor, STATES)
    written = 0
    async for found in docs.scan(
        col, None, None, end_inclusive=False, page=page,
        fields=["record", "machine", "state", "version"], what="reindex of states",
    ):
        writes = []
        for doc in found:
            fields = doc.to_dict() or {}
            index = index_of_raw(raw_of(doc))
            if (fields.get("machine"), fields.get("state")) == index:
                continue
            token = Token.of(int_field(doc, "version"), doc.update_time, 0)
            path = str(doc.reference._document_path)
            writes.append(index_write(path, index, token))
        for write in writes:  # one by one: a stale precondition must not void the others
            try:
                await docs.commit([write], "reindex of states")
            except CONFLICT_ERRORS:
                continue
            written += 1
    return written
