"""What a ``ReplicatedStore`` remembers between calls — in this process only, bounded:

* **stale marks**: per member, the keys it may lack or hold differently (a write it missed,
  a repair that failed); cleared by read-repair of the key or by ``sync``;
* **suspect streams**: streams this process wrote or read while the primary was
  unreachable, whose copies may have diverged: appends to them are guarded;
* **known heads**: per member and stream, the head version and head event hash after the
  last commit this process made there, so a propagated append need not read first;
* **seen**: the newest version of each record and the newest head of each stream this
  process wrote or returned, for monotonic reads.

Also the helpers that turn a prepared commit back into operations and name its keys.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeVar

from tai_fsm.records import StateSnapshot
from tai_fsm.stores.ops import STATES, Append, CommitResult, Delete, Expect, Fence, Op, Put
from tai_fsm.stores.planning import (
    Prepared,
    PreparedAppend,
    PreparedDelete,
    PreparedExpect,
    PreparedPut,
)

__all__ = ["EVENTS", "Key", "Tracker", "as_op", "commit_keys"]

#: The pseudo-kind under which a stream (its events) is named in a key.
EVENTS = "@events"
#: ``(governor, kind or EVENTS, id)``
Key = tuple[str, str, str]

K = TypeVar("K")
V = TypeVar("V")


def _put(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


class Tracker:
    """The bookkeeping of one ``ReplicatedStore`` with ``members`` stores; ``limit``
    bounds the seen records and heads (0 turns monotonic-read checks off)."""

    def __init__(self, members: int, limit: int) -> None:
        self.limit = limit
        self.stale: list[set[Key]] = [set() for _ in range(members)]
        self.suspect: set[tuple[str, str]] = set()
        self._heads: OrderedDict[tuple[int, str, str], tuple[int, str | None]] = OrderedDict()
        self._seen: OrderedDict[Key, tuple[StateSnapshot, int]] = OrderedDict()
        self._seen_heads: OrderedDict[tuple[str, str], int] = OrderedDict()

    # ------------------------------------------------------------------ stale marks
    def mark(self, index: int, keys: Sequence[Key]) -> None:
        self.stale[index].update(keys)

    def is_stale(self, index: int, keys: Sequence[Key]) -> bool:
        return any(key in self.stale[index] for key in keys)

    def clear(self, key: Key, index: int | None = None) -> None:
        for n, keys in enumerate(self.stale):
            if index is None or n == index:
                keys.discard(key)

    def synced(self, governor: str, reached: Sequence[int], failed: set[Key],
               complete: bool) -> None:
        """``sync`` reconciled ``governor`` on the members ``reached`` (except ``failed``)."""
        for index in reached:
            self.stale[index] = {
                key for key in self.stale[index] if key[0] != governor or key in failed
            }
        if complete:
            self.suspect = {s for s in self.suspect if s[0] != governor}
            for key in [k for k in self._heads if k[1] == governor]:
                del self._heads[key]

    # ------------------------------------------------------------------ known heads
    def known_head(self, index: int, governor: str, stream_id: str) -> tuple[int, str | None]:
        return self._heads.get((index, governor, stream_id), (-1, None))

    def forget_head(self, index: int, governor: str, stream_id: str) -> None:
        self._heads.pop((index, governor, stream_id), None)

    def committed(
        self, index: int, governor: str, prepared: list[Prepared], result: CommitResult
    ) -> None:
        """Member ``index`` holds ``prepared``'s appends at ``result``'s versions."""
        for item, outcome in zip(prepared, result, strict=True):
            if isinstance(item, PreparedAppend):
                head = (outcome.version, item.events[-1].hash)
                _put(self._heads, (index, governor, item.stream_id), head,
                     10 * max(self.limit, 100))

    # ------------------------------------------------------------------ seen
    def seen(self, key: Key) -> StateSnapshot | None:
        """The newest version of a record seen, at its version."""
        found = self._seen.get(key)
        if found is None:
            return None
        snapshot, version = found
        return snapshot if snapshot.version == version else snapshot.model_copy(
            update={"version": version}
        )

    def note_seen(self, key: Key, snapshot: StateSnapshot, version: int) -> None:
        if self.limit:
            _put(self._seen, key, (snapshot, version), self.limit)

    def seen_head(self, governor: str, stream_id: str) -> int:
        return self._seen_heads.get((governor, stream_id), 0)

    def note_head(self, governor: str, stream_id: str, head: int) -> None:
        if self.limit:
            key = (governor, stream_id)
            _put(self._seen_heads, key, max(head, self._seen_heads.get(key, 0)), self.limit)

    def wrote(
        self, governor: str, acting: int, prepared: list[Prepared], result: CommitResult
    ) -> None:
        """Member ``acting`` committed ``prepared`` with ``result``: what was written is
        now seen."""
        self.committed(acting, governor, prepared, result)
        for item, outcome in zip(prepared, result, strict=True):
            if isinstance(item, PreparedAppend):
                self.note_head(governor, item.stream_id, outcome.version)
                if item.state is not None:
                    self.note_seen((governor, STATES, item.stream_id), item.state,
                                   outcome.version)
            elif isinstance(item, PreparedPut):
                self.note_seen((governor, item.kind, item.record_id), item.snapshot,
                               outcome.version)
            elif isinstance(item, PreparedDelete):
                self._seen.pop((governor, item.kind, item.record_id), None)


def as_op(item: Prepared, *, keep_tokens: bool) -> Op:
    """The operation ``item`` was prepared from (checked; tokens kept or dropped)."""
    token = getattr(item, "token", None) if keep_tokens else None
    if isinstance(item, PreparedAppend):
        return Append(item.stream_id, item.events, item.expected, item.state, token, item.prior)
    if isinstance(item, PreparedPut):
        return Put(item.record_id, item.snapshot, item.expected, token, item.kind)
    if isinstance(item, PreparedDelete):
        return Delete(item.record_id, item.expected, token, item.kind)
    if isinstance(item, PreparedExpect):
        return Expect(item.record_id, item.version, token, item.kind)
    return Fence(item.resource, item.fencing_token)


def commit_keys(governor: str, prepared: list[Prepared]) -> list[Key]:
    """The keys a commit writes: streams (with their state records) and records."""
    keys: list[Key] = []
    for item in prepared:
        if isinstance(item, PreparedAppend):
            keys.append((governor, EVENTS, item.stream_id))
            if item.state is not None:
                keys.append((governor, STATES, item.stream_id))
        elif isinstance(item, PreparedPut | PreparedDelete):
            keys.append((governor, item.kind, item.record_id))
    return keys
