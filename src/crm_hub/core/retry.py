"""Retrying CRM calls: rate limits and transient failures only, with backoff, jitter and a deadline.

Built on tenacity. ``Retry-After`` (carried on RateLimited / Unavailable as ``retry_after``) is honoured
when the CRM sends it; otherwise exponential backoff with full jitter. Rejections (validation, duplicates)
and auth problems are never retried here: refresh-on-expiry is the credential store's business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_exponential_jitter

from crm_hub.errors import ProviderError
from crm_hub.observability import metrics
from crm_hub.providers import request_deadline as retry_deadline
from crm_hub.providers import request_deadline_variable, time_left

# The request's deadline is part of the provider contract, so provider HTTP clients can bound each call by it.
__all__ = ["RetryPolicy", "retry_deadline", "time_left"]

T = TypeVar("T")


def _count_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    metrics.CRM_RETRIES.labels(error.reason if isinstance(error, ProviderError) else "unknown").inc()


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, ProviderError) and error.retryable


def _is_transient_and_unapplied(error: BaseException) -> bool:
    return _is_transient(error) and isinstance(error, ProviderError) and not error.maybe_applied


@dataclass(frozen=True)
class RetryPolicy:
    #: At most this many tries in all (the first one included).
    attempts: int = 5
    #: Give up rather than wait past this many seconds since the first try.
    deadline_seconds: float = 30.0
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    #: Injected by tests to retry without waiting.
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)

    async def run(self, operation: Callable[[], Awaitable[T]], *, idempotent: bool = True) -> T:
        """Run ``operation``, retrying transient failures. A call that is not ``idempotent`` (a create) is
        retried only when the CRM certainly did not carry it out (``maybe_applied`` False): never twice."""
        backoff = wait_exponential_jitter(multiplier=self.initial_backoff, max=self.max_backoff)
        budget = self.deadline_seconds
        if (at := request_deadline_variable.get()) is not None:
            budget = max(0.0, min(budget, at - time.monotonic()))

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = error.retry_after if isinstance(error, ProviderError) else None
            if retry_after is not None:
                return min(float(retry_after), budget)
            return float(backoff(state))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts) | stop_before_delay(budget),
            wait=wait,
            before_sleep=_count_retry,
            retry=retry_if_exception(_is_transient if idempotent else _is_transient_and_unapplied),
            sleep=self.sleep,
            reraise=True,
        )

        async def attempt() -> T:
            # tenacity awaits coroutine *functions*; a lambda returning a coroutine must be awaited here.
            return await operation()

        return await retrying(attempt)
