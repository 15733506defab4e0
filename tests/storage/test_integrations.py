"""Integrations: one per team and CRM kind, with status, settings (the field mapping) and sync times."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crm_hub.errors import InvalidArgument, NotFound
from crm_hub.storage import Database, Integration, IntegrationRepository, IntegrationStatus

MAPPING = {"mapping": {"email": "email", "firstname": "firstname", "company": "company"}}
T0 = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)


async def _get(database: Database, team_id: str, kind: str) -> Integration | None:
    async with database.session() as session:
        return await IntegrationRepository(session).get(team_id, kind)


async def test_first_status_creates_the_integration_with_empty_settings(database: Database, team_id: str) -> None:
    async with database.session() as session:
        await IntegrationRepository(session).upsert_status(team_id, "hubspot", IntegrationStatus.CONNECTED, at=T0)

    integration = await _get(database, team_id, "hubspot")

    assert integration is not None
    assert (integration.status, integration.error, integration.last_seen_at) == ("CONNECTED", None, T0)
    assert (integration.settings, integration.auth, integration.last_sync_at) == ({}, {}, None)


async def test_status_changes_keep_settings_and_sync_time(database: Database, team_id: str) -> None:
    async with database.session() as session:
        integrations = IntegrationRepository(session)
        await integrations.upsert_status(team_id, "hubspot", IntegrationStatus.CONNECTED)
        await integrations.save_settings(team_id, "hubspot", MAPPING)
        await integrations.mark_synced(team_id, "hubspot", T0)
    async with database.session() as session:
        integrations = IntegrationRepository(session)
        await integrations.upsert_status(team_id, "hubspot", "ERROR", "Credentials expired")

    integration = await _get(database, team_id, "hubspot")

    assert integration is not None
    assert (integration.status, integration.error) == (IntegrationStatus.ERROR, "Credentials expired")
    assert (integration.settings, integration.last_sync_at) == (MAPPING, T0)

    async with database.session() as session:
        await IntegrationRepository(session).upsert_status(team_id, "hubspot", IntegrationStatus.CONNECTED)
    reconnected = await _get(database, team_id, "hubspot")
    assert reconnected is not None
    assert (reconnected.status, reconnected.error, reconnected.settings) == ("CONNECTED", None, MAPPING)


async def test_unknown_status_is_invalid(database: Database, team_id: str) -> None:
    async with database.session() as session:
        with pytest.raises(InvalidArgument, match="CONNECTING"):
            await IntegrationRepository(session).upsert_status(team_id, "hubspot", "CONNECTING")


async def test_settings_and_sync_time_need_a_connected_integration(database: Database, team_id: str) -> None:
    async with database.session() as session:
        integrations = IntegrationRepository(session)
        with pytest.raises(NotFound, match="Integration salesforce not found"):
            await integrations.save_settings(team_id, "salesforce", MAPPING)
        with pytest.raises(NotFound, match="Integration salesforce not found"):
            await integrations.mark_synced(team_id, "salesforce", T0)


async def test_teams_see_only_their_own_integrations(database: Database, team_id: str, other_team_id: str) -> None:
    async with database.session() as session:
        integrations = IntegrationRepository(session)
        await integrations.upsert_status(team_id, "salesforce", IntegrationStatus.DISCONNECTED)
        await integrations.upsert_status(team_id, "hubspot", IntegrationStatus.CONNECTED)
        await integrations.upsert_status(other_team_id, "hubspot", IntegrationStatus.ERROR, "nope")
        await integrations.save_settings(other_team_id, "hubspot", MAPPING)

    async with database.session() as session:
        integrations = IntegrationRepository(session)
        mine = await integrations.list(team_id)
        hubspot = await integrations.get(team_id, "hubspot")

    assert [(row.provider, row.status) for row in mine] == [("hubspot", "CONNECTED"), ("salesforce", "DISCONNECTED")]
    assert hubspot is not None
    assert hubspot.settings == {}
