"""``Store.commit`` on Firestore: ONE batched write (one ``Commit`` RPC) whose write
preconditions check every operation — no native transaction, no read first when the
caller's tokens are current (DESIGN.md §4).

The operations arrive checked and encoded (:func:`tai_fsm.stores.planning.prepare`). An
attempt (:class:`_Attempt`) reads only what no token vouches for, assumes what the
preconditions will assert, lets :func:`~tai_fsm.stores.planning.plan` decide the rows and
results from that, and sends the rows with these preconditions:

===========================  ==============================================================
operation                    writes in the batch (precondition)
===========================  ==============================================================
Append at ``e`` (or at the   create ``events/{stream}-{v}`` for ``v = e+1..`` (must not
head, estimated)             exist); the **head check**: ``e > 0`` — an unchanged write of
                             the event at ``e`` (must exist), ``e = 0`` — the stream's
                             ``compacted`` marker asserted absent. Dense logs make that
                             exact: ``e`` exists and ``e+1`` does not <=> the head is ``e``,
                             even over keys compaction freed.
... with ``state``           write ``states/{stream}`` (``update_time`` = the token; must not
                             exist when ``e = 0``)
Put at ``n`` / new / any     write the record (``update_time`` = token / must not exist /
                             ``update_time`` of a read made just before)
Delete at ``n`` / any        delete (``update_time`` = token / must exist)
Expect ``n`` / absent        an unchanged write (``update_time`` = token) / a delete that
                             must find nothing
Fence                        an unchanged write of the lease (``update_time`` of the lease
                             as read just before, after checking its fencing token)
===========================  ==============================================================

A token (``Token``: version + ``update_time`` + the record's key check) is used when it is
the record's and its version is the expected one; otherwise (and for unconditional puts,
fences, appends at the head) the documents are read first, all in one
``BatchGetDocuments``. An unchanged write keeps the document's
``update_time`` (so it invalidates nobody's token): :func:`firestore_codec.unchanged_write`.

When the commit fails a precondition, :meth:`_Attempt.explain` reads what the
preconditions were about: the event ids at the versions each append wanted
(:func:`~tai_fsm.stores.planning.recognise` — the same ids mean a retried commit that
landed), then every head and version exactly, and lets ``plan`` raise the first failure
with the real numbers (``VersionConflict``, ``StateNotFound``, ``LockNotHeld``). When all
of it is current — only a token was stale, or a writer at the head lost a race — the
attempt is repeated with fresh reads (:func:`tai_fsm.retry.retry_async`, bounded).
"""

from __future__ import annotations

import asyncio
from typing import Any

from tai_fsm.errors import InvalidInput, LockNotHeld, StateNotFound, VersionConflict
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.stores.firestore_codec import (
    Token,
    When,
    create_write,
    delete_write,
    event_fields,
    record_fields,
    set_write,
    unchanged_write,
)
from tai_fsm.stores.firestore_errors import CONFLICT_ERRORS
from tai_fsm.stores.firestore_io import RACES, Doc, Documents, int_field, raw_of
from tai_fsm.stores.ops import LOCKS, STATES, CommitResult, OpResult
from tai_fsm.stores.planning import (
    Current,
    Plan,
    Prepared,
    PreparedAppend,
    PreparedDelete,
    PreparedExpect,
    PreparedFence,
    PreparedPut,
    fencing_token_of,
    landed_ranges,
    plan,
    recognise,
)

__all__ = ["commit", "writes_needed"]

_Key = tuple[str, str]  # (kind, record id)
_REFUSALS = (VersionConflict, StateNotFound, LockNotHeld)


class _Race(VersionConflict):
    """The commit failed, yet every precondition holds on a fresh read: a token was stale
    or another writer won a race. Retried with fresh reads; raised (a ``VersionConflict``)
    when other writers keep winning."""


_POLICY = RetryPolicy(max_attempts=RACES, retry=lambda e: isinstance(e, _Race))


def writes_needed(prepared: list[Prepared]) -> int:
    """Writes the commit of ``prepared`` sends at most: one per event, record, expectation
    and fence, plus each append's head check."""
    total = 0
    for item in prepared:
        total += (item.writes + 1) if isinstance(item, PreparedAppend) else 1
    return total


async def commit(
    docs: Documents, governor: str, prepared: list[Prepared], max_writes: int
) -> CommitResult:
    """Commit ``prepared`` all-or-none (see the module docstring)."""
    needed = writes_needed(prepared)
    if needed > max_writes:
        raise InvalidInput(
            f"this commit needs {needed} writes on Firestore (its operations plus one head "
            f"check per append); one commit holds at most {max_writes} (split it)",
            field="ops",
        )
    attempts = 0

    async def attempt() -> CommitResult:
        nonlocal attempts
        attempts += 1
        return await _Attempt(docs, governor, prepared, trust_tokens=attempts == 1).run()

    return await retry_async(attempt, _POLICY)


