"""The timeline: a lead's events newest first, paged without gaps or repeats; sync counts per provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from crm_hub.errors import InvalidArgument
from crm_hub.storage import Database, LeadRepository, SyncCounts, TimelineEvent, TimelineRepository

T0 = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


async def _lead(database: Database, team_id: str) -> str:
    async with database.session() as session:
        lead, _ = await LeadRepository(session).create(team_id, {"email": "t@example.com"})
    return lead.id


async def _append(
    database: Database,
    team_id: str,
    *,
    lead_id: str | None = None,
    provider: str = "hubspot",
    action: str = "created",
    dry_run: bool = False,
    created_at: datetime | None = None,
) -> TimelineEvent:
    async with database.session() as session:
        return await TimelineRepository(session).append(
            team_id,
            lead_id=lead_id,
            provider=provider,
            action=action,
            dry_run=dry_run,
            message=f"{action} on {provider}",
            actor="user-1",
            request_id="req-1",
            duration_ms=12,
            created_at=created_at,
        )


async def _page(
    database: Database, team_id: str, lead_id: str, limit: int, before: tuple[datetime, str] | None = None
) -> list[TimelineEvent]:
    async with database.session() as session:
        return await TimelineRepository(session).list_for_lead(team_id, lead_id, limit, before)


async def test_appended_event_keeps_every_field(database: Database, team_id: str) -> None:
    lead_id = await _lead(database, team_id)
    async with database.session() as session:
        await TimelineRepository(session).append(
            team_id,
            lead_id=lead_id,
            provider="salesforce",
            action="failed",
            contact_id="003XYZ",
            dry_run=False,
            error_reason="RATE_LIMITED",
            message="Salesforce asked us to slow down",
            actor="user-7",
            request_id="req-99",
            duration_ms=1234,
        )

    [event] = await _page(database, team_id, lead_id, 10)

    assert (event.provider, event.action, event.contact_id, event.dry_run, event.error_reason) == (
        "salesforce",
        "failed",
        "003XYZ",
        False,
        "RATE_LIMITED",
    )
    assert (event.message, event.actor, event.request_id, event.duration_ms) == (
        "Salesforce asked us to slow down",
        "user-7",
        "req-99",
        1234,
    )
    assert event.created_at.tzinfo is UTC
    assert abs(datetime.now(UTC) - event.created_at) < timedelta(minutes=1)


async def test_timeline_pages_newest_first(database: Database, team_id: str) -> None:
    lead_id = await _lead(database, team_id)
    # Three events share a timestamp: the id breaks the tie so paging neither skips nor repeats them.
    times = [T0 + timedelta(seconds=second) for second in (0, 1, 1, 1, 2)]
    appended = [await _append(database, team_id, lead_id=lead_id, created_at=at) for at in times]
    newest_first = sorted(appended, key=lambda event: (event.created_at, event.id), reverse=True)

    pages: list[list[str]] = []
    before: tuple[datetime, str] | None = None
    while page := await _page(database, team_id, lead_id, 2, before):
        pages.append([event.id for event in page])
        before = (page[-1].created_at, page[-1].id)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [event_id for page in pages for event_id in page] == [event.id for event in newest_first]


async def test_timeline_lists_only_that_leads_events_for_that_team(
    database: Database, team_id: str, other_team_id: str
) -> None:
    lead_id = await _lead(database, team_id)
    other_lead_id = await _lead(database, team_id)
    mine = await _append(database, team_id, lead_id=lead_id)
    await _append(database, team_id, lead_id=other_lead_id)
    await _append(database, team_id)  # an event about no lead at all

    assert [event.id for event in await _page(database, team_id, lead_id, 10)] == [mine.id]
    assert await _page(database, other_team_id, lead_id, 10) == []


async def test_timeline_page_position_must_be_timezone_aware(database: Database, team_id: str) -> None:
    lead_id = await _lead(database, team_id)

    with pytest.raises(InvalidArgument):
        await _page(database, team_id, lead_id, 10, (datetime(2024, 1, 1), "0" * 32))


async def test_sync_counts_ignore_dry_runs(database: Database, team_id: str, other_team_id: str) -> None:
    lead_id = await _lead(database, team_id)
    for action in ("created", "updated", "skipped", "failed", "failed"):
        await _append(database, team_id, lead_id=lead_id, action=action)
    for action in ("created", "failed"):
        await _append(database, team_id, lead_id=lead_id, action=action, dry_run=True)
    await _append(database, team_id, action="connected")  # not a sync attempt
    await _append(database, team_id, lead_id=lead_id, provider="salesforce", action="updated")
    await _append(database, other_team_id, provider="hubspot", action="created")

    async with database.session() as session:
        counts = await TimelineRepository(session).sync_counts(team_id)

    assert counts == {
        "hubspot": SyncCounts(total=5, succeeded=3),
        "salesforce": SyncCounts(total=1, succeeded=1),
    }


async def test_sync_counts_are_empty_for_a_team_that_never_synced(database: Database, team_id: str) -> None:
    await _append(database, team_id, action="created", dry_run=True)

    async with database.session() as session:
        assert await TimelineRepository(session).sync_counts(team_id) == {}
