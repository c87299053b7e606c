"""Serialisable multi-record transactions over ONE ``Store.commit``.

A :class:`Transaction` is one attempt of a transaction function ``fn(tx)``. It reads state
records through the store (``get_state``, ``batch_get_states``, ``exists``) and *buffers*
writes (``save_state``, ``update_state``, ``delete_state``). When ``fn`` returns,
:func:`run_transaction` turns the attempt into one list of :mod:`tai_fsm.stores.ops`:

* a record written: ``Put`` / ``Delete`` at the version the transaction read (a record never
  read is written blind, or at the ``expected_version`` the caller gave);
* a record only read: ``Expect(id, version_read)`` (absent = version 0);
* each fence: ``Fence(resource, fencing_token)``;

and commits them with ONE ``store.commit(governor, ops)`` — SQLite one ``BEGIN IMMEDIATE``
transaction, Firestore one batch preconditioned on each read document's update time,
memory under its lock. So the commit applies only if nothing the attempt read has changed
since it was read: the transaction is serialisable. When the commit (or anything in ``fn``)
raises a transient error — a ``VersionConflict`` above all — the WHOLE ``fn`` runs again on
a fresh :class:`Transaction`, with full-jitter backoff, through :func:`tai_fsm.retry.retry_async`;
after the last attempt ``TransactionFailed(attempts=, cause=)`` carries the last error.

Reads are repeatable and see the attempt's own writes: reading a record twice returns what
was read the first time (no second round trip), reading a record after writing it returns
the buffered write with the version it will have. An attempt that observes two different
versions of one record (concurrent reads from tasks inside ``fn``) raises ``VersionConflict``
and is retried.

**Exactly once across unknown outcomes.** A conflict means nothing was written. A transient
store error raised by the commit itself (a lost reply from a remote store) may hide a commit
that landed; the re-run then sees its effects. A transaction that must apply exactly once
records an idempotency key in the same commit and checks it first (``if await
tx.exists(key): return``; ``tx.save_state(key, ...)``) — docs/coordination.md shows it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from tai_fsm.errors import (
    InvalidInput,
    StateNotFound,
    TaiFsmError,
    TransactionFailed,
    VersionConflict,
)
from tai_fsm.records import DistributedLock, StateSnapshot, StoredState
from tai_fsm.retry import RetryPolicy, retry_async
from tai_fsm.stores import ops
from tai_fsm.stores.base import Store
from tai_fsm.stores.common import check_id, check_ids, check_snapshot, check_version

__all__ = ["Outcome", "Transaction", "run_transaction"]

T = TypeVar("T")

_Write = Literal["none", "put", "delete"]


class _Buffered:
    """What a buffered write returns: awaiting it is optional (``tx.save_state(...)`` and
    ``await tx.save_state(...)`` do the same thing — the write is buffered at the call)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator that finishes at once


_DONE = _Buffered()


@dataclass(slots=True)
class _Entry:
    """What one attempt knows about one state record."""

    read: int | None = None  # version read from the store (0 = absent); None: not read
    token: str | None = None
    snapshot: StateSnapshot | None = None  # the record as read (None when absent)
    expected: int | None = None  # expected version given for a record never read
    write: _Write = "none"
    written: StateSnapshot | None = None
    blind_put: bool = False  # a put whose base version is unknown (never read, no expected)

    def base(self) -> int | None:
        """The store version this attempt's write is relative to (None: unknown)."""
        return self.read if self.read is not None else self.expected

    def view(self) -> int | None:
        """The version this attempt sees (0 = absent; None: unknown)."""
        if self.write == "delete":
            return 0
        base = self.base()
        if self.write == "put":
            return None if base is None else base + 1
        return base


