"""One exception tree for everything tai-fsm raises.

Every error answers three questions a caller needs for retry logic:

* ``is_transient()`` — trying the same operation again may succeed (a conflict, a timeout,
  a store that is briefly unavailable);
* ``is_permanent()`` — the exact opposite: retrying the same input can never succeed;
* ``backoff_duration(attempt)`` — how long to wait before retry number ``attempt`` (0-based):
  exponential growth with full jitter, capped, so contending clients spread out.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

__all__ = [
    "ConflictResolutionFailed",
    "DeadlockDetected",
    "DefinitionError",
    "DefinitionProblem",
    "DiagramError",
    "EmulatorError",
    "FirestoreRequestFailed",
    "InstanceExists",
    "IntegrityError",
    "InvalidInput",
    "LockNotHeld",
    "OperationTimeout",
    "PostCommitHookFailed",
    "SerializationError",
    "StaleRead",
    "StateNotFound",
    "StoreFailure",
    "StoreUnavailable",
    "TaiFsmError",
    "TimerNotPending",
    "TransactionFailed",
    "TransitionNotAllowed",
    "VersionConflict",
    "WorkerReplaced",
    "shown",
]

_SHOWN_LIMIT = 80


def shown(value: object, limit: int = _SHOWN_LIMIT) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for quoting user input in an error
    message (a 10 MB trigger name must not be echoed whole)."""
    try:
        text = repr(value)
    except Exception:  # a user object whose __repr__ fails
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[: limit - 20]}...({len(text):,} chars)"


class TaiFsmError(Exception):
    """Base of every error tai-fsm raises on purpose."""

    transient: ClassVar[bool] = False
    backoff_base: ClassVar[float] = 0.05
    backoff_cap: ClassVar[float] = 5.0
    #: Set by the retry helper (``tai_fsm.retry``) when it gives up: attempts made, seconds.
    attempts: int = 1
    elapsed: float = 0.0

    def is_transient(self) -> bool:
        """True when the same operation may succeed if tried again (after a backoff)."""
        return self.transient

    def is_permanent(self) -> bool:
        """True when retrying the same input can never succeed."""
        return not self.is_transient()

    def backoff_duration(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): full jitter over
        ``min(cap, base * 2**attempt)``. Permanent errors return 0.0 (do not retry)."""
        if not self.is_transient():
            return 0.0
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** max(0, attempt)))
        return random.uniform(0.0, ceiling)


class InvalidInput(TaiFsmError, ValueError):
    """An argument is malformed (an id, a version, a duration, ...). Nothing was written."""

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class DefinitionProblem:
    """One problem found in a machine definition, located as precisely as known."""

    __slots__ = ("column", "file", "line", "message")

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column

    def location(self) -> str:
        """``file:line:column`` with whatever parts are known (empty when none)."""
        parts = [p for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(str(p) for p in parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.message}" if where else self.message

    def __repr__(self) -> str:
        return f"DefinitionProblem({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DefinitionProblem) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class DefinitionError(TaiFsmError, ValueError):
    """A machine definition is invalid. ``problems`` lists every problem found (each with
    ``file:line:column`` where known); ``str()`` shows them one per line."""

    def __init__(
        self,
        message_or_problems: str | list[DefinitionProblem],
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        if isinstance(message_or_problems, str):
            problems = [
                DefinitionProblem(message_or_problems, file=file, line=line, column=column)
            ]
        else:
            problems = list(message_or_problems)
        self.problems = problems
        first = problems[0] if problems else DefinitionProblem("invalid definition")
        self.file = first.file
        self.line = first.line
        self.column = first.column
        super().__init__("\n".join(str(p) for p in problems) or "invalid definition")


class DiagramError(TaiFsmError):
    """A diagram could not be produced (unknown format or state, Graphviz missing/failed)."""


class TransitionNotAllowed(TaiFsmError):
    """A trigger cannot fire: unknown trigger, not allowed from the current state, or a
    condition failed (``condition`` names it). Nothing was written."""

    def __init__(
        self,
        message: str,
        *,
        trigger: str | None = None,
        state: str | None = None,
        condition: str | None = None,
    ) -> None:
        super().__init__(message)
        self.trigger = trigger
        self.state = state
        self.condition = condition


class StateNotFound(TaiFsmError, LookupError):
    """No record with that id in that governor (``what`` names the kind: ``state``,
    ``instance``, ...), e.g. ``instance 'o-1' not found (governor shop)``."""

    def __init__(self, governor: str, state_id: str, what: str = "state") -> None:
        where = governor if isinstance(governor, str) and len(governor) <= 80 else shown(governor)
        super().__init__(f"{what} {shown(state_id)} not found (governor {where})")
        self.governor = governor
        self.state_id = state_id


class VersionConflict(TaiFsmError):
    """Optimistic concurrency failed: the writer expected ``expected`` but the record or
    stream ``doc_id`` is at ``actual``. Nothing was written. Transient: re-read and retry."""

    transient = True
    backoff_base = 0.005
    backoff_cap = 0.5

    def __init__(self, doc_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"version conflict on {doc_id!r}: expected version {expected}, found {actual}; "
            "re-read and retry"
        )
        self.doc_id = doc_id
        self.expected = expected
        self.actual = actual


class InstanceExists(VersionConflict):
    """``Runtime.create`` found an instance with that id already, e.g. ``instance 'o-1'
    already exists (version 2)``. Nothing was written. Not transient: creating the same id
    again can never succeed (``get`` it instead)."""

    transient = False

    def __init__(self, instance_id: str, actual: int | None) -> None:
        TaiFsmError.__init__(
            self, f"instance {shown(instance_id)} already exists (version {actual})"
        )
        self.doc_id = instance_id
        self.expected = 0
        self.actual = actual


class TransactionFailed(TaiFsmError):
    """A transaction did not commit after its last attempt; ``cause`` is the last error."""

    def __init__(self, message: str, *, attempts: int = 0, cause: BaseException | None = None):
        super().__init__(message)
        self.attempts = attempts
        self.cause = cause


class DeadlockDetected(TaiFsmError):
    """Waiting for a lock would close a cycle in the wait-for graph; this waiter gives up.
    Transient: release what you hold, back off, retry."""

    transient = True

    def __init__(self, message: str, *, cycle: list[str] | None = None) -> None:
        super().__init__(message)
        self.cycle = cycle or []


class LockNotHeld(TaiFsmError):
    """The lock is not held by this token (expired, released, or taken over)."""


class OperationTimeout(TaiFsmError, TimeoutError):
    """An operation did not finish in time. Transient."""

    transient = True


class StaleRead(TaiFsmError):
    """A read returned a version causally behind one already seen (or concurrent with it:
    missing some of its writes). Transient: read again. ``record_id``, ``read_version`` and
    ``newer_version`` name the record and both versions when known."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        record_id: str | None = None,
        read_version: int | None = None,
        newer_version: int | None = None,
    ) -> None:
        super().__init__(message)
        self.record_id = record_id
        self.read_version = read_version
        self.newer_version = newer_version


