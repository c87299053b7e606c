"""Google Cloud Firestore backend: ``firestore://PROJECT[/DATABASE][?prefix=P]``.

Documents live under the root collection ``{prefix}governors`` (keys and fields:
:mod:`tai_fsm.stores.firestore_codec`; user guide: ``docs/firestore.md``)::

    {prefix}governors/{governor}/states/{state_id}
    {prefix}governors/{governor}/events/{hex(stream_id)}-{version:020d}
    {prefix}governors/{governor}/snapshots/{hex(stream_id)}-{inverted version:020d}

Concurrency comes from Firestore write preconditions only — no native transactions (the
emulator serialises contending transactions with a ~2 s lock wait) and no in-process locks,
so any number of processes and nodes may share one database. The commit of a transition is
one batched write (:mod:`tai_fsm.stores.firestore_append`). No composite index is needed:
every ordered read is a key-range scan.

RPCs per call (round trips in brackets when they differ; docs/firestore.md has the table):

* ``append_events`` with ``state`` and a current token — 1 commit, no read; without a token
  (or a stale one) — 1 ``get`` + 1 commit; ``expected_version=None`` — 3 parallel queries [1]
  + 1 commit (+1 ``get`` with ``state``);
* ``read_state`` 1; ``batch_read_states`` 1; ``write_state`` 2 (1 when expected is 0);
  ``delete_state`` 1 without a version, 2 with one;
* ``read_events`` / ``iter_all_events`` 1 per ``batch_size`` events; ``stream_version``
  3 [2]; ``load_snapshot`` 1; ``save_snapshot`` 1 (2-3 with ``keep``: a query, then a commit
  of deletions when there are any).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from urllib.parse import quote

from google.auth import exceptions as auth_exc
from google.cloud.firestore import AsyncClient

from tai_fsm.errors import InvalidInput, StateNotFound, TaiFsmError, VersionConflict
from tai_fsm.ids import validate_id
from tai_fsm.records import (
    AppendResult,
    CleanupResult,
    Event,
    StateSnapshot,
    StoredState,
    StoreStats,
    ensure_utc,
)
from tai_fsm.stores.base import DEFAULT_BATCH_SIZE, Store
from tai_fsm.stores.common import (
    check_batch_size,
    check_events,
    check_expected_version,
    check_ids,
    check_keep,
    check_snapshot,
    check_version,
    encode_snapshot,
)
from tai_fsm.stores.firestore_append import Appender
from tai_fsm.stores.firestore_codec import (
    Token,
    check_batch,
    create_write,
    delete_write,
    event_key,
    root_collection,
    set_write,
    snapshot_fields,
    snapshot_key,
    snapshot_version_of_key,
    state_fields,
    stream_of_key,
    stream_range,
)
from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS, call, translate
from tai_fsm.stores.firestore_io import RETRIES, Documents, pause

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
        self._appender = Appender(self._docs)
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

    # ------------------------------------------------------------------ state records
    async def read_state(self, governor: str, state_id: str) -> StoredState:
        """The state record and its token (one ``get``); ``StateNotFound`` when absent."""
        docs = self._open()
        stored = await docs.get_state(governor, validate_id(state_id, "state id"))
        if stored is None:
            raise StateNotFound(governor, state_id)
        return stored

    async def batch_read_states(
        self, governor: str, state_ids: Sequence[str]
    ) -> dict[str, StoredState]:
        """Several state records through one ``BatchGetDocuments`` RPC."""
        docs = self._open()
        col = docs.states(governor)
        unique = list(dict.fromkeys(check_ids(state_ids, "state id")))
        if not unique:
            return {}
        found = await docs.get_all([col.document(sid) for sid in unique], "batch read of states")
        return {doc.id: docs.stored_state(doc, governor) for doc in found if doc.exists}

    async def write_state(
        self,
        governor: str,
        state_id: str,
        snapshot: StateSnapshot,
        *,
        expected_version: int | None,
    ) -> int:
        """Write a state record. ``expected_version=0`` is one create (must not exist);
        another int reads the record and writes with an ``update_time`` precondition, so of
        two concurrent writers exactly one wins and the other gets ``VersionConflict``.
        ``None`` retries that read-then-write until it lands on the current version."""
        docs = self._open()
        validate_id(state_id, "state id")
        check_snapshot(snapshot)
        expected = check_expected_version(expected_version)
        ref = docs.states(governor).document(state_id)
        what = f"write of state {state_id!r}"
        for attempt in range(RETRIES):
            current = None if expected == 0 else await docs.get_state(governor, state_id)
            version = current.version if current is not None else 0
            if expected is not None and version != expected:
                raise VersionConflict(state_id, expected, version)
            fields = state_fields(version + 1, encode_snapshot(snapshot, version + 1, what))
            token = Token.parse(current.token) if current is not None else None
            write = (
                create_write(docs.path(ref), fields)
                if token is None
                else set_write(docs.path(ref), fields, token)
            )
            try:
                await docs.commit([write], what)
                return version + 1
            except CONFLICT_ERRORS:
                if expected is not None:
                    now = await docs.get_state(governor, state_id)
                    actual = now.version if now is not None else 0
                    raise VersionConflict(state_id, expected, actual) from None
                await pause(attempt)
        raise VersionConflict(state_id, version, None)  # other writers kept winning

    async def delete_state(
        self, governor: str, state_id: str, expected_version: int | None = None
    ) -> None:
        """Delete a state record (its events and snapshots stay). Without a version: one
        delete with an ``exists`` precondition. With one: a ``get``, then a delete
        preconditioned on the ``update_time`` read."""
        docs = self._open()
        validate_id(state_id, "state id")
        expected = check_expected_version(expected_version)
        path = docs.path(docs.states(governor).document(state_id))
        when: bool | Token | None = True
        if expected is not None:
            current = await docs.get_state(governor, state_id)
            if current is None:
                raise StateNotFound(governor, state_id)
            if current.version != expected:
                raise VersionConflict(state_id, expected, current.version)
            when = Token.parse(current.token)
        try:
            await docs.commit([delete_write(path, when)], f"delete of state {state_id!r}")
        except CONFLICT_ERRORS:
            now = await docs.get_state(governor, state_id)
            if now is None:
                raise StateNotFound(governor, state_id) from None
            raise VersionConflict(state_id, expected or 0, now.version) from None

    async def list_states(self, governor: str) -> AsyncIterator[str]:
        """State ids of ``governor`` in key order (names only, one query per 1000)."""
        docs = self._open()
        async for page in docs.scan(
            docs.states(governor),
            None,
            None,
            end_inclusive=False,
            page=DEFAULT_BATCH_SIZE,
            fields=[],
            what="list of states",
        ):
            for doc in page:
                yield doc.id

    async def list_governors(self) -> list[str]:
        """Governors holding any document (``ListDocuments`` shows the governor documents,
        which exist only as parents of their records)."""
        docs = self._open()

        async def collect() -> list[str]:
            return [ref.id async for ref in docs.root_collection().list_documents()]

        return sorted(await call(collect(), "list of governors"))

    # ------------------------------------------------------------------ event streams
    async def append_events(
        self,
        governor: str,
        stream_id: str,
        events: Sequence[Event],
        *,
        expected_version: int | None,
        state: StateSnapshot | None = None,
        token: str | None = None,
    ) -> AppendResult:
        """Append ``events`` and write the state record ``stream_id`` in ONE commit; with
        a current ``token`` nothing is read first. See :mod:`tai_fsm.stores.firestore_append`
        for the preconditions. At most 498 events per call (Firestore's 500 writes per
        commit, including the state record and the head check): more raise ``InvalidInput``
        before anything is sent."""
        self._open()
        validate_id(governor, "governor")
        validate_id(stream_id, "stream id")
        expected = check_expected_version(expected_version)
        checked = check_events(stream_id, events, expected)
        if state is not None:
            check_snapshot(state, "state")
        check_batch(len(checked) + 2, f"append_events of {len(checked)} events")
        return await self._appender.append(governor, stream_id, checked, expected, state, token)

    async def read_events(
        self,
        governor: str,
        stream_id: str,
        *,
        after_version: int = 0,
        up_to_version: int | None = None,
        until: datetime | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> AsyncIterator[Event]:
        """Events in version order, one key-range query per ``batch_size`` events."""
        docs = self._open()
        validate_id(stream_id, "stream id")
        after = check_version(after_version, "after_version")
        upper = None if up_to_version is None else check_version(up_to_version, "up_to_version")
        cutoff = None if until is None else ensure_utc(until, "until")
        size = check_batch_size(batch_size)
        first, end = stream_range(stream_id)
        inclusive = False
        if upper is not None:
            if upper <= after:
                return
            end, inclusive = event_key(stream_id, upper), True
        if after > 0:
            first = event_key(stream_id, after + 1)
        async for page in docs.scan(
            docs.events(governor),
            first,
            end,
            end_inclusive=inclusive,
            page=size,
            what=f"read of stream {stream_id!r}",
        ):
            for doc in page:
                event = docs.event(doc, governor)
                if cutoff is None or event.timestamp <= cutoff:
                    yield event

    async def stream_version(self, governor: str, stream_id: str) -> int:
        """The head version (0 for no events): 3 queries in 2 round trips."""
        docs = self._open()
        return await docs.head(governor, validate_id(stream_id, "stream id"))

    async def iter_all_events(
        self, governor: str, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[Event]:
        """Every event of ``governor`` by stream id, then version (the key order), one
        query per ``batch_size`` events."""
        docs = self._open()
        size = check_batch_size(batch_size)
        async for page in docs.scan(
            docs.events(governor), None, None, end_inclusive=False, page=size, what="read of events"
        ):
            for doc in page:
                yield docs.event(doc, governor)

    async def list_streams(self, governor: str) -> list[str]:
        """Stream ids with events, ascending: a skip scan over key names, one query per up
        to 300 streams (it jumps past the rest of a stream's events)."""
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
    async def save_snapshot(
        self, governor: str, stream_id: str, snapshot: StateSnapshot, *, keep: int | None = None
    ) -> None:
        """Write (or replace) the snapshot at ``snapshot.version`` (one commit). With
        ``keep``, the stream's snapshots are then listed (one query) and all but the newest
        ``keep`` deleted (one more commit when there are any): trimming after the write means
        concurrent savers of one stream still leave only the newest ``keep``."""
        docs = self._open()
        validate_id(stream_id, "stream id")
        check_snapshot(snapshot)
        version = check_version(snapshot.version, "snapshot.version", minimum=1)
        keep_n = check_keep(keep)
        what = f"snapshot {stream_id!r}@{version}"
        fields = snapshot_fields(stream_id, version, encode_snapshot(snapshot, version, what))
        col = docs.snapshots(governor)
        await docs.commit(
            [set_write(docs.path(col.document(snapshot_key(stream_id, version))), fields)], what
        )
        if keep_n is None:
            return
        doomed = (await self.snapshot_versions(governor, stream_id))[:-keep_n]
        for start in range(0, len(doomed), 500):
            paths = [docs.path(col.document(snapshot_key(stream_id, old))) for old in doomed]
            await docs.commit(
                [delete_write(path) for path in paths[start : start + 500]],
                f"snapshot retention of {stream_id!r}",
            )

    async def load_snapshot(
        self, governor: str, stream_id: str, *, at_or_before: int | None = None
    ) -> StateSnapshot | None:
        """The newest snapshot (``version <= at_or_before`` when given): one query reading
        one document (snapshot keys invert the version, so the newest sorts first)."""
        docs = self._open()
        validate_id(stream_id, "stream id")
        limit = None if at_or_before is None else check_version(at_or_before, "at_or_before")
        first, end = stream_range(stream_id)
        if limit is not None:
            if limit < 1:
                return None
            first = snapshot_key(stream_id, limit)
        query = docs.key_range(docs.snapshots(governor), first, end, end_inclusive=False)
        found = await docs.fetch(query.limit(1), f"snapshot read of {stream_id!r}")
        return docs.snapshot(found[0], governor, stream_id) if found else None

    async def snapshot_versions(self, governor: str, stream_id: str) -> list[int]:
        """Versions of the stream's snapshots, ascending (key names only)."""
        docs = self._open()
        first, end = stream_range(validate_id(stream_id, "stream id"))
        versions: list[int] = []
        async for page in docs.scan(
            docs.snapshots(governor),
            first,
            end,
            end_inclusive=False,
            page=DEFAULT_BATCH_SIZE,
            fields=[],
            what=f"snapshot list of {stream_id!r}",
        ):
            versions.extend(snapshot_version_of_key(doc.id) for doc in page)
        return sorted(versions)

    async def compact_stream(
        self, governor: str, stream_id: str, *, up_to_version: int
    ) -> CleanupResult:
        """Delete events ``<= up_to_version`` (never the head) and the snapshots older than
        the newest one at or before it, oldest first, in commits of up to 500 deletes. Not
        atomic as a whole, but every intermediate state is a valid, shorter log. A writer
        whose view predates the compaction still fails its preconditions."""
        docs = self._open()
        validate_id(stream_id, "stream id")
        cut = check_version(up_to_version, "up_to_version", minimum=1)
        versions = await self.snapshot_versions(governor, stream_id)
        if not versions or versions[-1] < cut:
            raise InvalidInput(
                f"compact_stream({stream_id!r}, up_to_version={cut}) needs a snapshot at "
                f"version {cut} or later; save one first",
                field="up_to_version",
            )
        what = f"compaction of {stream_id!r}"
        events, event_bytes = 0, 0
        last = min(cut, await docs.head(governor, stream_id) - 1)
        if last >= 1:
            events, event_bytes = await docs.delete_range(
                docs.events(governor),
                stream_range(stream_id)[0],
                event_key(stream_id, last),
                what,
                end_inclusive=True,
            )
        snaps, snap_bytes = 0, 0
        covering = [v for v in versions if v <= cut]
        if covering and covering[-1] > versions[0]:
            # keys invert versions: the snapshots older than covering[-1] sort after it
            snaps, snap_bytes = await docs.delete_range(
                docs.snapshots(governor),
                snapshot_key(stream_id, covering[-1] - 1),
                stream_range(stream_id)[1],
                what,
                end_inclusive=False,
            )
        return CleanupResult(
            deleted_events=events, deleted_snapshots=snaps, recovered_bytes=event_bytes + snap_bytes
        )

    # ------------------------------------------------------------------ statistics
    async def get_stats(self, governor: str | None = None) -> StoreStats:
        """Exact figures from aggregation queries: count and sum of ``size`` per collection
        plus the highest state and event version — 5 parallel queries per governor.
        ``max_version`` is the highest version of any state record or event; ``bytes`` the
        encoded size of state records, events and snapshots."""
        self._open()
        if governor is not None:
            validate_id(governor, "governor")
        governors = [governor] if governor is not None else await self.list_governors()
        parts = await asyncio.gather(*(self._docs.governor_stats(g) for g in governors))
        return StoreStats(
            total_states=sum(p.total_states for p in parts),
            total_events=sum(p.total_events for p in parts),
            total_snapshots=sum(p.total_snapshots for p in parts),
            max_version=max((p.max_version for p in parts), default=0),
            bytes=sum(p.bytes for p in parts),
        )

    # ------------------------------------------------------------------ maintenance
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
            await docs.commit([delete_write(docs.path(doc.reference)) for doc in found], "drop_all")
            deleted += len(found)
