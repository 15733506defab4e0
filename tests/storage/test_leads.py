"""Leads: idempotent on the product's external id, per team, even under concurrent creates."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from crm_hub.errors import NotFound
from crm_hub.storage import Database, Lead, LeadRepository


async def _create(
    database: Database, team_id: str, fields: dict[str, str], external_id: str | None = None
) -> tuple[Lead, bool]:
    async with database.session() as session:
        return await LeadRepository(session).create(team_id, fields, external_id)


async def _count_leads(database: Database, team_id: str) -> int:
    async with database.session() as session:
        count = await session.scalar(select(func.count()).select_from(Lead).where(Lead.team_id == team_id))
    return count or 0


async def test_created_lead_can_be_read_back_with_its_fields(database: Database, team_id: str) -> None:
    fields = {"email": "ada@example.com", "firstname": "Ada", "company": "Analytical Engines"}

    lead, created = await _create(database, team_id, fields, "crm-42")

    assert created
    assert len(lead.id) == 32
    async with database.session() as session:
        stored = await LeadRepository(session).get(team_id, lead.id)
    assert (stored.fields, stored.external_id, stored.team_id) == (fields, "crm-42", team_id)


async def test_lead_external_id_is_idempotent_per_team(database: Database, team_id: str, other_team_id: str) -> None:
    first, first_created = await _create(database, team_id, {"email": "a@example.com"}, "ext-1")
    again, again_created = await _create(database, team_id, {"email": "changed@example.com"}, "ext-1")
    others, others_created = await _create(database, other_team_id, {"email": "b@example.com"}, "ext-1")

    assert (first_created, again_created, others_created) == (True, False, True)
    assert again.id == first.id
    # The stored lead is returned as it is; deciding about differing fields is the caller's job.
    assert again.fields == {"email": "a@example.com"}
    assert others.id != first.id
    assert await _count_leads(database, team_id) == 1


async def test_leads_without_external_id_are_always_new(database: Database, team_id: str) -> None:
    one, one_created = await _create(database, team_id, {"email": "same@example.com"})
    two, two_created = await _create(database, team_id, {"email": "same@example.com"})

    assert (one_created, two_created) == (True, True)
    assert one.id != two.id
    assert await _count_leads(database, team_id) == 2


async def test_concurrent_creates_with_same_external_id_make_one_lead(database: Database, team_id: str) -> None:
    writers = 5
    all_in_transaction = asyncio.Barrier(writers)

    async def create(n: int) -> tuple[Lead, bool]:
        async with database.session() as session:
            await session.connection()
            # Every writer holds an open session before any inserts: the race is real, not sequential.
            await all_in_transaction.wait()
            return await LeadRepository(session).create(team_id, {"email": f"{n}@example.com"}, "ext-race")

    results = await asyncio.gather(*(create(n) for n in range(writers)))

    assert sorted(created for _, created in results) == [False] * (writers - 1) + [True]
    assert len({lead.id for lead, _ in results}) == 1
    assert await _count_leads(database, team_id) == 1


async def test_another_teams_lead_is_not_found(database: Database, team_id: str, other_team_id: str) -> None:
    lead, _ = await _create(database, other_team_id, {"email": "secret@example.com"})
    missing_id = "0" * 32

    async with database.session() as session:
        with pytest.raises(NotFound) as someone_elses:
            await LeadRepository(session).get(team_id, lead.id)
        with pytest.raises(NotFound) as missing:
            await LeadRepository(session).get(team_id, missing_id)

    # Word for word the same as for a lead that does not exist: nothing to learn about other teams.
    assert someone_elses.value.message == f"Lead {lead.id} not found"
    assert missing.value.message == f"Lead {missing_id} not found"
    assert someone_elses.value.reason == missing.value.reason == "NOT_FOUND"


async def test_external_id_lookup_is_scoped_to_the_team(database: Database, team_id: str, other_team_id: str) -> None:
    lead, _ = await _create(database, team_id, {"email": "a@example.com"}, "ext-scoped")

    async with database.session() as session:
        leads = LeadRepository(session)
        found = await leads.find_by_external_id(team_id, "ext-scoped")
        not_found = await leads.find_by_external_id(other_team_id, "ext-scoped")

    assert found is not None
    assert found.id == lead.id
    assert not_found is None
