"""HubSpot end to end over gRPC, on SQLite and PostgreSQL: connect, fields, mapping, dry run, each duplicate
policy, status and timeline — and the ways it goes wrong."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import grpc
import httpx
import pytest
from crm_hub_hubspot.fake import FakeHubSpot
from sqlalchemy import text

from crm_hub.testing import follow_consent
from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2, status_pb2
from tests.e2e.conftest import World, running
from tests.support.grpc_errors import details_of

MAPPING = {"email": "email", "name": "firstname", "company": "company", "employees": "numemployees"}


async def connected_with_mapping(world: World) -> None:
    await world.connect()
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping=MAPPING), metadata=world.auth()
    )


async def test_the_whole_flow_connect_fields_mapping_dry_run_sync_status_timeline(hubspot: World) -> None:
    await hubspot.connect()
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert status.integrations["hubspot"].connected is True
    assert status.integrations["hubspot"].state == "CONNECTED"

    listed = await hubspot.fields.ListFields(
        fields_pb2.ListFieldsRequest(kind="hubspot"), metadata=hubspot.auth("member")
    )
    by_name = {field.name: field for field in listed.fields}
    assert (by_name["email"].type, by_name["email"].required, by_name["email"].writable) == ("email", True, True)
    assert by_name["numemployees"].type == "number"
    assert by_name["lifecyclestage"].type == "select"
    assert [o.value for o in by_name["lifecyclestage"].options][:2] == ["subscriber", "lead"]

    saved = await hubspot.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping=MAPPING), metadata=hubspot.auth("admin")
    )
    assert dict(saved.mapping) == MAPPING
    got = await hubspot.fields.GetMapping(fields_pb2.GetMappingRequest(kind="hubspot"), metadata=hubspot.auth("member"))
    assert dict(got.mapping) == MAPPING

    lead_id = await hubspot.lead(email="ada@example.com", name="Ada", company="Acme Corp", employees="12")
    preview = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, dry_run=True), metadata=hubspot.auth("member"))
    assert (preview.success, preview.dry_run, preview.action, preview.contact_id) == (True, True, "would_create", "")
    assert dict(preview.payload) == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "company": "Acme Corp",
        "numemployees": 12,
    }
    assert hubspot.fake.write_calls() == []

    synced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    contact = hubspot.fake.contact_by_email("ada@example.com")
    assert contact is not None
    assert (synced.action, synced.contact_id, synced.message) == (
        "created",
        contact.id,
        "Contact created successfully.",
    )
    assert contact.properties["numemployees"] == "12"

    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    hub = status.integrations["hubspot"]
    assert hub.HasField("last_sync")
    assert (hub.syncs_total, hub.syncs_succeeded, hub.success_rate) == (1, 1, 1.0)

    timeline = await hubspot.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=hubspot.auth("member")
    )
    assert [(e.action, e.dry_run, e.contact_id) for e in timeline.events] == [
        ("created", False, contact.id),
        ("would_create", True, ""),
    ]
    newest = timeline.events[0]
    assert (newest.provider, newest.actor, newest.error_reason) == ("hubspot", f"user-of-{hubspot.team}", "")
    assert newest.request_id
    assert newest.duration_ms >= 0


async def test_each_duplicate_policy_against_an_existing_contact(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    existing = hubspot.fake.add_contact({"email": "bo@example.com", "firstname": "Old", "company": "Old Co"})
    lead_id = await hubspot.lead(email="BO@example.com", name="Bo", company="New Co")
    auth = hubspot.auth("member")

    skipped = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "skip"), metadata=auth)
    assert (skipped.action, skipped.contact_id) == ("skipped", existing.id)
    assert existing.properties["firstname"] == "Old"

    updated = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "update"), metadata=auth)
    assert (updated.action, updated.contact_id) == ("updated", existing.id)
    assert (existing.properties["firstname"], existing.properties["company"]) == ("Bo", "New Co")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "create_new"), metadata=auth)
    error = details_of(refused.value)
    assert error.code is grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "DUPLICATE_CONTACT"
    assert error.metadata["contact_id"] == existing.id
    assert existing.id in error.message
    assert len(hubspot.fake.contacts) == 1

    previews = {
        policy: await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, policy, dry_run=True), metadata=auth)
        for policy in ("skip", "update", "create_new")
    }
    assert {policy: (p.action, p.contact_id) for policy, p in previews.items()} == {
        "skip": ("would_skip", existing.id),
        "update": ("would_update", existing.id),
        "create_new": ("would_conflict", existing.id),
    }


async def test_calls_to_hubspot_per_sync_for_each_policy(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    hubspot.fake.add_contact({"email": "known@example.com"})
    auth = hubspot.auth("member")
    known = await hubspot.lead(email="known@example.com", name="Kim")
    await hubspot.sync.SyncLead(
        hubspot.sync_request(known, "skip", dry_run=True), metadata=auth
    )  # warms the field cache

    async def calls_for(lead_id: str, policy: str, *, dry_run: bool = False) -> list[str]:
        before = len(hubspot.fake.calls)
        with contextlib.suppress(grpc.aio.AioRpcError):  # refused or not, what counts is what was sent
            await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, policy, dry_run=dry_run), metadata=auth)
        return [
            call.path.rsplit("/", 2)[-2] + "/" + call.path.rsplit("/", 1)[-1] for call in hubspot.fake.calls[before:]
        ]

    assert await calls_for(known, "skip") == ["batch/read"]
    assert await calls_for(known, "update") == ["batch/upsert"]
    assert await calls_for(await hubspot.lead(email="new1@example.com"), "update") == ["batch/upsert"]
    assert await calls_for(known, "update") == [], "unchanged since the last sync: nothing to send"
    assert await calls_for(known, "update", dry_run=True) == []
    # create_new looks the email up first: a lost answer can then be told apart from a contact that existed.
    assert await calls_for(await hubspot.lead(email="new2@example.com"), "create_new") == ["batch/read", "batch/create"]
    assert await calls_for(known, "create_new") == ["batch/read"], "HubSpot would refuse it: nothing is sent"
    assert await calls_for(await hubspot.lead(email="new3@example.com"), "skip") == ["batch/read", "batch/create"]
    assert await calls_for(await hubspot.lead(email="new4@example.com"), "update", dry_run=True) == ["batch/read"]
    assert hubspot.fake.count("/crm/v3/properties") == 1, "fields are cached, not fetched per sync"


async def test_an_expired_token_is_refreshed_mid_flow(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="cy@example.com", name="Cy")
    hubspot.fake.expire_tokens()
    synced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert synced.action == "created"
    refreshes = [c for c in hubspot.fake.calls_to("/oauth/v1/token") if c.body.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 1


async def test_a_5xx_from_the_token_endpoint_during_a_refresh_is_retried(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="flaky-refresh@example.com", name="Flo")
    hubspot.fake.expire_tokens()
    hubspot.fake.fail_next(2, status=500, path="/oauth/v1/token")

    synced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))

    assert synced.action == "created"
    refreshes = [c for c in hubspot.fake.calls_to("/oauth/v1/token") if c.body.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 3  # two 500s, then the one that worked
    assert len(hubspot.waits) == 2  # with backoff between them
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert status.integrations["hubspot"].state == "CONNECTED"


async def test_fifty_concurrent_syncs_with_an_expired_token_cause_exactly_one_refresh(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_ids = [await hubspot.lead(email=f"many{n}@example.com", name=f"N{n}") for n in range(50)]
    hubspot.fake.expire_tokens()
    results = await asyncio.gather(
        *(hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member")) for lead_id in lead_ids)
    )
    assert {result.action for result in results} == {"created"}
    assert len(hubspot.fake.contacts) == 50
    refreshes = [c for c in hubspot.fake.calls_to("/oauth/v1/token") if c.body.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 1


async def test_a_burst_of_429s_is_recovered_without_losing_the_sync(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="dee@example.com", name="Dee")
    hubspot.fake.fail_next(3, status=429, retry_after=2, path="/crm/v3/objects/contacts/batch/upsert")
    synced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert synced.action == "created"
    assert hubspot.fake.contact_by_email("dee@example.com") is not None
    assert hubspot.waits == [2.0, 2.0, 2.0], "Retry-After was honoured"
    assert hubspot.fake.count("/crm/v3/objects/contacts/batch/upsert") == 4


async def test_hubspot_down_for_good_fails_the_sync_as_unavailable_and_is_audited(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="eve@example.com", name="Eve")
    hubspot.fake.fail_next(10, status=502, path="/crm/v3/objects/contacts")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert details_of(failed.value).code is grpc.StatusCode.UNAVAILABLE
    assert len(hubspot.waits) == 4, "five tries in all, then it gives up"
    timeline = await hubspot.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=hubspot.auth("member")
    )
    assert [(e.action, e.error_reason) for e in timeline.events] == [("failed", "PROVIDER_UNAVAILABLE")]
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert (status.integrations["hubspot"].syncs_total, status.integrations["hubspot"].success_rate) == (1, 0.0)


async def test_an_invalid_mapping_is_rejected_with_field_details_and_nothing_is_saved(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.fields.SaveMapping(
            fields_pb2.SaveMappingRequest(
                kind="hubspot",
                mapping={
                    "email": "email",
                    "title": "jobtitle_nope",
                    "id": "hs_object_id",
                    "nick": "firstname",
                    "name": "firstname",
                },
            ),
            metadata=hubspot.auth("admin"),
        )
    error = details_of(refused.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "MAPPING_INVALID"
    assert set(error.field_violations) == {"mapping[title]", "mapping[id]", "mapping[nick]"}
    assert "read-only" in error.field_violations["mapping[id]"]
    got = await hubspot.fields.GetMapping(fields_pb2.GetMappingRequest(kind="hubspot"), metadata=hubspot.auth("member"))
    assert dict(got.mapping) == MAPPING


async def test_an_invalid_lead_value_is_refused_before_any_write(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="fay@example.com", name="Fay", employees="a dozen")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    error = details_of(refused.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "FIELD_VALUE_INVALID"
    assert "numemployees" in error.field_violations["fields[employees]"]
    assert hubspot.fake.write_calls() == []


async def test_a_replayed_state_or_another_teams_state_is_rejected(hubspot: World) -> None:
    auth = hubspot.auth("admin")
    start = await hubspot.integrations.StartOAuth(integrations_pb2.StartOAuthRequest(kind="hubspot"), metadata=auth)
    redirect = await follow_consent(start.auth_url, transport=httpx.ASGITransport(hubspot.fake.app))
    callback = integrations_pb2.CompleteOAuthRequest(kind="hubspot", code=redirect["code"], state=redirect["state"])

    with pytest.raises(grpc.aio.AioRpcError) as other_team:
        await hubspot.integrations.CompleteOAuth(callback, metadata=hubspot.auth("admin", team=f"{hubspot.team}-x"))
    assert details_of(other_team.value).reason == "OAUTH_STATE_INVALID"

    done = await hubspot.integrations.CompleteOAuth(callback, metadata=auth)
    assert done.success is True
    with pytest.raises(grpc.aio.AioRpcError) as replayed:
        await hubspot.integrations.CompleteOAuth(callback, metadata=auth)
    error = details_of(replayed.value)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "OAUTH_STATE_INVALID"
    assert set(error.field_violations) == {"state"}

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await hubspot.integrations.CompleteOAuth(
            integrations_pb2.CompleteOAuthRequest(kind="hubspot", code="x"), metadata=auth
        )
    assert details_of(missing.value).field_violations.keys() == {"state"}


async def test_a_refused_refresh_marks_the_integration_expired_until_reconnected(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="gus@example.com", name="Gus")
    hubspot.fake.refresh_tokens.clear()  # HubSpot revoked the refresh token
    hubspot.fake.expire_tokens()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    error = details_of(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CREDENTIALS_EXPIRED")
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    hub = status.integrations["hubspot"]
    assert (hub.connected, hub.state, hub.error, hub.reconnect_required) == (
        False,
        "ERROR",
        "Credentials expired",
        True,
    )

    await hubspot.connect()
    again = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert again.action == "created"
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert (status.integrations["hubspot"].connected, status.integrations["hubspot"].HasField("error")) == (True, False)


async def test_disconnect_revokes_forgets_and_shows_disconnected(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    done = await hubspot.integrations.Disconnect(
        integrations_pb2.DisconnectRequest(kind="hubspot"), metadata=hubspot.auth("admin")
    )
    assert (done.success, done.message) == (True, "HubSpot disconnected.")
    assert hubspot.fake.refresh_tokens == {}, "the refresh token was revoked at HubSpot"
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert (status.integrations["hubspot"].connected, status.integrations["hubspot"].state) == (False, "DISCONNECTED")
    lead_id = await hubspot.lead(email="hal@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert details_of(refused.value).reason == "PROVIDER_NOT_CONNECTED"


async def test_no_plaintext_token_anywhere_in_the_database(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="ivy@example.com", name="Ivy")
    hubspot.fake.expire_tokens()
    await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    secrets = [*hubspot.fake.access_tokens, *hubspot.fake.refresh_tokens, hubspot.fake.client_secret]
    assert len(secrets) >= 3
    dump = []
    async with hubspot.application.database.session() as session:
        for table in ("teams", "credentials", "integrations", "leads", "timeline_events", "oauth_states"):
            rows = (await session.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - fixed table names
            dump.append(json.dumps([list(row) for row in rows], default=str))
    everything = "\n".join(dump)
    assert hubspot.team in everything
    for secret in secrets:
        assert secret not in everything


async def test_a_failed_sync_is_posted_to_slack_without_secrets(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    lead_id = await hubspot.lead(email="jo@example.com", name="Jo", employees="lots")
    with pytest.raises(grpc.aio.AioRpcError):
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    await hubspot.application.notifications.drain()
    [message] = hubspot.slack
    assert "Lead sync failed" in message
    assert lead_id in message
    assert "FIELD_VALUE_INVALID" in message
    for secret in [*hubspot.fake.access_tokens, *hubspot.fake.refresh_tokens, "HOOKSECRET"]:
        assert secret not in message


async def test_status_lists_slack_next_to_the_crms_when_its_webhook_is_set(hubspot: World) -> None:
    await connected_with_mapping(hubspot)
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert status.integrations["slack"].connected is True


async def test_many_concurrent_syncs_wait_for_the_accounts_budget_and_hubspot_refuses_none(
    database_url: str, tmp_path: Path
) -> None:
    fake = FakeHubSpot(rate_limit=10, rate_limit_interval=1.0)  # a small account: 10 requests per second
    async with running(fake.provider(timeout=5.0), fake, database_url, tmp_path) as world:
        await connected_with_mapping(world)
        lead_ids = [await world.lead(email=f"budget{n}@example.com", name=f"B{n}") for n in range(40)]
        started = asyncio.get_running_loop().time()

        results = await asyncio.gather(
            *(world.sync.SyncLead(world.sync_request(lead_id), metadata=world.auth("member")) for lead_id in lead_ids)
        )
        took = asyncio.get_running_loop().time() - started

    assert {result.action for result in results} == {"created"}
    assert [call for call in fake.calls if call.status == 429] == [], "every request waited for its slot instead"
    assert took >= (40 - 10) / 10 * 0.9, "40 requests at 10 a second take about three seconds"
