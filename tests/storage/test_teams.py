"""Teams: created on first sight, even by racing requests; deleting one deletes everything it owns."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError

from crm_hub.storage import (
    Base,
    CredentialRepository,
    Database,
    IntegrationRepository,
    IntegrationStatus,
    LeadRepository,
    OAuthStateRepository,
    Team,
    TeamRepository,
    TimelineRepository,
)
from crm_hub.storage.models import SyncJob, utcnow
from crm_hub.storage.sync import JobRepository, RateBudgetRepository, StateChange, SyncStateRepository


async def test_ensuring_a_team_twice_keeps_one_row(database: Database) -> None:
    team_id = f"team-{uuid.uuid4().hex}"

    for _ in range(2):
        async with database.session() as session:
            await TeamRepository(session).ensure(team_id)

    async with database.session() as session:
        assert await session.scalar(select(func.count()).where(Team.id == team_id)) == 1


async def test_concurrent_first_requests_of_a_team_create_it_once(database: Database) -> None:
    team_id = f"team-{uuid.uuid4().hex}"
    requests = 5
    all_in_transaction = asyncio.Barrier(requests)

    async def first_request() -> None:
        async with database.session() as session:
            await session.connection()
            await all_in_transaction.wait()
            await TeamRepository(session).ensure(team_id)

    await asyncio.gather(*(first_request() for _ in range(requests)))

    async with database.session() as session:
        assert await session.scalar(select(func.count()).where(Team.id == team_id)) == 1


async def test_deleting_a_team_cascades(database: Database, team_id: str, other_team_id: str) -> None:
    async def populate(owner: str) -> None:
        async with database.session() as session:
            lead, _ = await LeadRepository(session).create(owner, {"email": "x@example.com"}, "ext-1")
            await TimelineRepository(session).append(
                owner,
                lead_id=lead.id,
                provider="hubspot",
                action="created",
                message="created",
                actor="user-1",
                request_id="req-1",
                duration_ms=5,
            )
            await CredentialRepository(session).put(owner, "hubspot", {"v": 1, "ct": "sealed"})
            await IntegrationRepository(session).upsert_status(owner, "hubspot", IntegrationStatus.CONNECTED)
            await OAuthStateRepository(session).create(
                owner,
                "hubspot",
                uuid.uuid4().hex * 2,
                actor="user-1",
                expires_at=datetime.now(UTC) + timedelta(minutes=10),
            )
            await SyncStateRepository(session).record_outcomes(
                owner, "hubspot", [StateChange(lead.id, "synced", "created", contact_id="c-1")]
            )
            job = await JobRepository(session).create(
                SyncJob(
                    team_id=owner,
                    provider="hubspot",
                    duplicate_policy="update",
                    dry_run=False,
                    force=False,
                    selection="all",
                    state="queued",
                    total=0,
                    actor="user-1",
                    request_id="req-1",
                )
            )
            await JobRepository(session).select_leads(job)
            await RateBudgetRepository(session).record_quotas(owner, "hubspot", [("daily", 1, 10, 86400)], at=utcnow())

    async def rows_owned_by(owner: str) -> dict[str, int]:
        async with database.session() as session:
            return {
                table.name: await session.scalar(
                    select(func.count()).select_from(table).where(table.c.team_id == owner)
                )
                or 0
                for table in Base.metadata.sorted_tables
                if "team_id" in table.c
            }

    await populate(team_id)
    await populate(other_team_id)

    async with database.session() as session:
        assert await TeamRepository(session).delete(team_id)
        assert not await TeamRepository(session).delete(f"team-{uuid.uuid4().hex}")

    expected = {
        "credentials": 1,
        "integrations": 1,
        "leads": 1,
        "oauth_states": 1,
        "timeline_events": 1,
        "lead_sync_states": 1,
        "sync_jobs": 1,
        "sync_job_results": 1,
        "rate_budgets": 1,
    }
    assert await rows_owned_by(team_id) == dict.fromkeys(expected, 0)
    assert await rows_owned_by(other_team_id) == expected


@pytest.mark.parametrize("zone", [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7))])
async def test_datetimes_come_back_timezone_aware_in_utc(database: Database, team_id: str, zone: timezone) -> None:
    synced_at = datetime(2024, 1, 15, 12, 30, 15, 123456, tzinfo=zone)
    async with database.session() as session:
        await IntegrationRepository(session).upsert_status(team_id, "hubspot", IntegrationStatus.CONNECTED)
        await IntegrationRepository(session).mark_synced(team_id, "hubspot", synced_at)

    # A new session, so the value comes from the database, not from the identity map.
    async with database.session() as session:
        integration = await IntegrationRepository(session).get(team_id, "hubspot")
        team = await session.get(Team, team_id)

    assert integration is not None
    assert team is not None
    assert integration.last_sync_at == synced_at
    assert integration.last_sync_at.tzinfo is UTC
    assert team.created_at.tzinfo is UTC


async def test_naive_datetimes_are_refused(database: Database, team_id: str) -> None:
    naive = datetime(2024, 1, 15, 12, 30)

    async def mark_synced_naively() -> None:
        async with database.session() as session:
            await IntegrationRepository(session).upsert_status(team_id, "hubspot", IntegrationStatus.CONNECTED)
            await IntegrationRepository(session).mark_synced(team_id, "hubspot", naive)

    with pytest.raises(StatementError, match="naive datetime"):
        await mark_synced_naively()
