"""Document references, key-range scans, commits and stream heads for the Firestore store.

:class:`Documents` is the layer between :class:`~tai_fsm.stores.firestore.FirestoreStore`
and the ``google.cloud.firestore`` client: it knows the layout of
:mod:`tai_fsm.stores.firestore_codec`, turns Google errors into tai-fsm errors, and counts
on nothing but write preconditions for concurrency. It hands out stored bytes; decoding
is the ``Store`` base class's job.
"""

from __future__ import annotations

import asyncio
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
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.types.write import WriteResult as _WriteResultPb
from google.protobuf.timestamp_pb2 import Timestamp

from tai_fsm.errors import StoreUnavailable
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.stores.base import RawRecord
from tai_fsm.stores.firestore_codec import (
    COMPACTED,
    EVENTS,
    SNAPSHOTS,
    Token,
    delete_write,
    event_key,
    kind_collection,
    stream_range,
    version_of_key,
)
from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS, call, translate
from tai_fsm.stores.recordcodec import corrupt

__all__ = ["RACES", "Doc", "Documents", "int_field", "raw_of", "ts_of"]

Doc = DocumentSnapshot[AsyncDocumentReference]

_IN_LIMIT = 30  # values per "in" filter


class _HeadMoved(StoreUnavailable):
    """The head of a stream moved while it was looked up (retried)."""


#: Attempts for reads and writes that race other writers (head lookups, appends at the
#: head, unconditional writes, a stale token); waits grow from milliseconds.
RACES = 25
_HEAD_POLICY = RetryPolicy(
    max_attempts=RACES, base=0.005, cap=0.5, retry=lambda e: isinstance(e, _HeadMoved)
)


def raw_of(doc: Doc) -> bytes:
    """The stored JSON of a document (empty when the field is missing: decoding then
    reports the record as corrupt)."""
    record = (doc.to_dict() or {}).get("record")
    return record.encode("utf-8") if isinstance(record, str) else b""


def int_field(doc: Doc, name: str) -> int:
    value = (doc.to_dict() or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def ts_of(doc: Doc, governor: str, stream_id: str, version: int) -> int:
    """The ``ts`` field of an event document (epoch microseconds); ``IntegrityError``
    when it is missing (the document was not written by this store)."""
    value = (doc.to_dict() or {}).get("ts")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise corrupt("event", governor, stream_id, version, "its ts field is missing")


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
        return self.root_collection().document(governor)

    def collection(self, governor: str, name: str) -> AsyncCollectionReference:
        return cast(AsyncCollectionReference, self.governor(governor).collection(name))

    def records(self, governor: str, kind: str) -> AsyncCollectionReference:
        return self.collection(governor, kind_collection(kind))

    def events(self, governor: str) -> AsyncCollectionReference:
        return self.collection(governor, EVENTS)

    def snapshots(self, governor: str) -> AsyncCollectionReference:
        return self.collection(governor, SNAPSHOTS)

    def doc_path(self, governor: str, collection: str, key: str) -> str:
        """The resource name of ``{root}/{governor}/{collection}/{key}`` without building
        references (the commit's hot path; ``governor`` and ``key`` must be valid ids)."""
        if self._base is None:
            self._base = f"{self.client._database_string}/documents/{self.root}"
        return f"{self._base}/{governor}/{collection}/{key}"

    def record_path(self, governor: str, kind: str, record_id: str) -> str:
        return self.doc_path(governor, kind_collection(kind), record_id)

    def event_path(self, governor: str, stream_id: str, version: int) -> str:
        return self.doc_path(governor, EVENTS, event_key(stream_id, version))

    def marker_path(self, governor: str, stream_id: str) -> str:
        return self.doc_path(governor, COMPACTED, stream_id)

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

    async def get_all(self, paths: list[str], what: str) -> dict[str, Doc]:
        """Several documents (full resource names) through one BatchGetDocuments RPC;
        path -> snapshot, absent ones left out."""
        if not paths:
            return {}
        refs = [self.client.document(path.split("/documents/", 1)[1]) for path in paths]

        async def collect() -> list[Doc]:
            return [doc async for doc in self.client.get_all(refs)]

        found = await call(collect(), what)
        return {str(doc.reference._document_path): doc for doc in found if doc.exists}

    # ------------------------------------------------------------------ writes
    async def commit(self, writes: list[Any], what: str) -> list[Timestamp]:
        """Commit ``writes`` (write protobufs, :mod:`~tai_fsm.stores.firestore_codec`)
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
    def raw_record(doc: Doc, scope: int) -> RawRecord:
        """A record document as the base class wants it: version, JSON, token (``scope``:
        :meth:`Token.scope_of` the record)."""
        version = int_field(doc, "version")
        return RawRecord(version, raw_of(doc), str(Token.of(version, doc.update_time, scope)))

    async def read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        """Records of ``kind`` among ``record_ids`` (one BatchGetDocuments)."""
        paths = {self.record_path(governor, kind, rid): rid for rid in record_ids}
        found = await self.get_all(list(paths), f"read of {kind} records")
        return {
            paths[path]: self.raw_record(doc, Token.scope_of(governor, kind, paths[path]))
            for path, doc in found.items()
        }

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
        query = self.key_range(self.events(governor), first, end, end_inclusive=False, fields=[])
        docs = await self.fetch(query.limit(1), f"read of stream {stream_id!r}")
        return version_of_key(docs[0].id) if docs else 0

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
        event at the head exists and the next does not) — two round trips; retried while
        the stream moves."""

        async def attempt() -> int:
            head = await self.head_estimate(governor, stream_id)
            paths = [self.event_path(governor, stream_id, v) for v in (head, head + 1) if v > 0]
            found = await self.get_all(paths, "read of stream head")
            if (head == 0 or paths[0] in found) and paths[-1] not in found:
                return head
            raise _HeadMoved(f"the head of stream {stream_id!r} kept moving; retry later")

        return await retry_async(attempt, _HEAD_POLICY)

    async def find_ids(self, governor: str, stream_id: str, ids: list[str]) -> dict[str, int]:
        """Versions of those of ``ids`` already stored in ``stream_id`` (queries on the
        single-field index of ``event_id``, 30 ids each, in parallel)."""
        col = self.events(governor)

        async def lookup(chunk: list[str]) -> list[Doc]:
            query = col.where(filter=FieldFilter("event_id", "in", chunk)).select(
                ["event_id", "stream_id", "version"]
            )
            return await self.fetch(query, f"event id lookup in {stream_id!r}")

        chunks = [ids[i : i + _IN_LIMIT] for i in range(0, len(ids), _IN_LIMIT)]
        found: dict[str, int] = {}
        for docs in await asyncio.gather(*(lookup(chunk) for chunk in chunks)):
            for doc in docs:
                if doc.get("stream_id") == stream_id:
                    found[str(doc.get("event_id"))] = int_field(doc, "version")
        return found

    async def ids_between(self, governor: str, stream_id: str, first: int, last: int) -> list[str]:
        """Event ids stored at versions ``first..last`` of ``stream_id``, in order."""
        query = self.key_range(
            self.events(governor),
            event_key(stream_id, first),
            event_key(stream_id, last),
            end_inclusive=True,
            fields=["event_id"],
        )
        docs = await self.fetch(query, f"read of stream {stream_id!r}")
        return [str(doc.get("event_id")) for doc in docs]

    # ------------------------------------------------------------------ deletion
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
            await self.commit(
                [delete_write(str(doc.reference._document_path)) for doc in docs], what
            )
            size += sum(int_field(doc, "size") for doc in docs)
            count += len(docs)
        return count, size
