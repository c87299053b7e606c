"""Document references, key-range scans, commits and stream heads for the Firestore store.

:class:`Documents` is the layer between :class:`~tai_fsm.stores.firestore.FirestoreStore`
(the Store contract) and the ``google.cloud.firestore`` client: it knows the layout of
:mod:`tai_fsm.stores.firestore_codec`, turns Google errors into tai-fsm errors, and counts
on nothing but write preconditions for concurrency.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any, cast

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud.firestore import AsyncClient
from google.cloud.firestore_v1.async_aggregation import AsyncAggregationQuery
from google.cloud.firestore_v1.async_collection import AsyncCollectionReference
from google.cloud.firestore_v1.async_document import AsyncDocumentReference
from google.cloud.firestore_v1.async_query import AsyncQuery
from google.cloud.firestore_v1.base_document import DocumentSnapshot
from google.cloud.firestore_v1.types.write import WriteResult as _WriteResultPb
from google.protobuf.timestamp_pb2 import Timestamp

from tai_fsm.errors import IntegrityError, StoreUnavailable
from tai_fsm.ids import validate_id
from tai_fsm.records import Event, StateSnapshot, StoredState, StoreStats
from tai_fsm.stores.common import decode_event, decode_snapshot
from tai_fsm.stores.firestore_codec import (
    Token,
    delete_write,
    event_key,
    record_of,
    stream_range,
)
from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS, call, translate

__all__ = ["RETRIES", "Doc", "Documents", "pause"]

#: Attempts for operations that race other writers (unconditional writes, head lookups).
RETRIES = 25

Doc = DocumentSnapshot[AsyncDocumentReference]


async def pause(attempt: int) -> None:
    """Sleep a jittered, exponentially growing moment (at most 0.5 s) before a retry."""
    await asyncio.sleep(random.uniform(0, min(0.5, 0.005 * 2**attempt)))


class Documents:
    """Firestore I/O for one store: ``client`` and the root collection id ``root``."""

    def __init__(self, client: AsyncClient, root: str) -> None:
        self.client = client
        self.root = root
        self._base: str | None = None

    # ------------------------------------------------------------------ references
    def root_collection(self) -> AsyncCollectionReference:
        return self.client.collection(self.root)

    def governor(self, governor: str) -> AsyncDocumentReference:
        return self.root_collection().document(validate_id(governor, "governor"))

    def states(self, governor: str) -> AsyncCollectionReference:
        return cast(AsyncCollectionReference, self.governor(governor).collection("states"))

    def events(self, governor: str) -> AsyncCollectionReference:
        return cast(AsyncCollectionReference, self.governor(governor).collection("events"))

    def snapshots(self, governor: str) -> AsyncCollectionReference:
        return cast(AsyncCollectionReference, self.governor(governor).collection("snapshots"))

    @staticmethod
    def path(ref: AsyncDocumentReference) -> str:
        """The full resource name of a document (for write protobufs)."""
        return str(ref._document_path)

    def doc_path(self, governor: str, collection: str, key: str) -> str:
        """The resource name of ``{root}/{governor}/{collection}/{key}`` without building
        references (the commit's hot path; ``governor`` and ``key`` must be valid ids)."""
        if self._base is None:
            self._base = f"{self.client._database_string}/documents/{self.root}"
        return f"{self._base}/{governor}/{collection}/{key}"

    # ------------------------------------------------------------------ queries
    @staticmethod
    def key_range(
        col: AsyncCollectionReference,
        first: str | None,
        end: str | None,
        *,
        end_inclusive: bool,
        after: str | None = None,
        fields: list[str] | None = None,
    ) -> AsyncQuery:
        """Documents with ``first <= id`` (``after < id`` when given) and ``id < end``
        (``<= end`` when inclusive; None = unbounded), in key order — served by the
        built-in key index. ``fields`` projects (``[]``: names only)."""
        query: AsyncQuery = col.select(fields) if fields is not None else col.order_by("__name__")
        if fields is not None:
            query = query.order_by("__name__")
        if after is not None:
            query = query.start_after({"__name__": col.document(after)})
        elif first:
            query = query.start_at({"__name__": col.document(first)})
        if end is None:
            return query
        bound = {"__name__": col.document(end)}
        return query.end_at(bound) if end_inclusive else query.end_before(bound)

    async def fetch(self, query: AsyncQuery, what: str) -> list[Doc]:
        """Run ``query`` (one RunQuery RPC)."""
        return list(await call(query.get(), what))

    async def scan(
        self,
        col: AsyncCollectionReference,
        first: str | None,
        end: str | None,
        *,
        end_inclusive: bool,
        page: int,
        what: str,
        fields: list[str] | None = None,
    ) -> AsyncIterator[list[Doc]]:
        """Pages of at most ``page`` documents of a key range, one query per page."""
        after: str | None = None
        while True:
            query = self.key_range(
                col, first, end, end_inclusive=end_inclusive, after=after, fields=fields
            )
            docs = await self.fetch(query.limit(page), what)
            if docs:
                yield docs
            if len(docs) < page:
                return
            after = docs[-1].id

    async def aggregate(self, query: AsyncAggregationQuery, what: str) -> dict[str, int]:
        """Run an aggregation query; alias -> integer value."""
        result = await call(query.get(), what)
        return {agg.alias: int(agg.value or 0) for agg in result[0]}

    async def get_all(self, refs: list[AsyncDocumentReference], what: str) -> list[Doc]:
        """Several documents through one BatchGetDocuments RPC (missing ones included,
        with ``exists`` False)."""

        async def collect() -> list[Doc]:
            return [doc async for doc in self.client.get_all(refs)]

        return await call(collect(), what)

    # ------------------------------------------------------------------ writes
    async def commit(self, writes: list[Any], what: str) -> list[Timestamp]:
        """Commit ``writes`` (write protobufs, see :mod:`~tai_fsm.stores.firestore_codec`)
        atomically in ONE RPC; returns each write's ``update_time``. Failed preconditions
        (ALREADY_EXISTS, FAILED_PRECONDITION, NOT_FOUND) propagate as Google errors for the
        caller to interpret; everything else is translated."""
        batch = self.client.batch()
        batch._add_write_pbs(writes)
        try:
            results = await batch.commit()
        except CONFLICT_ERRORS:
            raise
        except (gexc.GoogleAPIError, auth_exc.GoogleAuthError) as exc:
            raise translate(exc, what) from exc
        return [_WriteResultPb.pb(result).update_time for result in results]

    # ------------------------------------------------------------------ records
    @staticmethod
    def stored_state(doc: Doc, governor: str) -> StoredState:
        """A state document as a ``StoredState`` with its token."""
        data = doc.to_dict()
        version = int((data or {}).get("version") or 0)
        snapshot = decode_snapshot(record_of(data), governor, doc.id, version)
        return StoredState(
            snapshot=snapshot, version=version, token=str(Token.of(version, doc.update_time))
        )

    @staticmethod
    def event(doc: Doc, governor: str) -> Event:
        data = doc.to_dict() or {}
        stream_id, version = data.get("stream_id"), data.get("version")
        if not isinstance(stream_id, str) or not isinstance(version, int):
            raise IntegrityError(f"event document {doc.id!r} in governor {governor!r} is corrupt")
        return decode_event(record_of(data), governor, stream_id, version)

    @staticmethod
    def snapshot(doc: Doc, governor: str, stream_id: str) -> StateSnapshot:
        version = int((doc.to_dict() or {}).get("version") or 0)
        return decode_snapshot(record_of(doc.to_dict()), governor, stream_id, version, "snapshot")

    async def get_state(self, governor: str, state_id: str) -> StoredState | None:
        """The state record (one ``get``), or None when absent."""
        ref = self.states(governor).document(state_id)
        doc = await call(ref.get(), f"read of state {state_id!r}")
        return self.stored_state(doc, governor) if doc.exists else None

    # ------------------------------------------------------------------ stream heads
    async def count(self, governor: str, stream_id: str) -> int:
        """Event documents of ``stream_id`` (one aggregation over its key range; billed one
        read per 1000 index entries)."""
        first, end = stream_range(stream_id)
        query = self.key_range(self.events(governor), first, end, end_inclusive=False)
        counted = cast(AsyncAggregationQuery, query.count(alias="n"))
        return (await self.aggregate(counted, f"count of stream {stream_id!r}"))["n"]

    async def lowest(self, governor: str, stream_id: str) -> int:
        """The oldest stored version of ``stream_id`` (0 when it has no events)."""
        first, end = stream_range(stream_id)
        col = self.events(governor)
        query = self.key_range(col, first, end, end_inclusive=False, fields=["version"])
        docs = await self.fetch(query.limit(1), f"read of stream {stream_id!r}")
        return int(docs[0].get("version")) if docs else 0

    async def head_estimate(self, governor: str, stream_id: str) -> int:
        """The head from two parallel queries: oldest stored version + count - 1 (stored
        events are contiguous — compaction removes a prefix and keeps the head). A
        concurrent append or compaction can make it stale: writers confirm it with write
        preconditions, :meth:`head` with a point read."""
        lowest, count = await asyncio.gather(
            self.lowest(governor, stream_id), self.count(governor, stream_id)
        )
        return lowest + count - 1 if count else 0

    async def head(self, governor: str, stream_id: str) -> int:
        """The exact head: :meth:`head_estimate` confirmed by one BatchGetDocuments (the
        event at the head exists and the next does not) — two round trips."""
        col = self.events(governor)
        for attempt in range(RETRIES):
            head = await self.head_estimate(governor, stream_id)
            keys = [event_key(stream_id, v) for v in (head, head + 1) if v > 0]
            docs = await self.get_all([col.document(k) for k in keys], "read of stream head")
            present = {doc.id for doc in docs if doc.exists}
            if (head == 0 or keys[0] in present) and event_key(stream_id, head + 1) not in present:
                return head
            await pause(attempt)
        raise StoreUnavailable(f"the head of stream {stream_id!r} kept moving; retry later")

    async def delete_range(
        self,
        col: AsyncCollectionReference,
        first: str,
        end: str,
        what: str,
        *,
        end_inclusive: bool,
        page: int = 500,
    ) -> tuple[int, int]:
        """Delete a key range oldest first, one commit per page of up to 500; returns
        (documents, bytes of their records)."""
        count, size = 0, 0
        async for docs in self.scan(
            col, first, end, end_inclusive=end_inclusive, page=page, fields=["size"], what=what
        ):
            await self.commit([delete_write(self.path(doc.reference)) for doc in docs], what)
            size += sum(int(doc.get("size") or 0) for doc in docs)
            count += len(docs)
        return count, size

    # ------------------------------------------------------------------ statistics
    async def governor_stats(self, governor: str) -> StoreStats:
        """Exact figures for one governor from 5 parallel queries: count and sum of
        ``size`` per collection, and the highest state and event ``version``."""

        async def totals(col: AsyncCollectionReference) -> dict[str, int]:
            # no ordering: sum() cannot follow an order on __name__
            counted = cast(AsyncAggregationQuery, cast(Any, col).count(alias="n"))
            return await self.aggregate(counted.sum("size", alias="b"), "statistics")

        async def highest(col: AsyncCollectionReference) -> int:
            query = col.order_by("version", direction="DESCENDING").select(["version"])
            found = await self.fetch(query.limit(1), "statistics")
            return int(found[0].get("version")) if found else 0

        states, events, snaps = (
            self.states(governor),
            self.events(governor),
            self.snapshots(governor),
        )
        st, ev, sn, top_state, top_event = await asyncio.gather(
            totals(states), totals(events), totals(snaps), highest(states), highest(events)
        )
        return StoreStats(
            total_states=st["n"],
            total_events=ev["n"],
            total_snapshots=sn["n"],
            max_version=max(top_state, top_event),
            bytes=st["b"] + ev["b"] + sn["b"],
        )
