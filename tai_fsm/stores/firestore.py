"""Google Cloud Firestore backend: ``firestore://PROJECT[/DATABASE][?prefix=P]``.

``FirestoreStore`` implements the ``Store`` hooks only: the base class checks arguments and
encodes and decodes every record (:mod:`tai_fsm.stores.recordcodec`); the hooks see checked
ids and stored JSON. Layout (:mod:`tai_fsm.stores.firestore_codec`; user guide:
``docs/firestore.md``)::

    {prefix}governors/{governor}/states/{state_id}      (and /{kind}/{id} for other kinds)
    {prefix}governors/{governor}/events/{hex(stream_id)}-{version:020d}
    {prefix}governors/{governor}/snapshots/{hex(stream_id)}-{inverted version:020d}
    {prefix}governors/{governor}/compacted/{stream_id}

Concurrency comes from Firestore write preconditions only — no native transactions (the
emulator serialises contending transactions with a ~2 s lock wait) and no in-process locks,
so any number of processes and nodes may share one database. Every commit is one batched
write (:mod:`tai_fsm.stores.firestore_commit`). No composite index is needed: ordered reads
are key-range scans, filters on ``ts`` are applied to projected pages in the client.

RPCs per call (round trips in brackets when they differ; docs/firestore.md has the table):

* ``commit`` / ``append_events`` at an expected version with current tokens — 1 commit;
  the documents no token vouches for (records without a usable token, fenced leases,
  unconditional puts) are read first in ONE ``BatchGetDocuments`` (+1); appends at the head
  add 3 parallel queries per stream [+1]; a refused commit is explained by ~5 reads in 2
  round trips;
* ``read_state`` / ``batch_read_states`` 1; ``delete_state`` 1 without a version or with a
  current token, else 2;
* ``read_events`` 1 query per ``batch_size`` events (from mid-stream it starts at the last
  full event before, up to 31 rows earlier); ``stream_version`` 3 [2]; ``load_snapshot`` 1;
  ``save_snapshot`` 1 (2-3 with ``keep``); ``get_stats`` per governor 1 ListCollectionIds +
  one aggregation per collection + 2 queries [2].
"""

from __future__ import annotations

from functools import partial
from urllib.parse import quote

from google.auth import exceptions as auth_exc
from google.cloud.firestore import AsyncClient
from google.cloud.firestore_v1.base_query import FieldFilter

from tai_fsm.errors import InvalidInput, TaiFsmError
from tai_fsm.records import CleanupResult, StoreStats
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, RawRecord, Store
from tai_fsm.stores.common import check_id
from tai_fsm.stores.firestore_codec import (
    MAX_VERSION,
    clamp,
    delete_write,
    event_key,
    root_collection,
    set_write,
    snapshot_fields,
    snapshot_key,
    snapshot_version_of_key,
    stream_of_key,
    stream_range,
    version_of_key,
)
from tai_fsm.stores.firestore_commit import commit
from tai_fsm.stores.firestore_errors import call, translate
from tai_fsm.stores.firestore_io import Documents, raw_of, ts_of
from tai_fsm.stores.firestore_maintenance import compact, governor_stats, reindex_states
from tai_fsm.stores.ops import STATES, CommitResult
from tai_fsm.stores.planning import EventRow, Prepared

__all__ = ["FirestoreStore"]

_LIST_PAGE = 300  # key names per query when listing streams


