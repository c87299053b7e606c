"""The one retry helper: every retry loop in tai-fsm (runtime commits, transactions, locks,
store-internal races) goes through :func:`retry_async` (or :func:`retry_sync`).

What is retried is decided by the error itself (``TaiFsmError.is_transient()``): a
conflict, a busy store, a timeout. Permanent errors (bad input, a read-only or full disk, a
damaged file) are raised at once. Waits use exponential backoff with full jitter
(``uniform(0, min(cap, base * 2**attempt))``), so contending clients spread out instead of
colliding again in lock-step; ``base`` and ``cap`` default to the error's own class values
(``VersionConflict`` retries within milliseconds, ``StoreUnavailable`` backs off further).

When the helper gives up, the last error is raised with ``attempts`` and ``elapsed``
(seconds) set on it and a note saying how many attempts were made over how long.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tai_fsm.errors import InvalidInput, TaiFsmError

__all__ = ["RetryPolicy", "give_up", "next_wait", "retry_async", "retry_sync"]

T = TypeVar("T")

#: Called before each wait: (attempt just failed, 1-based; the error; seconds to wait).
OnRetry = Callable[[int, TaiFsmError, float], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    ``max_attempts``: total attempts including the first (>= 1). ``base`` / ``cap``: backoff
    in seconds (``None``: the error class's ``backoff_base`` / ``backoff_cap``).
    ``max_elapsed``: stop retrying once this many seconds have passed (``None``: no limit).
    ``retry``: which errors to retry (default: ``error.is_transient()``)."""

    max_attempts: int = 6
    base: float | None = None
    cap: float | None = None
    max_elapsed: float | None = None
    retry: Callable[[TaiFsmError], bool] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or (
            self.max_attempts < 1
        ):
            raise InvalidInput(
                f"max_attempts must be an int >= 1, got {self.max_attempts!r}",
                field="max_attempts",
            )
        for name in ("base", "cap", "max_elapsed"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
            ):
                raise InvalidInput(f"{name} must be seconds >= 0, got {value!r}", field=name)

    def should_retry(self, error: BaseException) -> bool:
        """True when ``error`` is one this policy retries."""
        if not isinstance(error, TaiFsmError):
            return False
        return self.retry(error) if self.retry is not None else error.is_transient()

    def delay(self, error: TaiFsmError, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based): full jitter
        over ``min(cap, base * 2**attempt)``; never negative, never above ``cap``."""
        base = type(error).backoff_base if self.base is None else self.base
        cap = type(error).backoff_cap if self.cap is None else self.cap
        ceiling = min(cap, base * (2 ** min(max(0, attempt), 62)))
        return random.uniform(0.0, ceiling)


DEFAULT_POLICY = RetryPolicy()


def give_up(error: TaiFsmError, attempts: int, started: float) -> TaiFsmError:
    """Annotate ``error`` with how many attempts were made over how long (see module)."""
    elapsed = time.monotonic() - started
    error.attempts = attempts
    error.elapsed = elapsed
    if attempts > 1:
        error.add_note(f"gave up after {attempts} attempts over {elapsed:.2f}s")
    return error


def next_wait(
    policy: RetryPolicy, error: TaiFsmError, attempt: int, started: float
) -> float | None:
    """The wait before attempt ``attempt + 1`` (0-based ``attempt`` just failed with
    ``error``; ``started``: ``time.monotonic()`` before the first), or None to give up —
    for retry loops that cannot be a callable (the runtime's sans-I/O commit protocol)."""
    if attempt + 1 >= policy.max_attempts or not policy.should_retry(error):
        return None
    wait = policy.delay(error, attempt)
    if policy.max_elapsed is not None and time.monotonic() - started + wait > policy.max_elapsed:
        return None
    return wait


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    on_retry: OnRetry | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, retrying what ``policy`` retries (see module)."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return await fn()
        except TaiFsmError as exc:
            wait = next_wait(policy, exc, attempt, started)
            if wait is None:
                raise give_up(exc, attempt + 1, started)  # noqa: B904 - the error itself
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            await asyncio.sleep(wait)


def retry_sync(
    fn: Callable[[], T],
    policy: RetryPolicy = DEFAULT_POLICY,
    *,
    on_retry: OnRetry | None = None,
) -> T:
    """:func:`retry_async` for blocking code (sleeps with ``time.sleep``)."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except TaiFsmError as exc:
            wait = next_wait(policy, exc, attempt, started)
            if wait is None:
                raise give_up(exc, attempt + 1, started)  # noqa: B904 - the error itself
            attempt += 1
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            time.sleep(wait)
