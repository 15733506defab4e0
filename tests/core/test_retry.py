"""Retries: rate limits and transient failures are retried with backoff; rejections never are."""

from __future__ import annotations

import time

import pytest

from crm_hub.core.retry import RetryPolicy, retry_deadline
from crm_hub.errors import AuthExpired, RateLimited, Rejected, Unavailable


class Flaky:
    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def policy(waits: list[float]) -> RetryPolicy:
    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return RetryPolicy(attempts=5, deadline_seconds=30, initial_backoff=0.5, max_backoff=8, sleep=sleep)


async def test_a_burst_of_rate_limits_is_retried_until_it_succeeds(policy: RetryPolicy, waits: list[float]) -> None:
    operation = Flaky(RateLimited("slow down"), RateLimited("slow down"), Unavailable("502"))
    assert await policy.run(operation) == "ok"
    assert operation.calls == 4
    assert len(waits) == 3
    assert all(0 <= wait <= 8 for wait in waits)


async def test_retry_after_from_the_crm_is_honoured(policy: RetryPolicy, waits: list[float]) -> None:
    operation = Flaky(RateLimited("slow down", retry_after=7.0), Unavailable("locked", retry_after=2.0))
    assert await policy.run(operation) == "ok"
    assert waits == [7.0, 2.0]


async def test_attempts_are_bounded_and_the_last_error_surfaces(policy: RetryPolicy, waits: list[float]) -> None:
    operation = Flaky(*(Unavailable(f"500 #{n}") for n in range(10)))
    with pytest.raises(Unavailable, match="500 #4"):
        await policy.run(operation)
    assert operation.calls == 5


async def test_a_wait_past_the_deadline_gives_up_at_once(policy: RetryPolicy, waits: list[float]) -> None:
    operation = Flaky(RateLimited("daily limit", retry_after=3600))
    with pytest.raises(RateLimited):
        await policy.run(operation)
    assert operation.calls == 1
    assert waits == []


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried(policy: RetryPolicy) -> None:
    operation = Flaky(Unavailable("502"))
    assert await policy.run(lambda: operation()) == "ok"
    assert operation.calls == 2


@pytest.mark.parametrize("error", [Rejected("invalid email"), AuthExpired("401")], ids=["rejected", "auth-expired"])
async def test_rejections_and_auth_errors_are_not_retried(
    policy: RetryPolicy, waits: list[float], error: Exception
) -> None:
    operation = Flaky(error)
    with pytest.raises(type(error)):
        await policy.run(operation)
    assert operation.calls == 1
    assert waits == []


async def test_a_create_is_retried_only_when_the_crm_cannot_have_applied_it(
    policy: RetryPolicy, waits: list[float]
) -> None:
    refused = Flaky(Unavailable("connection refused", maybe_applied=False), RateLimited("429"))
    assert await policy.run(refused, idempotent=False) == "ok"
    assert refused.calls == 3

    maybe_written = Flaky(Unavailable("502 after sending"))
    with pytest.raises(Unavailable):
        await policy.run(maybe_written, idempotent=False)
    assert maybe_written.calls == 1


async def test_retries_never_wait_past_the_requests_deadline(policy: RetryPolicy, waits: list[float]) -> None:
    operation = Flaky(RateLimited("slow down", retry_after=5), RateLimited("slow down", retry_after=5))
    with retry_deadline(time.monotonic() + 1.0), pytest.raises(RateLimited):
        await policy.run(operation)
    assert operation.calls == 1, "a 5 s wait does not fit in the 1 s left"
    assert waits == []
    assert await policy.run(operation) == "ok", "outside the block the policy's own 30 s apply"