class ConflictResolutionFailed(TaiFsmError):
    """Concurrent versions could not be merged by the configured resolver. ``record_id``
    names the record and ``conflicting`` holds the versions (``StateSnapshot``) when known."""

    def __init__(
        self, message: str, *, record_id: str | None = None, conflicting: tuple[Any, ...] = ()
    ) -> None:
        super().__init__(message)
        self.record_id = record_id
        self.conflicting = conflicting


class IntegrityError(TaiFsmError):
    """The audit hash chain is broken (or a stored record is corrupt) at ``stream_id`` /
    ``version``."""

    def __init__(self, message: str, *, stream_id: str | None = None, version: int | None = None):
        super().__init__(message)
        self.stream_id = stream_id
        self.version = version


class StoreUnavailable(TaiFsmError):
    """The store could not be reached or refused temporarily. Transient."""

    transient = True
    backoff_base = 0.1
    backoff_cap = 10.0


class StoreFailure(TaiFsmError):
    """The store cannot do this, and trying again will not help: ``condition`` says why —
    ``"missing"`` (no store at that path), ``"read_only"``, ``"disk_full"``,
    ``"file_too_large"`` (the process's file-size limit), ``"cannot_open"``, ``"io_error"``.
    Never retried; the message names the condition in words ("the disk is full")."""

    def __init__(self, message: str, *, condition: str) -> None:
        super().__init__(message)
        self.condition = condition


class FirestoreRequestFailed(StoreFailure):
    """Firestore refused a request for a reason retrying cannot fix: permissions
    (grant ``roles/datastore.user``), credentials, a missing index, an unsupported request.
    ``code`` is the gRPC status name when known."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, condition="refused")
        self.code = code


class EmulatorError(TaiFsmError, RuntimeError):
    """The Firestore emulator used by the test suite could not be found or started."""


class SerializationError(TaiFsmError, ValueError):
    """Data cannot be stored: not JSON-serialisable, or over a size limit. Nothing written."""


class PostCommitHookFailed(TaiFsmError):
    """The transition committed (``event`` is durable) but a post-commit hook raised.
    The event is not undone; ``errors`` holds what each failing hook raised."""

    def __init__(self, message: str, *, event: Any, errors: list[BaseException]) -> None:
        super().__init__(message)
        self.event = event
        self.errors = errors


class TimerNotPending(TaiFsmError):
    """The timer is no longer pending on the instance (its state was left, or it fired)."""


class WorkerReplaced(TaiFsmError):
    """Another worker started with this worker's id: this one must stop."""
