"""Teams for storage tests: each test gets fresh team ids, so tests can share one database per backend."""

from __future__ import annotations

import uuid

import pytest

from crm_hub.storage import Database, TeamRepository


async def _new_team(database: Database) -> str:
    team_id = f"team-{uuid.uuid4().hex}"
    async with database.session() as session:
        await TeamRepository(session).ensure(team_id)
    return team_id


@pytest.fixture
async def team_id(database: Database) -> str:
    """An existing team that no other test uses."""
    return await _new_team(database)


@pytest.fixture
async def other_team_id(database: Database) -> str:
    """A second existing team, to check that one team never sees another's rows."""
    return await _new_team(database)
