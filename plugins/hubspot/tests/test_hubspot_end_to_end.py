"""The whole service (gRPC, core, storage) with the HubSpot provider and the fake: connect, map, sync."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import pytest
from crm_hub.testing import CrmHubServer, RunningHub, follow_consent
from crm_hub.v1 import (
    fields_pb2,
    fields_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    leads_pb2,
    leads_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)

from crm_hub_hubspot.fake import FakeHubSpot

TEAM = "team-hubspot-e2e"


@pytest.fixture
async def hub(crm_hub_server: CrmHubServer) -> AsyncIterator[tuple[RunningHub, FakeHubSpot]]:
    """The service with HubSpot connected for TEAM through the real OAuth flow (consent on the fake)."""
    fake = FakeHubSpot()
    async with crm_hub_server(providers=[fake.provider(timeout=5.0)]) as running:
        integrations = integrations_pb2_grpc.IntegrationsServiceStub(running.channel)
        auth = running.auth(TEAM, "admin")
        start = await integrations.StartOAuth(integrations_pb2.StartOAuthRequest(kind="hubspot"), metadata=auth)
        redirect = await follow_consent(start.auth_url, transport=httpx.ASGITransport(fake.app))
        assert redirect["state"] == start.state
        done = await integrations.CompleteOAuth(
            integrations_pb2.CompleteOAuthRequest(kind="hubspot", code=redirect["code"], state=redirect["state"]),
            metadata=auth,
        )
        assert done.success
        yield running, fake


async def test_connected_hubspot_lists_its_fields_and_takes_a_mapping(hub: tuple[RunningHub, FakeHubSpot]) -> None:
    running, fake = hub
    fields = fields_pb2_grpc.FieldsServiceStub(running.channel)
    auth = running.auth(TEAM, "admin")

    listed = await fields.ListFields(fields_pb2.ListFieldsRequest(kind="hubspot"), metadata=auth)
    saved = await fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping={"email": "email", "name": "firstname"}), metadata=auth
    )

    by_name = {field.name: field for field in listed.fields}
    assert (by_name["email"].type, by_name["email"].required) == ("email", True)
    assert by_name["lifecyclestage"].type == "select"
    assert not by_name["hs_object_id"].writable
    assert saved.success
    [token_call] = fake.calls_to("/oauth/v1/token")
    assert token_call.body["code_verifier"]  # the core's PKCE verifier reached HubSpot's token endpoint


async def test_a_lead_syncs_by_upsert_and_a_duplicate_create_is_already_exists(
    hub: tuple[RunningHub, FakeHubSpot],
) -> None:
    running, fake = hub
    auth = running.auth(TEAM, "admin")
    await fields_pb2_grpc.FieldsServiceStub(running.channel).SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping={"email": "email", "name": "firstname"}), metadata=auth
    )
    lead = await leads_pb2_grpc.LeadsServiceStub(running.channel).CreateLead(
        leads_pb2.CreateLeadRequest(fields={"email": "Ada@Example.com", "name": "Ada"}), metadata=auth
    )
    sync = sync_pb2_grpc.SyncServiceStub(running.channel)

    def request(policy: str, *, dry_run: bool = False, force: bool = False) -> sync_pb2.SyncLeadRequest:
        options = sync_pb2.SyncOptions(provider="hubspot", duplicate_policy=policy, force=force)
        return sync_pb2.SyncLeadRequest(lead_id=lead.lead.id, dry_run=dry_run, options=options)

    preview = await sync.SyncLead(request("update", dry_run=True), metadata=auth)
    assert (preview.action, fake.write_calls()) == ("would_create", [])

    synced = await sync.SyncLead(request("update"), metadata=auth)
    contact = fake.contact_by_email("ada@example.com")
    assert contact is not None
    assert (synced.action, synced.contact_id) == ("created", contact.id)
    assert contact.properties["firstname"] == "Ada"
    assert [call.path for call in fake.write_calls()] == ["/crm/v3/objects/contacts/batch/upsert"]

    unchanged = await sync.SyncLead(request("update"), metadata=auth)
    assert (unchanged.action, len(fake.write_calls())) == ("unchanged", 1), "nothing changed: nothing was sent"

    fake.expire_tokens()  # the core refreshes and retries once
    again = await sync.SyncLead(request("update", force=True), metadata=auth)
    assert (again.action, again.contact_id) == ("updated", contact.id)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await sync.SyncLead(request("create_new"), metadata=auth)
    assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert contact.id in str(refused.value.details())
