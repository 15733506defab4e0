"""The field cache: one CRM call per team and TTL, never one team's fields for another."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from crm_hub.application import Application
from crm_hub.auth import Principal, Role
from crm_hub.core.caller import Caller
from crm_hub.providers import CrmField, TokenSet
from crm_hub.storage import IntegrationRepository, IntegrationStatus, TeamRepository
from tests.support.memory_crm import MemoryCrm


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


def custom(fields: Sequence[CrmField]) -> list[str]:
    return [field.name for field in fields if field.name.startswith("x_")]


async def test_each_team_sees_its_own_accounts_fields_and_each_is_fetched_once(
    application: Application, team_id: str
) -> None:
    crm = PerAccountCrm()
    first = await connected(application, team_id, "acct1")
    second = await connected(application, f"{team_id}-b", "acct2")
    for _ in range(3):
        assert custom(await application.fields.fields_of(first, crm)) == ["x_acct1"]
        assert custom(await application.fields.fields_of(second, crm)) == ["x_acct2"]
    assert crm.calls.count("list_fields") == 2


async def test_forgetting_a_team_fetches_its_fields_again(application: Application, team_id: str) -> None:
    crm = PerAccountCrm()
    caller = await connected(application, team_id, "acct1")
    await application.fields.fields_of(caller, crm)
    application.fields.forget(team_id, "memorycrm")
    await application.fields.fields_of(caller, crm)
    assert crm.calls.count("list_fields") == 2