def _record_key(item: PreparedPut | PreparedDelete | PreparedExpect) -> _Key:
    return (item.kind, item.record_id)


class _Attempt:
    """One try at the commit: read what is needed, decide, write, explain a refusal."""

    def __init__(
        self, docs: Documents, governor: str, prepared: list[Prepared], *, trust_tokens: bool
    ) -> None:
        self.docs = docs
        self.governor = governor
        self.prepared = prepared
        self.trust_tokens = trust_tokens
        self.current = Current()
        #: precondition of each record written, deleted or expected
        self.when: dict[_Key, When] = {}
        #: records to read before deciding
        self.reads: list[_Key] = []
        self.at_head: list[PreparedAppend] = []
        self.fenced = {item.resource for item in prepared if isinstance(item, PreparedFence)}

    def _path(self, key: _Key) -> str:
        return self.docs.record_path(self.governor, key[0], key[1])

    def _scope(self, key: _Key) -> int:
        return Token.scope_of(self.governor, key[0], key[1])

    # ------------------------------------------------------------------ deciding
    def _expect(self, key: _Key, version: int, token: str | None) -> None:
        """The record ``key`` must be at ``version``: a token vouches for it, or it is
        read; version 0 is "must not exist"."""
        parsed = Token.parse(token) if self.trust_tokens else None
        if version == 0:
            self.current.versions[key] = 0
            self.when[key] = False
        elif parsed is not None and (parsed.version, parsed.scope) == (version, self._scope(key)):
            self.current.versions[key] = version
            self.when[key] = parsed
        else:
            self.reads.append(key)

    def _assume(self) -> None:
        """What the preconditions will assert, from tokens; the rest is to be read."""
        for item in self.prepared:
            if isinstance(item, PreparedAppend):
                if item.expected is None:
                    self.at_head.append(item)
                    if item.state is not None:
                        self.reads.append((STATES, item.stream_id))
                    continue
                self.current.heads[item.stream_id] = item.expected
                if item.state is not None:
                    self._expect((STATES, item.stream_id), item.expected, item.token)
            elif isinstance(item, PreparedPut):
                if item.expected is None:
                    self.reads.append(_record_key(item))
                else:
                    self._expect(_record_key(item), item.expected, item.token)
            elif isinstance(item, PreparedDelete):
                key = _record_key(item)
                if item.expected is None:  # it must exist; any version will do
                    self.current.versions[key] = 1
                    self.when[key] = True
                elif item.expected == 0:  # always refused: read to say why
                    self.reads.append(key)
                else:
                    self._expect(key, item.expected, item.token)
            elif isinstance(item, PreparedExpect):
                self._expect(_record_key(item), item.version, item.token)
            else:
                self.reads.append((LOCKS, item.resource))

    async def _read(self) -> None:
        """The documents no token vouches for (one BatchGetDocuments) and, per append at
        the head, the estimated head and the event ids already stored — all in parallel."""
        async def lookup(item: PreparedAppend) -> tuple[int, dict[str, int]]:
            return await asyncio.gather(
                self.docs.head_estimate(self.governor, item.stream_id),
                self.docs.find_ids(self.governor, item.stream_id, item.event_ids),
            )

        paths = [self._path(key) for key in self.reads]
        found, looked_up = await asyncio.gather(
            self.docs.get_all(paths, f"read before a commit in {self.governor!r}"),
            asyncio.gather(*(lookup(item) for item in self.at_head)),
        )
        for item, (head, ids) in zip(self.at_head, looked_up, strict=True):
            self.current.heads[item.stream_id] = head
            self.current.found_ids[item.stream_id] = ids
        for key, path in zip(self.reads, paths, strict=True):
            doc = found.get(path)
            if key[0] == LOCKS and key[1] in self.fenced:
                self.current.fences[key[1]] = None if doc is None else fencing_token_of(raw_of(doc))
            version = 0 if doc is None else int_field(doc, "version")
            self.current.versions[key] = version
            self.when[key] = (
                False if doc is None else Token.of(version, doc.update_time, self._scope(key))
            )

    # ------------------------------------------------------------------ writing
    def _writes(self, decided: Plan) -> tuple[list[Any], dict[_Key, int]]:
        """The batch for ``decided`` with its preconditions; where each record's write is."""
        docs, gov = self.docs, self.governor
        writes: list[Any] = []
        position: dict[_Key, int] = {}
        for stream_id, rows in decided.events:
            base = rows[0][0] - 1
            if base > 0:
                writes.append(unchanged_write(docs.event_path(gov, stream_id, base), True))
            else:
                writes.append(delete_write(docs.marker_path(gov, stream_id), False))
            for version, event_id, ts, raw in rows:
                fields = event_fields(stream_id, version, event_id, ts, raw)
                writes.append(create_write(docs.event_path(gov, stream_id, version), fields))
        for kind, record_id, version, raw in decided.puts:
            key = (kind, record_id)
            position[key] = len(writes)
            fields = record_fields(version, raw, decided.index(kind, record_id))
            writes.append(set_write(self._path(key), fields, self.when[key]))
        for key in decided.deletes:
            writes.append(delete_write(self._path(key), self.when[key]))
        for item in self.prepared:
            if isinstance(item, PreparedExpect | PreparedFence):
                key = (
                    _record_key(item)
                    if isinstance(item, PreparedExpect)
                    else (LOCKS, item.resource)
                )
                when = self.when[key]
                position[key] = len(writes)
                if isinstance(when, Token):
                    writes.append(unchanged_write(self._path(key), when))
                else:
                    writes.append(delete_write(self._path(key), False))
        return writes, position

    async def run(self) -> CommitResult:
        self._assume()
        if self.reads or self.at_head:
            await self._read()
        try:
            decided = plan(self.governor, self.prepared, self.current)
        except _REFUSALS:
            return await self.explain()
        except InvalidInput:
            if not self.at_head:  # decided on estimated heads: confirm on exact ones
                raise
            return await self.explain()
        writes, position = self._writes(decided)
        if not writes:  # appends at the head that had landed already
            return decided.result
        try:
            times = await self.docs.commit(writes, f"commit in governor {self.governor!r}")
        except CONFLICT_ERRORS:
            return await self.explain()
        return self._result(decided, times, position)

    def _result(self, decided: Plan, times: list[Any], position: dict[_Key, int]) -> CommitResult:
        """``decided``'s result with the token of every record written or expected."""
        results: list[OpResult] = []
        for item, result in zip(self.prepared, decided.result.results, strict=True):
            key: _Key | None = None
            if isinstance(item, PreparedAppend) and item.state is not None:
                key = (STATES, item.stream_id)
            elif isinstance(item, PreparedPut | PreparedExpect):
                key = _record_key(item)
            at = position.get(key) if key is not None else None
            if key is None or at is None or result.already_applied or result.version == 0:
                results.append(result)
                continue
            token = str(Token.of(result.version, times[at], self._scope(key)))
            results.append(OpResult(result.version, token, result.already_applied))
        return CommitResult(results, decided.result.already_applied)

    # ------------------------------------------------------------------ explaining
    async def explain(self) -> CommitResult:
        """Why the commit cannot apply: it landed already (a retry) -> its result; a
        precondition fails -> ``plan``'s error with the real numbers; everything is
        current -> ``_Race`` (retried)."""
        docs, gov = self.docs, self.governor
        appends = [item for item in self.prepared if isinstance(item, PreparedAppend)]
        keys: list[_Key] = [(STATES, a.stream_id) for a in appends if a.state is not None]
        for item in self.prepared:
            if isinstance(item, PreparedPut | PreparedDelete | PreparedExpect):
                keys.append(_record_key(item))
            elif isinstance(item, PreparedFence):
                keys.append((LOCKS, item.resource))
        ranges = landed_ranges(self.prepared)
        paths = [self._path(key) for key in keys]
        stored_ids, heads, found = await asyncio.gather(
            asyncio.gather(*(docs.ids_between(gov, s, lo, hi) for s, lo, hi in ranges)),
            asyncio.gather(*(docs.head(gov, a.stream_id) for a in appends)),
            docs.get_all(paths, f"read after a refused commit in {gov!r}"),
        )
        records: dict[_Key, Doc] = {
            key: found[path] for key, path in zip(keys, paths, strict=True) if path in found
        }
        tokens: dict[str, str | None] = {}
        for item in appends:
            doc = records.get((STATES, item.stream_id))
            if doc is not None and item.expected is not None:
                version = int_field(doc, "version")
                if version == item.expected + len(item.events):
                    scope = self._scope((STATES, item.stream_id))
                    tokens[item.stream_id] = str(Token.of(version, doc.update_time, scope))
        landed = recognise(
            self.prepared,
            {stream: ids for (stream, _, _), ids in zip(ranges, stored_ids, strict=True)},
            tokens,
        )
        if landed is not None:
            return landed
        now = Current(found_ids=self.current.found_ids)
        for item, head in zip(appends, heads, strict=True):
            now.heads[item.stream_id] = head
        for key in keys:
            doc = records.get(key)
            now.versions[key] = 0 if doc is None else int_field(doc, "version")
            if key[0] == LOCKS and key[1] in self.fenced:
                now.fences[key[1]] = None if doc is None else fencing_token_of(raw_of(doc))
        plan(gov, self.prepared, now)  # raises the first precondition that fails
        first = self.prepared[0]
        raise _Race(*_describe(first))


def _describe(item: Prepared) -> tuple[str, int, None]:
    """(id, expected version, unknown actual) for the error raised when races persist."""
    if isinstance(item, PreparedAppend):
        return item.stream_id, item.expected or 0, None
    if isinstance(item, PreparedFence):
        return item.resource, item.fencing_token, None
    if isinstance(item, PreparedExpect):
        return item.record_id, item.version, None
    return item.record_id, item.expected or 0, None
