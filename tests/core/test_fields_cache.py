"""The field cache: one CRM call per team and TTL, never one team's fields for another, and never the fields of an
account that was replaced on another replica."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmField, TokenSet
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import Integration, IntegrationRepository, IntegrationStatus, TeamRepository
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin


class PerAccountCrm(MemoryCrm):
    """Each connected account has a custom field of its own, named after its access token."""

    async def list_fields(self, tokens: TokenSet) -> list[CrmField]:
        return [*await super().list_fields(tokens), CrmField(name=f"x_{tokens.access_token}", label="X", type="string")]


async def connected(application: Application, team_id: str, access_token: str) -> Caller:
    async with application.database.session() as session:
        await TeamRepository(session).ensure(team_id)
        await IntegrationRepository(session).upsert_status(team_id, "memorycrm", IntegrationStatus.CONNECTED)
    tokens = TokenSet(access_token=access_token, refresh_token="r", expires_at=datetime.now(UTC) + timedelta(hours=1))
    await application.credentials.save(team_id, "memorycrm", tokens)
    return Caller(principal=Principal(subject="u", team_id=team_id, role=Role.MEMBER), request_id="r")


async def fields(application: Application, caller: Caller, crm: MemoryCrm) -> list[str]:
    """The custom fields ``application`` plans ``caller``'s syncs against, as a sync reads them."""
    async with application.database.session() as session:
        integration: Integration | None = await IntegrationRepository(session).get(caller.team_id, crm.name)
    return custom(await application.fields.fields_of(caller, crm, integration))


def custom(fields: Sequence[CrmField]) -> list[str]:
    return [field.name for field in fields if field.name.startswith("x_")]


async def test_each_team_sees_its_own_accounts_fields_and_each_is_fetched_once(
    application: Application, team_id: str
) -> None:
    crm = PerAccountCrm()
    first = await connected(application, team_id, "acct1")
    second = await connected(application, f"{team_id}-b", "acct2")
    for _ in range(3):
        assert await fields(application, first, crm) == ["x_acct1"]
        assert await fields(application, second, crm) == ["x_acct2"]
    assert crm.calls.count("list_fields") == 2


async def test_forgetting_a_team_fetches_its_fields_again(application: Application, team_id: str) -> None:
    crm = PerAccountCrm()
    caller = await connected(application, team_id, "acct1")
    await fields(application, caller, crm)
    application.fields.forget(team_id, "memorycrm")
    await fields(application, caller, crm)
    assert crm.calls.count("list_fields") == 2


async def test_an_account_reconnected_on_another_replica_is_not_served_from_this_replicas_cache(
    application: Application, settings: Settings, team_id: str
) -> None:
    crm = PerAccountCrm()
    caller = await connected(application, team_id, "acct1")
    host = PluginHost(load_entry_points=False)
    host.register(MemoryCrmPlugin(crm), name="memorycrm", distribution="crm-hub-memorycrm", version="0.0.1")
    other_replica = Application.from_settings(settings, plugins=host)
    try:
        assert await fields(other_replica, caller, crm) == ["x_acct1"]
        await connected(application, team_id, "acct2")  # this replica connects another account
        assert await fields(other_replica, caller, crm) == ["x_acct2"]
        assert await fields(other_replica, caller, crm) == ["x_acct2"]
        assert crm.calls.count("list_fields") == 2
    finally:
        await other_replica.aclose()
