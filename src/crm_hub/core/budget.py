"""Rate budgets: every request to a team's CRM account waits for a slot of the account's allowance, whichever
replica or worker sends it. A spent budget makes work wait; it never fails it.

A limit the provider declares (``CrmProvider.rate_limits()``, e.g. HubSpot's 110 requests per 10 s) is kept as
a GCRA schedule in one row per account and limit: each request moves the account's theoretical arrival time on
by one slot, in one statement, and sleeps until its own slot. In any window of the limit's length at most
``1 + (window + burst) / interval`` requests go out, which the intervals below keep at the limit — so the CRM
never has to refuse one. Two shares of each limit:

* background work (sync jobs) spends at most 90% of it (each of its requests costs 1/0.9 of a slot), which
  leaves interactive ``SyncLead`` calls room at all times;
* interactive calls may run a little ahead of the schedule (a burst of 5% of the limit), so a few concurrent
  syncs do not queue behind each other.

An allowance the CRM reports in its answers (Salesforce's daily API requests, in ``Sforce-Limit-Info``) is
recorded as the CRM last said it; a job whose account has spent 90% of such an allowance waits for it to come
back rather than spend the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.errors import RateLimited
from crm_hub.observability import metrics
from crm_hub.providers import CrmOperation, CrmRequest, Quota, RateLimit
from crm_hub.storage import Database, utcnow
from crm_hub.storage.sync import RateBudgetRepository

__all__ = ["BACKGROUND_SHARE", "BudgetMeter", "BudgetView", "RateBudgets", "Schedule"]

#: The share of each limit background work may spend: the rest is always there for interactive calls.
BACKGROUND_SHARE = 0.9
#: How far ahead of the schedule interactive calls may run, as a share of the limit.
BURST_SHARE = 0.05
#: Requests that are the OAuth app's own, not the account's: no budget.
UNBUDGETED: frozenset[CrmOperation] = frozenset({"token", "revoke"})
#: A reported allowance at least this long is one a job must not spend the last of (a daily one).
LONG_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class Schedule:
    """A limit as a GCRA schedule: a request every ``interval_ms``; interactive ones up to ``burst_ms`` early."""

    interval_ms: float
    burst_ms: float

    @classmethod
    def of(cls, limit: RateLimit) -> Schedule:
        burst = max(1, int(limit.requests * BURST_SHARE)) if limit.requests > 3 else 0
        # At most 1 + (window + burst·interval) / interval requests in any window: exactly the limit.
        interval = limit.per_seconds * 1000 / (limit.requests - 1 - burst)
        return cls(interval_ms=interval, burst_ms=burst * interval)


@dataclass(frozen=True)
class BudgetView:
    """What is left of one allowance of an account, for status."""

    name: str
    limit: int
    window_seconds: int
    remaining: int
    available_at: datetime | None


class RateBudgets:
    def __init__(self, database: Database, *, clock: Callable[[], float] | None = None) -> None:
        """``clock`` gives the time in ms since 1970 (tests inject one)."""
        self._database = database
        self._now_ms = clock or (lambda: time.time() * 1000)

    async def reserve(
        self,
        team_id: str,
        provider: str,
        limit: RateLimit,
        *,
        background: bool,
        max_wait: float,
        session: AsyncSession | None = None,
    ) -> float:
        """Take the account's next slot of ``limit``; seconds to wait for it. RateLimited (with how long the
        budget needs) when the slot is further away than ``max_wait`` — then nothing is taken."""
        schedule = Schedule.of(limit)
        now = self._now_ms()
        cost = schedule.interval_ms / (BACKGROUND_SHARE if background else 1.0)
        early = 0.0 if background else schedule.burst_ms
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(self._database.session(writes=True))
            tat, taken = await RateBudgetRepository(session).reserve(
                team_id, provider, limit.name, now_ms=now, cost_ms=cost, early_ms=early, within_ms=max_wait * 1000
            )
        if not taken:
            # Nothing taken: tell how long until a slot would be near enough.
            needed = max(0.1, (tat - early - now) / 1000 - max_wait)
            raise RateLimited(
                f"The {provider} account's request budget ({limit.requests} per {limit.per_seconds:g} s) is spent "
                f"for now; it allows requests again in {needed:.1f} s.",
                provider=provider,
                reason="RATE_BUDGET_SPENT",
                retry_after=needed,
            )
        # Our slot: where the schedule stood before us, less what we may run early — or now.
        return max(tat - cost - early - now, 0.0) / 1000

    async def record_quotas(self, session: AsyncSession, team_id: str, provider: str, quotas: Iterable[Quota]) -> None:
        """What the CRM said of the account's allowances, in the caller's transaction."""
        rows = [(quota.name, quota.used, quota.limit, quota.window_seconds) for quota in quotas]
        if rows:
            await RateBudgetRepository(session).record_quotas(team_id, provider, rows, at=utcnow())

    async def spent_allowance(self, team_id: str, provider: str) -> RateLimited | None:
        """The long allowance (a daily one) the account has spent 90% of, as the CRM last reported it, if any:
        background work waits for it to come back rather than take the rest."""
        async with self._database.session() as session:
            rows = await RateBudgetRepository(session).for_team(team_id, provider)
        for row in rows:
            if row.quota is not None and (row.window_seconds or 0) >= LONG_WINDOW_SECONDS:
                window = timedelta(seconds=row.window_seconds or 0)
                fresh = row.observed_at is not None and row.observed_at > utcnow() - window
                if fresh and row.quota and (row.used or 0) >= row.quota * BACKGROUND_SHARE:
                    return RateLimited(
                        f"The {provider} account has used {row.used} of its {row.quota} requests per "
                        f"{(row.window_seconds or 0) // 3600} h; jobs wait, leaving the rest for interactive syncs.",
                        provider=provider,
                        reason="RATE_BUDGET_SPENT",
                        retry_after=900.0,
                    )
        return None

    async def views(self, team_id: str, limits: Mapping[str, Sequence[RateLimit]]) -> dict[str, list[BudgetView]]:
        """Per provider: what is left of each declared limit and each reported allowance."""
        async with self._database.session() as session:
            rows = {(row.provider, row.name): row for row in await RateBudgetRepository(session).for_team(team_id)}
        now = self._now_ms()
        views: dict[str, list[BudgetView]] = {}
        for provider, declared in limits.items():
            for limit in declared:
                schedule = Schedule.of(limit)
                row = rows.pop((provider, limit.name), None)
                ahead = max(0.0, (row.tat_ms or 0) - now) if row is not None else 0.0
                taken = math.ceil(ahead / schedule.interval_ms) if ahead else 0
                due = now + ahead - schedule.burst_ms
                views.setdefault(provider, []).append(
                    BudgetView(
                        name=limit.name,
                        limit=limit.requests,
                        window_seconds=math.ceil(limit.per_seconds),
                        remaining=max(0, limit.requests - taken),
                        available_at=_moment(due) if due > now else None,
                    )
                )
        for (provider, name), row in rows.items():
            if row.quota is None or provider not in limits:
                continue
            views.setdefault(provider, []).append(
                BudgetView(
                    name=name,
                    limit=int(row.quota),
                    window_seconds=int(row.window_seconds or 0),
                    remaining=max(0, int(row.quota) - int(row.used or 0)),
                    available_at=None,
                )
            )
        return views


@dataclass
class BudgetMeter:
    """Watches a sync's CRM requests: each waits for its budget slot; counts them; keeps what the CRM reported."""

    budgets: RateBudgets
    team_id: str
    limits: Sequence[RateLimit]
    background: bool
    #: The longest a request may wait for its slot (the RPC's deadline; a job's batch is queued again instead).
    max_wait: float
    #: The provider whose requests these are (for slots taken before a request says so).
    provider: str = ""
    calls: int = 0
    quotas: dict[str, Quota] = field(default_factory=dict)
    waited: float = 0.0
    #: When each prepaid slot starts (event-loop time), oldest first.
    _slots: list[float] = field(default_factory=list)

    #: Requests whose slots were taken already (with the writes' intents, in their transaction).
    prepaid: int = 0

    async def prepay(self, session: AsyncSession, requests: int) -> None:
        """Take the slots of ``requests`` requests about to go, in ``session``'s transaction; each then goes
        without a statement of its own (after waiting for its slot)."""
        if not self.limits or requests <= 0:
            return
        loop = asyncio.get_running_loop()
        for limit in self.limits:
            for _ in range(requests):
                wait = await self.budgets.reserve(
                    self.team_id,
                    self.provider,
                    limit,
                    background=self.background,
                    max_wait=self.max_wait,
                    session=session,
                )
                self._slots.append(loop.time() + wait)  # when the slot starts, not how long from whenever
        self.prepaid += requests

    async def started(self, provider: str, operation: CrmOperation) -> None:
        self.calls += 1
        if operation in UNBUDGETED:
            return
        if self.prepaid and operation in ("create", "update", "upsert"):
            self.prepaid -= 1
            slots, self._slots = self._slots[: len(self.limits)], self._slots[len(self.limits) :]
            await self._sleep(max(slots, default=0.0) - asyncio.get_running_loop().time())
            return
        for limit in self.limits:
            await self._sleep(
                await self.budgets.reserve(
                    self.team_id, provider, limit, background=self.background, max_wait=self.max_wait
                )
            )

    async def _sleep(self, wait: float) -> None:
        if wait > 0:
            self.waited += wait
            metrics.BUDGET_WAITS.labels(self.provider).inc()
            metrics.BUDGET_WAIT_SECONDS.labels(self.provider).inc(wait)
            await asyncio.sleep(wait)

    def finished(self, provider: str, operation: CrmOperation, request: CrmRequest) -> None:
        # Only long allowances are kept (a daily one): a short window is the declared limit's, kept above.
        if request.quota is not None and request.quota.window_seconds >= LONG_WINDOW_SECONDS:
            self.quotas[request.quota.name] = request.quota


def _moment(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=utcnow().tzinfo)