class Transaction:
    """One attempt of a transaction in one governor (see the module docstring).

    Reads are ``async``; writes are buffered at the call and return an object that may be
    awaited or ignored. Every write is checked at once (ids, snapshot type); an
    ``expected_version`` that disagrees with what the attempt sees raises
    ``VersionConflict`` before anything is committed."""

    def __init__(self, store: Store, governor: str, attempt: int = 1) -> None:
        self.store = store
        self.governor = governor
        #: 1 for the first run of ``fn``, 2 for the first retry, ...
        self.attempt = attempt
        self._entries: dict[str, _Entry] = {}
        self._fences: dict[str, int] = {}
        self._open = True

    # ------------------------------------------------------------------ reads
    async def get_state(self, state_id: str) -> tuple[StateSnapshot, int]:
        """``(snapshot, version)`` as this attempt sees it; ``StateNotFound`` when absent."""
        state_id = self._checked(state_id)
        entry = await self._known(state_id)
        return self._seen(state_id, entry)

    async def batch_get_states(
        self, state_ids: Iterable[str]
    ) -> dict[str, tuple[StateSnapshot, int]]:
        """Several records, read in one round trip (those not read yet); absent ids are
        left out of the result, but the transaction still depends on their absence."""
        self._live()
        listed = state_ids if isinstance(state_ids, str | bytes) else list(state_ids)
        ids = list(dict.fromkeys(check_ids(listed, "state id")))
        unread = [sid for sid in ids if self._needs_read(sid)]
        if unread:
            found = await self.store.batch_read_states(self.governor, unread)
            for sid in unread:
                self._record(sid, found.get(sid))
        result: dict[str, tuple[StateSnapshot, int]] = {}
        for sid in ids:
            entry = self._entries[sid]
            if entry.view() != 0:
                result[sid] = self._seen(sid, entry)
        return result

    async def exists(self, state_id: str) -> bool:
        """Whether the record exists as this attempt sees it (a dependency like any read:
        the commit checks it still holds)."""
        state_id = self._checked(state_id)
        return (await self._known(state_id)).view() != 0

    # ------------------------------------------------------------------ writes
    def save_state(self, state_id: str, snapshot: StateSnapshot) -> _Buffered:
        """Write ``snapshot`` as record ``state_id``: at the version read when the attempt
        read it (or created it: read as absent), unconditionally when it never did."""
        state_id = self._checked(state_id)
        snapshot = check_snapshot(snapshot)
        entry = self._entries.setdefault(state_id, _Entry())
        if entry.base() is None:
            entry.blind_put = True
        entry.write, entry.written = "put", snapshot
        return _DONE

    def update_state(
        self, state_id: str, snapshot: StateSnapshot, *, expected_version: int
    ) -> _Buffered:
        """Write ``snapshot`` if the record is at ``expected_version`` — checked now against
        what this attempt sees (``VersionConflict`` if it differs), and at commit against
        the store."""
        state_id = self._checked(state_id)
        snapshot = check_snapshot(snapshot)
        if expected_version is None:
            raise InvalidInput("update_state needs an expected_version", field="expected_version")
        expected = check_version(expected_version, "expected_version")
        entry = self._expecting(state_id, expected)
        entry.write, entry.written = "put", snapshot
        return _DONE

    def delete_state(self, state_id: str, expected_version: int | None = None) -> _Buffered:
        """Delete the record (``StateNotFound`` now if this attempt sees it absent;
        ``VersionConflict`` now if ``expected_version`` disagrees with what it sees)."""
        state_id = self._checked(state_id)
        if expected_version is not None:
            entry = self._expecting(state_id, check_version(expected_version, "expected_version"))
        else:
            entry = self._entries.setdefault(state_id, _Entry())
        if entry.view() == 0:
            raise StateNotFound(self.governor, state_id)
        entry.write, entry.written = "delete", None
        return _DONE

    def fence(self, lock: DistributedLock) -> None:
        """Make the commit conditional on ``lock`` still being the newest lease of its
        resource (``ops.Fence``): it fails with ``LockNotHeld`` once a newer fencing token
        was issued. The lock must live in this transaction's governor."""
        self._live()
        if not isinstance(lock, DistributedLock):
            raise InvalidInput(
                f"fence() needs a DistributedLock, got {type(lock).__name__}", field="lock"
            )
        resource = check_id(lock.resource, "lock resource")
        self._fences[resource] = max(self._fences.get(resource, 0), lock.fencing_token)

    # ------------------------------------------------------------------ internals
    def _live(self) -> None:
        if not self._open:
            raise InvalidInput(
                "this transaction attempt is over (committed, failed or retried); use the "
                "tx passed to the current call of the transaction function"
            )

    def _checked(self, state_id: str) -> str:
        self._live()
        return check_id(state_id, "state id")

    def _needs_read(self, state_id: str) -> bool:
        entry = self._entries.get(state_id)
        if entry is None:
            return True
        return entry.read is None and entry.write != "delete" and entry.view() is None

    async def _known(self, state_id: str) -> _Entry:
        if self._needs_read(state_id):
            try:
                stored: StoredState | None = await self.store.read_state(self.governor, state_id)
            except StateNotFound:
                stored = None
            self._record(state_id, stored)
        return self._entries[state_id]

    def _record(self, state_id: str, stored: StoredState | None) -> None:
        """Remember what the store returned; refuse to have seen two versions of one record."""
        version = 0 if stored is None else stored.version
        entry = self._entries.setdefault(state_id, _Entry())
        if entry.read is not None:
            if entry.read != version:
                raise VersionConflict(state_id, entry.read, version)
            return
        if entry.expected is not None and entry.expected != version:
            raise VersionConflict(state_id, entry.expected, version)
        entry.read, entry.expected, entry.blind_put = version, None, False
        entry.token = None if stored is None else stored.token
        entry.snapshot = None if stored is None else stored.snapshot

    def _seen(self, state_id: str, entry: _Entry) -> tuple[StateSnapshot, int]:
        view = entry.view()
        if view == 0 or view is None:
            raise StateNotFound(self.governor, state_id)
        if entry.write == "put":
            assert entry.written is not None
            return entry.written.model_copy(update={"id": state_id, "version": view}), view
        assert entry.snapshot is not None
        return entry.snapshot, view

    def _expecting(self, state_id: str, expected: int) -> _Entry:
        entry = self._entries.setdefault(state_id, _Entry())
        seen = entry.view()
        if seen is None and entry.write == "none":
            entry.expected = expected
            return entry
        if seen is None:
            # a blind put earlier in this attempt shows version base + 1 for a base not
            # known yet: this expectation pins the base (checked at commit)
            if expected < 1:
                raise VersionConflict(state_id, expected, None)
            entry.expected, entry.blind_put = expected - 1, False
            return entry
        if seen != expected:
            raise VersionConflict(state_id, expected, seen)
        return entry

    async def _ops(self) -> tuple[list[ops.Op], list[str]]:
        """The commit's operations, and which record each one writes ('' = none)."""
        for state_id, entry in self._entries.items():
            if entry.write == "delete" and entry.blind_put and entry.base() is None:
                # saved blind, then deleted: whether a Delete is needed depends on the store
                await self._known_base(state_id)
        commit: list[ops.Op] = []
        writes: list[str] = []
        for state_id, entry in self._entries.items():
            base = entry.base()
            if entry.write == "put":
                assert entry.written is not None
                commit.append(ops.Put(state_id, entry.written, base, entry.token))
                writes.append(state_id)
            elif entry.write == "delete":
                if base == 0:  # created and deleted in this attempt: it must still be absent
                    commit.append(ops.Expect(state_id, 0, entry.token))
                    writes.append("")
                else:
                    commit.append(ops.Delete(state_id, base, entry.token))
                    writes.append(state_id)
            elif entry.read is not None:
                commit.append(ops.Expect(state_id, entry.read, entry.token))
                writes.append("")
        for resource, token in self._fences.items():
            commit.append(ops.Fence(resource, token))
            writes.append("")
        return commit, writes

    async def _known_base(self, state_id: str) -> None:
        try:
            stored: StoredState | None = await self.store.read_state(self.governor, state_id)
        except StateNotFound:
            stored = None
        entry = self._entries[state_id]
        entry.read = 0 if stored is None else stored.version
        entry.token = None if stored is None else stored.token

    def _close(self) -> None:
        self._open = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a committed transaction returned and wrote: ``versions`` maps each record
    written to its version after the commit (0 = deleted); ``attempts`` counts runs of
    ``fn``."""

    value: Any
    versions: dict[str, int]
    attempts: int


async def run_transaction(
    store: Store,
    governor: str,
    fn: Callable[[Transaction], Any],
    policy: RetryPolicy,
    *,
    fences: Sequence[DistributedLock] = (),
) -> Outcome:
    """Run ``fn`` on fresh :class:`Transaction` attempts until one commits (module
    docstring). Permanent errors and exceptions that are not ``TaiFsmError`` propagate
    unchanged (nothing written); transient ones retried past the policy raise
    ``TransactionFailed``."""
    gov = check_id(governor, "governor")
    if not callable(fn):
        raise InvalidInput(
            f"the transaction function must be callable, got {type(fn).__name__}", field="fn"
        )
    attempts = 0

    async def attempt() -> Outcome:
        nonlocal attempts
        attempts += 1
        tx = Transaction(store, gov, attempts)
        for lock in fences:
            tx.fence(lock)
        try:
            value = fn(tx)
            if inspect.isawaitable(value):
                value = await value
            commit, writes = await tx._ops()
            versions: dict[str, int] = {}
            if commit:
                result = await store.commit(gov, commit)
                versions = {sid: r.version for sid, r in zip(writes, result, strict=True) if sid}
            return Outcome(value, versions, attempts)
        finally:
            tx._close()

    try:
        return await retry_async(attempt, policy)
    except TaiFsmError as exc:
        if not policy.should_retry(exc):
            raise
        raise TransactionFailed(
            f"transaction in governor {gov!r} did not commit after {attempts} attempt(s): "
            f"{exc}",
            attempts=attempts,
            cause=exc,
        ) from exc