class FirestoreStore(Store):
    """A :class:`~tai_fsm.stores.base.Store` on Cloud Firestore or its emulator.

    ``project`` and ``database`` name the database; ``prefix`` is prepended to the root
    collection id (``{prefix}governors``) so several applications or test runs share one
    database without touching each other's documents. The client honours
    ``FIRESTORE_EMULATOR_HOST`` (then with anonymous credentials) and otherwise uses
    application default credentials; the caller needs ``roles/datastore.user``. Pass
    ``client`` to share an ``AsyncClient`` (it is then not closed by :meth:`close`).

    Safe for concurrent use from one event loop and from any number of processes: every
    check is a precondition evaluated by Firestore inside the write itself. Use one store
    from one event loop (its gRPC channel belongs to the loop that first used it)."""

    #: Firestore accepts at most 500 writes in one commit.
    max_commit_writes = 500

    def __init__(
        self,
        project: str,
        database: str = "(default)",
        prefix: str = "",
        *,
        client: AsyncClient | None = None,
    ) -> None:
        if not isinstance(project, str) or not project:
            raise InvalidInput("Firestore project id must be a non-empty string", field="project")
        if not isinstance(database, str) or not database:
            raise InvalidInput("Firestore database id must be a non-empty string", field="database")
        self.project = project
        self.database = database
        self.prefix = prefix
        root = root_collection(prefix)
        path = project if database == "(default)" else f"{project}/{database}"
        self.url = f"firestore://{path}" + (f"?prefix={quote(prefix, safe='')}" if prefix else "")
        self._owns_client = client is None
        if client is None:
            try:
                client = AsyncClient(project=project, database=database)
            except auth_exc.GoogleAuthError as exc:
                raise translate(exc, "connect") from exc
        self._docs = Documents(client, root)
        self._closed = False

    @property
    def client(self) -> AsyncClient:
        """The underlying ``google.cloud.firestore.AsyncClient``."""
        return self._docs.client

    def __repr__(self) -> str:
        return f"FirestoreStore({self.url!r})"

    async def close(self) -> None:
        """Close the gRPC channel if this store created the client. Idempotent."""
        if self._closed:
            return
        self._closed = True
        api = getattr(self._docs.client, "_firestore_api_internal", None)
        if self._owns_client and api is not None:
            await api.transport.close()

    def _open(self) -> Documents:
        if self._closed:
            raise TaiFsmError(f"{self.url} store is closed")
        return self._docs

    # ------------------------------------------------------------------ records
    async def _read_records(
        self, governor: str, kind: str, record_ids: list[str]
    ) -> dict[str, RawRecord]:
        """One ``BatchGetDocuments`` for any number of ids."""
        return await self._open().read_records(governor, kind, record_ids)

    async def _list_records(self, governor: str, kind: str, after: str, limit: int) -> list[str]:
        """Names only, in key order (one query)."""
        docs = self._open()
        query = docs.key_range(
            docs.records(governor, kind), None, None, end_inclusive=False,
            after=after or None, fields=[],
        )
        return [doc.id for doc in await docs.fetch(query.limit(limit), f"list of {kind}")]

    async def _find_states(
        self, governor: str, machine: str | None, state: str | None, after: str, limit: int
    ) -> list[str]:
        """One query, names only: equality on the ``machine`` and/or ``state`` fields of
        the state documents, in key order. Served by the automatic single-field indexes
        (Firestore merges them for two equalities); docs/firestore.md#indexes."""
        if machine is None and state is None:
            return await self._list_records(governor, STATES, after, limit)
        docs = self._open()
        col = docs.records(governor, STATES)
        query = col.select([])
        for name, value in (("machine", machine), ("state", state)):
            if value is not None:
                query = query.where(filter=FieldFilter(name, "==", value))
        query = query.order_by("__name__")
        if after:
            query = query.start_after({"__name__": col.document(after)})
        found = await docs.fetch(query.limit(limit), "query of states")
        return [doc.id for doc in found]

    async def _list_governors(self) -> list[str]:
        """``ListDocuments`` of the root shows the governor documents, which exist only as
        parents of their collections."""
        docs = self._open()

        async def collect() -> list[str]:
            return [ref.id async for ref in docs.root_collection().list_documents()]

        return await call(collect(), "list of governors")

    # ------------------------------------------------------------------ the commit
    async def _commit(self, governor: str, prepared: list[Prepared]) -> CommitResult:
        """One batched write with preconditions: :mod:`tai_fsm.stores.firestore_commit`."""
        return await commit(self._open(), governor, prepared, self.max_commit_writes)

    # ------------------------------------------------------------------ event streams
    def _range(self, stream_id: str, after: int, upper: int | None) -> tuple[str, str, bool]:
        """Keys of versions ``after < v <= upper``: (first, end, end inclusive)."""
        first, end = stream_range(stream_id)
        if after > 0:
            first = event_key(stream_id, clamp(after + 1))
        if upper is not None:
            return first, event_key(stream_id, clamp(upper)), True
        return first, end, False

    async def _event_rows(
        self, governor: str, stream_id: str, after: int, upper: int | None, limit: int
    ) -> list[tuple[int, int, bytes]]:
        """One key-range query (projected on ``record`` and ``ts``)."""
        docs = self._open()
        if after >= MAX_VERSION:
            return []
        first, end, inclusive = self._range(stream_id, after, upper)
        query = docs.key_range(
            docs.events(governor), first, end, end_inclusive=inclusive, fields=["record", "ts"]
        )
        found = await docs.fetch(query.limit(limit), f"read of stream {stream_id!r}")
        rows = []
        for doc in found:
            version = version_of_key(doc.id)
            rows.append((version, ts_of(doc, governor, stream_id, version), raw_of(doc)))
        return rows

    async def _event_versions(
        self,
        governor: str,
        stream_id: str,
        after: int,
        upper: int | None,
        cutoff: int | None,
        limit: int,
    ) -> list[int]:
        """Key names (and ``ts`` with a cutoff) only. The ``ts <= cutoff`` filter runs in
        the client on projected pages: in a query, a range on ``ts`` next to the key range
        would need a composite index."""
        docs = self._open()
        if after >= MAX_VERSION:
            return []
        first, end, inclusive = self._range(stream_id, after, upper)
        found: list[int] = []
        async for page in docs.scan(
            docs.events(governor), first, end, end_inclusive=inclusive, page=limit,
            fields=[] if cutoff is None else ["ts"], what=f"read of stream {stream_id!r}",
        ):
            for doc in page:
                version = version_of_key(doc.id)
                if cutoff is None or ts_of(doc, governor, stream_id, version) <= cutoff:
                    found.append(version)
            if len(found) >= limit:
                break
        return found[:limit]

    async def _stream_head(self, governor: str, stream_id: str) -> int:
        """3 queries in 2 round trips (:meth:`Documents.head`)."""
        return await self._open().head(governor, stream_id)

    async def _list_streams(self, governor: str) -> list[str]:
        """A skip scan over key names: one query per up to 300 streams (it jumps past the
        rest of a stream's events)."""
        docs = self._open()
        col = docs.events(governor)
        streams: list[str] = []
        start: str | None = None
        while True:
            query = docs.key_range(col, start, None, end_inclusive=False, fields=[])
            page = await docs.fetch(query.limit(_LIST_PAGE), "list of streams")
            for doc in page:
                stream = stream_of_key(doc.id)
                if not streams or streams[-1] != stream:
                    streams.append(stream)
            if len(page) < _LIST_PAGE:
                return streams
            start = stream_range(streams[-1])[1]

    # ------------------------------------------------------------------ snapshots
    async def _save_snapshot(
        self, governor: str, stream_id: str, version: int, raw: bytes, keep: int | None
    ) -> None:
        """One commit; with ``keep``, then one query for the stream's snapshot versions and
        one more commit of deletions when there are any (trimming after the write means
        concurrent savers still leave only the newest ``keep``)."""
        docs = self._open()
        what = f"snapshot {stream_id!r}@{version}"
        path = docs.doc_path(governor, "snapshots", snapshot_key(stream_id, version))
        await docs.commit([set_write(path, snapshot_fields(stream_id, version, raw))], what)
        if keep is None:
            return
        doomed = sorted(await self._snapshot_versions(governor, stream_id))[:-keep]
        paths = [docs.doc_path(governor, "snapshots", snapshot_key(stream_id, v)) for v in doomed]
        for start in range(0, len(paths), self.max_commit_writes):
            chunk = paths[start : start + self.max_commit_writes]
            await docs.commit([delete_write(p) for p in chunk], f"retention of {stream_id!r}")

    async def _load_snapshot(
        self, governor: str, stream_id: str, at_or_before: int | None
    ) -> tuple[int, bytes] | None:
        """One query reading one document (keys invert versions: the newest sorts first)."""
        docs = self._open()
        first, end = stream_range(stream_id)
        if at_or_before is not None:
            if at_or_before < 1:
                return None
            first = snapshot_key(stream_id, clamp(at_or_before))
        query = docs.key_range(docs.snapshots(governor), first, end, end_inclusive=False)
        found = await docs.fetch(query.limit(1), f"snapshot read of {stream_id!r}")
        if not found:
            return None
        return snapshot_version_of_key(found[0].id), raw_of(found[0])

    async def _snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        """Key names only, one query per 1000."""
        docs = self._open()
        first, end = stream_range(stream_id)
        versions: list[int] = []
        async for page in docs.scan(
            docs.snapshots(governor), first, end, end_inclusive=False,
            page=DEFAULT_BATCH_SIZE, fields=[], what=f"snapshot list of {stream_id!r}",
        ):
            versions.extend(snapshot_version_of_key(doc.id) for doc in page)
        return versions

    async def _compact(
        self,
        governor: str,
        stream_id: str,
        cut: int,
        last: int,
        rewrite: EventRow | None,
    ) -> CleanupResult:
        """Commits of up to 500 writes, oldest events first, each leaving a readable
        stream: :func:`tai_fsm.stores.firestore_maintenance.compact`."""
        return await compact(
            self._open(), governor, stream_id, cut, last, rewrite,
            partial(self._decode_document_at, governor, stream_id), self.max_commit_writes,
        )

    # ------------------------------------------------------------------ statistics
    async def _stats(self, governor: str | None) -> StoreStats:
        """Aggregation queries per governor, governors in parallel."""
        docs = self._open()
        governors = [governor] if governor is not None else await self._list_governors()
        return await governor_stats(docs, governors)

    # ------------------------------------------------------------------ maintenance
    async def reindex(self, governor: str | None = None) -> int:
        """Fill the query index fields (``machine``, ``state``) of state documents written
        before they existed (tai-fsm 0.1 before queries), in ``governor`` or in every
        governor; returns how many documents were updated. Each update is preconditioned
        on the document being unchanged (a concurrent commit writes the fields itself).
        Safe to run again and while writers run; it reads every state document once."""
        gov = None if governor is None else check_id(governor, "governor")
        governors = [gov] if gov is not None else await self._list_governors()
        updated = 0
        for name in governors:
            updated += await reindex_states(self._open(), name)
        return updated

    async def drop_all(self) -> int:
        """Delete every document under this store's prefix (all governors) and return how
        many; other prefixes are untouched. For tests and resets — not atomic, and writers
        running meanwhile may leave documents behind."""
        docs = self._open()
        deleted = 0
        while True:
            query = docs.root_collection().recursive().select([]).limit(500)
            found = await docs.fetch(query, "drop_all")
            if not found:
                return deleted
            await docs.commit(
                [delete_write(str(doc.reference._document_path)) for doc in found], "drop_all"
            )
            deleted += len(found)

