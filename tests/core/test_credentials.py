"""Credentials: encrypted at rest, refreshed before expiry and on a 401, one refresh at a time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.errors import RefreshRejected
from crm_hub.plugins import PluginHost
from crm_hub.providers import TokenSet
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import IntegrationRepository, IntegrationStatus, TeamRepository
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin


def caller_for(team_id: str) -> Caller:
    return Caller(principal=Principal(subject="ada", team_id=team_id, role=Role.ADMIN), request_id="req-1")


async def connect(application: Application, team_id: str, tokens: TokenSet) -> None:
    async with application.database.session() as session:
        await TeamRepository(session).ensure(team_id)
        await IntegrationRepository(session).upsert_status(team_id, "memorycrm", IntegrationStatus.CONNECTED)
    await application.credentials.save(team_id, "memorycrm", tokens)


EXPIRED = TokenSet(
    access_token="access-old-secret",
    refresh_token="refresh-old-secret",
    expires_at=datetime.now(UTC) - timedelta(minutes=1),
)


async def test_fifty_concurrent_calls_with_an_expired_token_cause_exactly_one_refresh(
    application: Application, memory_crm: MemoryCrm, team_id: str
) -> None:
    await connect(application, team_id, EXPIRED)
    caller = caller_for(team_id)
    sessions = await asyncio.gather(*(application.credentials.session_for(caller, memory_crm) for _ in range(50)))
    assert memory_crm.calls.count("refresh") == 1
    assert {tokens.access_token for tokens in sessions} == {sessions[0].access_token}
    assert sessions[0].access_token != EXPIRED.access_token
    # The CRM sent no new refresh token: the old one is kept.
    assert (await application.credentials.load(team_id, "memorycrm")).refresh_token == "refresh-old-secret"


async def test_a_token_expired_mid_flow_is_refreshed_and_the_call_retried_once(
    application: Application, memory_crm: MemoryCrm, team_id: str
) -> None:
    fresh = TokenSet(access_token="access-live", refresh_token="r", expires_at=datetime.now(UTC) + timedelta(hours=1))
    await connect(application, team_id, fresh)
    memory_crm.expire_next_calls = 1
    fields = await application.credentials.call(caller_for(team_id), memory_crm, memory_crm.list_fields)
    assert [field.name for field in fields] == ["email", "firstname", "score"]
    assert memory_crm.calls == ["list_fields", "refresh", "list_fields"]


async def test_a_rejected_refresh_marks_the_integration_expired_and_asks_for_a_reconnect(
    application: Application, memory_crm: MemoryCrm, team_id: str
) -> None:
    await connect(application, team_id, EXPIRED)
    memory_crm.reject_refresh = True
    caller = caller_for(team_id)
    with pytest.raises(RefreshRejected, match="reconnect") as caught:
        await application.credentials.session_for(caller, memory_crm)
    assert caught.value.reason == "CREDENTIALS_EXPIRED"
    report = await application.status.report(caller)
    assert report["memorycrm"].connected is False
    assert report["memorycrm"].error == "Credentials expired"
    assert report["memorycrm"].reconnect_required is True


async def test_no_plaintext_token_is_stored_in_the_database(application: Application, team_id: str) -> None:
    await connect(application, team_id, EXPIRED)
    async with application.database.session() as session:
        rows = (
            await session.execute(text("SELECT encrypted FROM credentials WHERE team_id = :t"), {"t": team_id})
        ).all()
    stored = json.dumps([row[0] for row in rows], default=str)
    assert rows
    assert "access-old-secret" not in stored
    assert "refresh-old-secret" not in stored


async def test_two_replicas_sharing_the_database_refresh_an_expired_token_once(
    application: Application, memory_crm: MemoryCrm, settings: Settings, team_id: str
) -> None:
    # A second replica: its own Application, so its own process-level locks; only the database is shared.
    host = PluginHost(load_entry_points=False, load_default_plugins=False)
    host.register(MemoryCrmPlugin(memory_crm), name="memorycrm")
    replica = Application.from_settings(settings, plugins=host)
    try:
        await connect(application, team_id, EXPIRED)
        caller = caller_for(team_id)
        sessions = await asyncio.gather(
            *(app.credentials.session_for(caller, memory_crm) for _ in range(10) for app in (application, replica))
        )
    finally:
        await replica.aclose()
    assert memory_crm.calls.count("refresh") == 1
    assert len({tokens.access_token for tokens in sessions}) == 1


@pytest.mark.parametrize(("expires_in", "refreshed"), [(timedelta(minutes=1), True), (timedelta(minutes=10), False)])
async def test_tokens_are_refreshed_two_minutes_before_they_expire(
    application: Application, memory_crm: MemoryCrm, team_id: str, expires_in: timedelta, refreshed: bool
) -> None:
    soon = TokenSet(access_token="access-soon", refresh_token="r", expires_at=datetime.now(UTC) + expires_in)
    await connect(application, team_id, soon)
    tokens = await application.credentials.session_for(caller_for(team_id), memory_crm)
    assert memory_crm.calls.count("refresh") == (1 if refreshed else 0)
    assert (tokens.access_token != "access-soon") is refreshed
