"""Rate budgets, on SQLite and PostgreSQL: every request waits for its slot, no window ever holds more than the
limit — whichever process asks — background work leaves room for interactive calls, and what the CRM reports
of a daily allowance keeps jobs from spending its last part."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from crm_hub.core.budget import BACKGROUND_SHARE, BudgetMeter, RateBudgets, Schedule
from crm_hub.errors import RateLimited
from crm_hub.providers import Quota, RateLimit
from crm_hub.storage import Database, TeamRepository

HUBSPOT = RateLimit(name="10s", requests=110, per_seconds=10)


class Clock:
    """Milliseconds since 1970, moved by the test; what ``sleep`` would have waited moves it too."""

    def __init__(self, start: float = 1_700_000_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def starts_of(
    budgets: RateBudgets, clock: Clock, team: str, limit: RateLimit, count: int, **options: object
) -> list[float]:
    """When each of ``count`` back-to-back requests may go, sleeping (on the clock) until its slot."""
    starts = []
    for _ in range(count):
        wait = await budgets.reserve(team, "hubspot", limit, max_wait=3600, **options)  # type: ignore[arg-type]
        clock.now += wait * 1000
        starts.append(clock.now)
    return starts


def most_in_any_window(starts: list[float], window_ms: float) -> int:
    ordered = sorted(starts)
    most, first = 0, 0
    for last, moment in enumerate(ordered):
        while moment - ordered[first] >= window_ms:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.fixture
async def team(database: Database, team_id: str) -> str:
    async with database.session() as session:
        await TeamRepository(session).ensure(team_id)
    return team_id


def test_hubspots_limit_becomes_a_request_every_96_ms_with_interactive_bursts_of_five() -> None:
    schedule = Schedule.of(HUBSPOT)

    assert schedule.interval_ms == pytest.approx(10_000 / 104)
    assert schedule.burst_ms == pytest.approx(5 * schedule.interval_ms)
    # The GCRA bound: 1 + (window + burst) / interval requests in any window, which is the limit exactly.
    assert 1 + (10_000 + schedule.burst_ms) / schedule.interval_ms == pytest.approx(110)


async def test_interactive_requests_never_put_more_than_the_limit_in_any_window(database: Database, team: str) -> None:
    clock = Clock()
    budgets = RateBudgets(database, clock=clock)

    starts = await starts_of(budgets, clock, team, HUBSPOT, 400, background=False)

    assert most_in_any_window(starts, 10_000) <= 110
    assert starts[4] == starts[0], "a burst of five goes at once"
    assert (starts[-1] - starts[0]) / 1000 < 400 * 10 / 104 + 0.1, "and no request waits longer than it must"


async def test_background_work_spends_at_most_ninety_percent_of_the_limit(database: Database, team: str) -> None:
    clock = Clock()
    budgets = RateBudgets(database, clock=clock)

    starts = await starts_of(budgets, clock, team, HUBSPOT, 200, background=True)

    per_second = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1000)
    assert per_second == pytest.approx(104 / 10 * BACKGROUND_SHARE, rel=0.01)
    # An interactive request arriving in the middle of a job waits less than one of the job's slots.
    wait = await budgets.reserve(team, "hubspot", HUBSPOT, background=False, max_wait=60)
    assert wait * 1000 <= Schedule.of(HUBSPOT).interval_ms / BACKGROUND_SHARE


async def test_a_slot_further_away_than_allowed_is_refused_and_takes_nothing(database: Database, team: str) -> None:
    clock = Clock()
    budgets = RateBudgets(database, clock=clock)
    small = RateLimit(name="1s", requests=3, per_seconds=1)
    await starts_of(budgets, clock, team, small, 2, background=False)
    before = await budgets.reserve(team, "hubspot", small, background=False, max_wait=10)

    with pytest.raises(RateLimited) as caught:
        await budgets.reserve(team, "hubspot", small, background=False, max_wait=0)
    after = await budgets.reserve(team, "hubspot", small, background=False, max_wait=10)

    assert caught.value.reason == "RATE_BUDGET_SPENT"
    assert (caught.value.retry_after or 0) > 0
    assert after - before == pytest.approx(Schedule.of(small).interval_ms / 1000), "the refused request took no slot"


async def test_requests_from_several_processes_share_one_budget(database_url: str, team: str) -> None:
    limit = RateLimit(name="2s", requests=8, per_seconds=2)
    processes = [Database(database_url) for _ in range(3)]  # each its own engine and pool, as replicas have
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def replica(database: Database) -> None:
        budgets = RateBudgets(database)
        for _ in range(6):
            await asyncio.sleep(await budgets.reserve(team, "hubspot", limit, background=False, max_wait=30))
            starts.append(loop.time() * 1000)

    try:
        await asyncio.gather(*(replica(database) for database in processes))
    finally:
        for database in processes:
            await database.close()

    assert len(starts) == 18
    # 18 requests at 8 per 2 s take at least two windows, and no window ever held more than 8 (the clock of
    # the sleeps, not the database's, so allow a millisecond of jitter either way).
    assert (max(starts) - min(starts)) / 1000 >= 2 * 2 * (18 - 8) / 18
    assert most_in_any_window(starts, 2_000 - 5) <= 8


async def test_a_daily_allowance_nearly_spent_holds_jobs_back(database: Database, team: str) -> None:
    budgets = RateBudgets(database)
    async with database.session() as session:
        await budgets.record_quotas(session, team, "salesforce", [Quota("daily", 80_000, 100_000, 86_400)])
    assert await budgets.spent_allowance(team, "salesforce") is None

    async with database.session() as session:
        await budgets.record_quotas(session, team, "salesforce", [Quota("daily", 95_000, 100_000, 86_400)])
    spent = await budgets.spent_allowance(team, "salesforce")

    assert spent is not None
    assert spent.reason == "RATE_BUDGET_SPENT"
    assert "95000 of its 100000" in spent.message
    views = await budgets.views(team, {"salesforce": ()})
    [daily] = views["salesforce"]
    assert (daily.name, daily.limit, daily.remaining, daily.window_seconds) == ("daily", 100_000, 5_000, 86_400)


async def test_status_view_shows_what_is_left_and_when_a_spent_budget_is_back(database: Database, team: str) -> None:
    clock = Clock()
    budgets = RateBudgets(database, clock=clock)
    fresh = await budgets.views(team, {"hubspot": (HUBSPOT,)})
    assert fresh["hubspot"][0].remaining == 110
    assert fresh["hubspot"][0].available_at is None

    await starts_of(budgets, clock, team, HUBSPOT, 0, background=False)
    for _ in itertools.repeat(None, 60):  # sixty requests at the same moment: a burst, then slots ahead
        await budgets.reserve(team, "hubspot", HUBSPOT, background=False, max_wait=3600)
    view = (await budgets.views(team, {"hubspot": (HUBSPOT,)}))["hubspot"][0]

    assert 45 <= view.remaining <= 55
    assert view.available_at is not None


async def test_slots_taken_ahead_are_waited_for_as_times_not_one_after_the_other(database: Database, team: str) -> None:
    # Requests whose slots were taken together (a batch's writes) go when each slot starts: waiting each one's
    # offset after the previous had finished made a batch of ten take the sum of their waits.
    limit = RateLimit(name="1s", requests=5, per_seconds=1)
    budgets = RateBudgets(database)
    meter = BudgetMeter(budgets, team, [limit], background=True, max_wait=30, provider="hubspot")
    # From before the slots are taken: their times count from then, however long taking them took on a busy box.
    started = asyncio.get_running_loop().time()
    async with database.session() as session:
        await meter.prepay(session, 3)

    for _ in range(3):
        await meter.started("hubspot", "upsert")

    interval = Schedule.of(limit).interval_ms / 1000 / BACKGROUND_SHARE
    assert asyncio.get_running_loop().time() - started == pytest.approx(2 * interval, abs=0.15)
    assert meter.calls == 3
