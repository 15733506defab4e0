"""``crm-hub status --team T``: what an operator on the box sees of a team's integrations, on SQLite and PostgreSQL.

A real crm_hub (gRPC, the HubSpot provider and its fake) connects a team and syncs its leads; then the command,
run in-process against the same database with the installed HubSpot plugin, prints what GetStatus answers.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from crm_hub_hubspot.fake import FakeHubSpot
from google.protobuf import json_format

from crm_hub.service.cli import main
from crm_hub.v1 import fields_pb2, status_pb2
from tests.e2e.conftest import World, running
from tests.support.fresh_database import fresh_database_url

pytestmark = pytest.mark.usefixtures("restore_logging")

#: The account's limit crm_hub keeps to: 1,000 requests a day, a slot every 91 s (with room for a burst of 50),
#: so the slots the syncs take stay taken while the test runs (at 110 per 10 s they are free again at once).
RATE_LIMIT, RATE_WINDOW = 1000, 86400.0
CLIENT_SECRET = "status-test-client-secret"
MAPPING = {"email": "email", "name": "firstname"}
_OUR_VARIABLES = ("CRM_HUB_", "DATABASE_URL", "JWT_", "SECRET_VAULT_", "SLACK_WEBHOOK_URL", "HUBSPOT_", "SALESFORCE_")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> None:
    """The operator's box: the test database, the installed HubSpot plugin alone, set up like the service's."""
    for name in list(os.environ):
        if name.startswith(_OUR_VARIABLES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRM_HUB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CRM_HUB_PLUGINS", "hubspot")
    monkeypatch.setenv("HUBSPOT_CLIENT_ID", "status-test-client")
    monkeypatch.setenv("HUBSPOT_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("HUBSPOT_REDIRECT_URL", "https://crm-hub.invalid/oauth/hubspot/callback")
    monkeypatch.setenv("HUBSPOT_RATE_LIMIT", f"{RATE_LIMIT}/{RATE_WINDOW:g}s")


@pytest.fixture
async def hubspot(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    fake = FakeHubSpot(rate_limit=RATE_LIMIT, rate_limit_interval=RATE_WINDOW)
    async with running(fake.provider(timeout=5.0), fake, database_url, tmp_path) as world:
        yield world


async def status(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``crm-hub status ...``; main() runs its own event loop, so in a thread of its own."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["status", *args])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def table(out: str, provider: str) -> dict[str, str]:
    """The rows of ``provider``'s table, by label; a wrapped value joined again."""
    lines = out.splitlines()
    start = next(n for n, line in enumerate(lines) if line.split()[:1] == [provider])
    rows: dict[str, str] = {}
    label = ""
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        if key := line[:16].strip():
            label = key
            rows[label] = line[16:].strip()
        else:
            rows[label] += " " + line.strip()
    return rows


async def connected_with_mapping(world: World) -> None:
    await world.connect()
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping=MAPPING), metadata=world.auth()
    )


async def sync(world: World, lead_id: str) -> None:
    await world.sync.SyncLead(world.sync_request(lead_id), metadata=world.auth("member"))


async def get_status(world: World) -> status_pb2.IntegrationStatus:
    answer = await world.status.GetStatus(status_pb2.GetStatusRequest(), metadata=world.auth("member"))
    return answer.integrations["hubspot"]


async def three_synced_one_failed_one_never(world: World) -> None:
    """3 leads synced, 1 whose sync failed (HubSpot down), 1 never synced; and one sync that found no change."""
    await connected_with_mapping(world)
    synced = [await world.lead(email=f"ok{n}@example.com", name=f"Ok{n}") for n in range(3)]
    for lead_id in synced:
        await sync(world, lead_id)
    await sync(world, synced[0])  # unchanged: no CRM call, a sync that did not fail
    failing = await world.lead(email="down@example.com", name="Down")
    world.fake.fail_next(10, status=502, path="/crm/v3/objects/contacts")
    with pytest.raises(grpc.aio.AioRpcError):
        await sync(world, failing)
    await world.lead(email="later@example.com", name="Later")


async def test_status_prints_the_connection_lead_counts_success_rate_and_rate_budget_of_a_team(
    capsys: pytest.CaptureFixture[str], hubspot: World
) -> None:
    await three_synced_one_failed_one_never(hubspot)
    remaining = (await get_status(hubspot)).budgets[0].remaining

    result = await status(capsys, "--team", hubspot.team)

    assert result.code == 0
    assert result.out.startswith(f"Integrations of team '{hubspot.team}' at ")
    rows = table(result.out, "hubspot")
    assert rows["connection"] == "CONNECTED"
    assert rows["last sync"].endswith(" UTC (just now)") or rows["last sync"].endswith(" s ago)")
    assert rows["leads"] == "3 synced, 0 pending, 1 failed, 1 never synced"
    assert rows["success rate"] == "75.0% (3 of the 4 leads tried)"
    assert rows["syncs run"] == "5, 4 succeeded (80.0%)"
    assert remaining < RATE_LIMIT, "the syncs took slots of the budget"
    assert rows["rate budget"].startswith(f"86400s: {remaining} of 1000 requests left per 24 h")
    assert "setup" not in rows
    printed = result.out + result.err
    secrets = [CLIENT_SECRET, *hubspot.fake.access_tokens, *hubspot.fake.refresh_tokens]
    assert [secret for secret in secrets if secret in printed] == []


