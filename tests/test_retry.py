"""The one retry helper: what is retried, how long it waits, what it says when it gives up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tai_fsm.errors import InvalidInput, StoreUnavailable, TaiFsmError, VersionConflict
from tai_fsm.retry import RetryPolicy, retry_async, retry_sync


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0, max_value=10, allow_nan=False),
    cap=st.floats(min_value=0, max_value=60, allow_nan=False),
)
def test_backoff_is_bounded_by_the_cap_and_never_negative(
    attempt: int, base: float, cap: float
) -> None:
    policy = RetryPolicy(base=base, cap=cap)
    delay = policy.delay(VersionConflict("x", 1, 2), attempt)
    assert 0.0 <= delay <= cap


def test_backoff_is_jittered_and_grows() -> None:
    policy = RetryPolicy(base=0.01, cap=10.0)
    error = VersionConflict("x", 1, 2)
    early = [policy.delay(error, 0) for _ in range(200)]
    late = [policy.delay(error, 8) for _ in range(200)]
    assert len(set(early)) > 150  # jittered, not lock-step
    assert max(early) <= 0.01 and max(late) > 0.5


def test_error_class_backoff_is_the_default() -> None:
    policy = RetryPolicy()
    assert max(policy.delay(VersionConflict("x", 1, 2), 50) for _ in range(50)) <= 0.5
    assert max(policy.delay(StoreUnavailable("busy"), 50) for _ in range(50)) <= 10.0


def test_transient_errors_are_retried_until_success() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise VersionConflict("x", 1, 2)
        return "ok"

    seen: list[int] = []
    assert retry_sync(flaky, RetryPolicy(base=0.0), on_retry=lambda n, e, w: seen.append(n)) == "ok"
    assert len(calls) == 3 and seen == [1, 2]


def test_permanent_errors_are_not_retried() -> None:
    calls = []

    def bad() -> None:
        calls.append(1)
        raise InvalidInput("no")

    with pytest.raises(InvalidInput):
        retry_sync(bad)
    assert len(calls) == 1


async def test_giving_up_says_how_many_attempts_over_how_long() -> None:
    async def always() -> None:
        raise VersionConflict("x", 1, 2)

    with pytest.raises(VersionConflict) as info:
        await retry_async(always, RetryPolicy(max_attempts=4, base=0.001))
    assert info.value.attempts == 4 and info.value.elapsed >= 0
    assert "gave up after 4 attempts" in "".join(getattr(info.value, "__notes__", []))


async def test_max_elapsed_stops_early() -> None:
    calls = []

    async def always() -> None:
        calls.append(1)
        raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):
        await retry_async(always, RetryPolicy(max_attempts=1000, base=0.05, max_elapsed=0.2))
    assert len(calls) < 50


def test_non_tai_fsm_errors_propagate_at_once() -> None:
    with pytest.raises(KeyError):
        retry_sync(lambda: {}["x"])


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_policy_rejects_bad_attempt_counts(bad: object) -> None:
    with pytest.raises(InvalidInput):
        RetryPolicy(max_attempts=bad)  # type: ignore[arg-type]


def test_policy_rejects_negative_waits() -> None:
    with pytest.raises(TaiFsmError):
        RetryPolicy(cap=-1)