async def test_status_json_is_the_rest_answer_of_get_status_with_the_team(
    capsys: pytest.CaptureFixture[str], hubspot: World
) -> None:
    await three_synced_one_failed_one_never(hubspot)
    answer = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    expected: dict[str, Any] = json_format.MessageToDict(answer, always_print_fields_with_no_presence=True)

    result = await status(capsys, "--team", hubspot.team, "--json")

    assert result.code == 0
    printed = json.loads(result.out)
    assert (printed["team"], printed["success"], sorted(printed["integrations"])) == (hubspot.team, True, ["hubspot"])
    hub = printed["integrations"]["hubspot"]
    # The service under test registers its provider in-process, without a plugin version: all else is the same.
    assert hub.pop("version") == "0.1.0"
    expected["integrations"]["hubspot"].pop("version")
    assert hub == expected["integrations"]["hubspot"]
    assert (hub["leadsSynced"], hub["leadsPending"], hub["leadsFailed"], hub["leadsUnsynced"]) == (3, 0, 1, 1)
    assert (hub["syncsTotal"], hub["syncsSucceeded"], hub["successRate"]) == (5, 4, 0.8)


async def test_status_shows_expired_credentials_and_that_a_team_admin_must_reconnect(
    capsys: pytest.CaptureFixture[str], hubspot: World
) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="gus@example.com", name="Gus")
    hubspot.fake.refresh_tokens.clear()  # HubSpot revoked the refresh token
    hubspot.fake.expire_tokens()
    with pytest.raises(grpc.aio.AioRpcError):
        await sync(hubspot, lead_id)

    result = await status(capsys, "--team", hubspot.team)

    assert result.code == 0
    rows = table(result.out, "hubspot")
    assert rows["connection"] == "ERROR: Credentials expired [CREDENTIALS_EXPIRED]; a team admin must reconnect it"
    assert rows["leads"] == "0 synced, 0 pending, 1 failed, 0 never synced"
    assert rows["success rate"] == "0.0% (0 of the 1 leads tried)"


async def test_status_of_a_team_that_synced_nothing_yet_shows_no_rate_and_what_to_set_on_this_box(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, hubspot: World
) -> None:
    await hubspot.connect()
    monkeypatch.delenv("HUBSPOT_CLIENT_ID")
    monkeypatch.delenv("HUBSPOT_REDIRECT_URL")

    result = await status(capsys, "--team", hubspot.team)

    assert result.code == 0
    rows = table(result.out, "hubspot")
    assert rows["connection"] == "CONNECTED"
    assert rows["setup"] == (
        "HubSpot is not configured: HUBSPOT_CLIENT_ID, HUBSPOT_REDIRECT_URL are not set. "
        "Set them, or leave the plugin out with CRM_HUB_PLUGINS."
    )
    assert (rows["last sync"], rows["success rate"], rows["syncs run"]) == ("never", "-", "0")
    assert rows["rate budget"] == "86400s: 1000 of 1000 requests left per 24 h"


async def test_status_of_a_team_crm_hub_has_never_seen_says_it_has_no_integration_and_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUBSPOT_CLIENT_SECRET")
    team = f"status-nobody-{uuid.uuid4().hex[:10]}"

    result = await status(capsys, "--team", team)
    as_json = await status(capsys, "--team", team, "--json")

    assert result.code == 0
    assert result.out.splitlines()[:2] == [
        f"Team '{team}' has no CRM integration: none is connected, and none has synced a lead.",
        "crm_hub holds no lead of this team either: check the id (the team_id claim of its tokens).",
    ]
    (hubspot_row,) = [line for line in result.out.splitlines() if line.startswith("  hubspot ")]
    assert "HUBSPOT_CLIENT_SECRET is not set" in hubspot_row
    assert as_json.code == 0
    hub = json.loads(as_json.out)["integrations"]["hubspot"]
    assert (hub["connected"], hub["state"], hub["leadsUnsynced"], hub["syncsTotal"]) == (False, "DISCONNECTED", 0, 0)


async def test_status_of_a_team_with_leads_but_no_integration_counts_its_leads(
    capsys: pytest.CaptureFixture[str], hubspot: World
) -> None:
    for n in range(2):
        await hubspot.lead(email=f"waiting{n}@example.com")

    result = await status(capsys, "--team", hubspot.team)

    assert result.code == 0
    assert result.out.splitlines()[1] == "It has 2 lead(s), none synced yet."
    (hubspot_row,) = [line for line in result.out.splitlines() if line.startswith("  hubspot ")]
    assert hubspot_row.split() == ["hubspot", "ready", "to", "connect"]


async def test_status_on_a_database_never_migrated_says_to_run_migrate(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path
) -> None:
    async with fresh_database_url(database_url, tmp_path) as empty:
        monkeypatch.setenv("DATABASE_URL", empty)

        result = await status(capsys, "--team", "acme")

    assert (result.code, result.out) == (1, "")
    assert "crm-hub: cannot read the database" in result.err
    assert "has `crm-hub migrate` run?" in result.err


def test_status_with_a_blank_team_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["status", "--team", " "])

    assert caught.value.code == 2
    assert "a team id is required" in capsys.readouterr().err


async def test_status_names_slack_when_its_webhook_is_set_and_never_prints_the_webhook(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    webhook = "https://hooks.slack.invalid/services/T0/B0/STATUS-HOOK-SECRET"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", webhook)

    result = await status(capsys, "--team", f"status-slack-{uuid.uuid4().hex[:10]}")

    assert result.code == 0
    assert result.out.splitlines()[-1] == "Notifications go to: slack"
    assert "STATUS-HOOK-SECRET" not in result.out + result.err


async def test_status_with_no_crm_provider_installed_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_HUB_PLUGINS", "")

    result = await status(capsys, "--team", "acme")

    assert (result.code, result.out) == (
        0,
        "No CRM provider is installed: see `crm-hub plugins` and CRM_HUB_PLUGINS.\n",
    )
