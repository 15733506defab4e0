"""Salesforce end to end over gRPC, on SQLite and PostgreSQL: the HubSpot flow again, nothing Salesforce-specific
in the core — plus SOQL injection, required fields, session expiry, the daily limit and duplicate rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from crm_hub.v1 import fields_pb2, leads_pb2, status_pb2
from tests.e2e.conftest import World, salesforce_world
from tests.support.grpc_errors import details_of

MAPPING = {
    "email": "Email",
    "first": "FirstName",
    "name": "LastName",
    "title": "Title",
    "employees": "NumberOfEmployees__c",
}


async def connected_with_mapping(world: World) -> None:
    await world.connect()
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="salesforce", mapping=MAPPING), metadata=world.auth()
    )


async def test_the_whole_flow_connect_fields_mapping_dry_run_sync_status_timeline(salesforce: World) -> None:
    await salesforce.connect()
    member = salesforce.auth("member")
    listed = await salesforce.fields.ListFields(fields_pb2.ListFieldsRequest(kind="salesforce"), metadata=member)
    by_name = {field.name: field for field in listed.fields}
    assert (by_name["LastName"].required, by_name["Email"].type, by_name["Email"].required) == (True, "email", False)
    assert by_name["NumberOfEmployees__c"].type == "number"
    assert by_name["LeadSource"].type == "select"
    assert [f.name for f in listed.fields if f.required] == ["LastName"]

    saved = await salesforce.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="salesforce", mapping=MAPPING), metadata=salesforce.auth("admin")
    )
    assert dict(saved.mapping) == MAPPING

    lead_id = await salesforce.lead(email="ada@example.com", first="Ada", name="Lovelace", employees="12")
    preview = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, dry_run=True), metadata=member)
    assert (preview.action, preview.contact_id) == ("would_create", "")
    assert dict(preview.payload) == {
        "Email": "ada@example.com",
        "FirstName": "Ada",
        "LastName": "Lovelace",
        "NumberOfEmployees__c": 12,
    }
    assert salesforce.fake.write_calls() == []

    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id), metadata=member)
    [contact_id] = salesforce.fake.contacts_with_email("ada@example.com")
    assert (synced.action, synced.contact_id) == ("created", contact_id)
    assert len(contact_id) == 18
    assert salesforce.fake.contacts[contact_id]["LastName"] == "Lovelace"

    status = await salesforce.status.GetStatus(status_pb2.GetStatusRequest(), metadata=member)
    org = status.integrations["salesforce"]
    assert (org.connected, org.syncs_total, org.success_rate, org.HasField("last_sync")) == (True, 1, 1.0, True)
    timeline = await salesforce.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=member
    )
    assert [(e.provider, e.action, e.contact_id) for e in timeline.events] == [
        ("salesforce", "created", contact_id),
        ("salesforce", "would_create", ""),
    ]


async def test_each_duplicate_policy_against_existing_contacts(salesforce: World) -> None:
    await connected_with_mapping(salesforce)
    older = salesforce.fake.add_contact({"Email": "bo@example.com", "LastName": "Old"})
    newer = salesforce.fake.add_contact({"Email": "BO@example.com", "LastName": "Newer"})
    lead_id = await salesforce.lead(email="bo@example.com", name="Bo", title="CTO")
    member = salesforce.auth("member")

    skipped = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "skip"), metadata=member)
    assert (skipped.action, skipped.contact_id, list(skipped.other_contact_ids)) == ("skipped", older, [newer])

    updated = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=member)
    assert (updated.action, updated.contact_id, list(updated.other_contact_ids)) == ("updated", older, [newer])
    assert (salesforce.fake.contacts[older]["LastName"], salesforce.fake.contacts[older]["Title"]) == ("Bo", "CTO")
    assert salesforce.fake.contacts[newer]["LastName"] == "Newer"

    # Without duplicate rules Salesforce takes another contact with the same email, and says so beforehand.
    preview = await salesforce.sync.SyncLead(
        salesforce.sync_request(lead_id, "create_new", dry_run=True), metadata=member
    )
    assert (preview.action, preview.contact_id, sorted(preview.other_contact_ids)) == (
        "would_create",
        "",
        sorted([older, newer]),
    )
    created = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "create_new"), metadata=member)
    assert created.action == "created"
    assert len(salesforce.fake.contacts_with_email("bo@example.com")) == 3


async def test_duplicate_rules_refuse_create_new_as_already_exists_with_the_matches(
    database_url: str, tmp_path: Path
) -> None:
    async with salesforce_world(database_url, tmp_path, duplicate_rules=True) as org:
        await connected_with_mapping(org)
        existing = org.fake.add_contact({"Email": "cy@example.com", "LastName": "Cy"})
        lead_id = await org.lead(email="cy@example.com", name="Cy")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await org.sync.SyncLead(org.sync_request(lead_id, "create_new"), metadata=org.auth("member"))
        error = details_of(refused.value)
        assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DUPLICATE_CONTACT")
        assert error.metadata["contact_id"] == existing
        assert existing in error.message
        assert org.fake.contacts_with_email("cy@example.com") == [existing]


async def test_emails_that_look_like_soql_are_matched_exactly_and_never_widen_the_query(salesforce: World) -> None:
    await connected_with_mapping(salesforce)
    obrien = salesforce.fake.add_contact({"Email": "o'brien@example.com", "LastName": "O'Brien"})
    salesforce.fake.add_contact({"Email": "other@example.com", "LastName": "Other"})
    member = salesforce.auth("member")

    found = await salesforce.sync.SyncLead(
        salesforce.sync_request(await salesforce.lead(email="o'brien@example.com", name="X"), "skip"), metadata=member
    )
    assert (found.action, found.contact_id, list(found.other_contact_ids)) == ("skipped", obrien, [])

    injected = await salesforce.lead(email="x'OR'Email!='@example.com", name="Mallory")
    preview = await salesforce.sync.SyncLead(salesforce.sync_request(injected, "skip", dry_run=True), metadata=member)
    assert (preview.action, preview.contact_id, list(preview.other_contact_ids)) == ("would_create", "", [])


async def test_a_mapping_that_leaves_lastname_unfed_is_refused(salesforce: World) -> None:
    await salesforce.connect()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await salesforce.fields.SaveMapping(
            fields_pb2.SaveMappingRequest(kind="salesforce", mapping={"email": "Email", "first": "FirstName"}),
            metadata=salesforce.auth("admin"),
        )
    error = details_of(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "MAPPING_INVALID")
    assert "LastName" in error.field_violations["mapping"]


async def test_an_empty_required_value_is_refused_before_any_write(salesforce: World) -> None:
    await connected_with_mapping(salesforce)
    lead_id = await salesforce.lead(email="dee@example.com", first="Dee", name=" ")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await salesforce.sync.SyncLead(salesforce.sync_request(lead_id), metadata=salesforce.auth("member"))
    error = details_of(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUIRED_FIELD_MISSING")
    assert set(error.field_violations) == {"fields[name]"}
    assert salesforce.fake.write_calls() == []


async def test_an_expired_session_is_refreshed_and_the_call_retried_once(salesforce: World) -> None:
    await connected_with_mapping(salesforce)
    lead_id = await salesforce.lead(email="eve@example.com", name="Eve")
    salesforce.fake.expire_sessions()
    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id), metadata=salesforce.auth("member"))
    assert synced.action == "created"
    refreshes = [
        c for c in salesforce.fake.calls_to("/services/oauth2/token") if c.body.get("grant_type") == "refresh_token"
    ]
    assert len(refreshes) == 1


async def test_rotating_refresh_tokens_survive_fifty_concurrent_syncs_on_an_expired_session(
    database_url: str, tmp_path: Path
) -> None:
    async with salesforce_world(database_url, tmp_path, rotate_refresh_tokens=True) as org:
        await connected_with_mapping(org)
        lead_ids = [await org.lead(email=f"n{n}@example.com", name=f"N{n}") for n in range(50)]
        org.fake.expire_sessions()
        results = await asyncio.gather(
            *(org.sync.SyncLead(org.sync_request(lead_id), metadata=org.auth("member")) for lead_id in lead_ids)
        )
        assert {result.action for result in results} == {"created"}
        refreshes = [
            c for c in org.fake.calls_to("/services/oauth2/token") if c.body.get("grant_type") == "refresh_token"
        ]
        assert len(refreshes) == 1, "one refresh: a second use of the rotated token would have killed the chain"
        org.fake.expire_sessions()
        again = await org.sync.SyncLead(org.sync_request(lead_ids[0], force=True), metadata=org.auth("member"))
        assert again.action == "updated", "the rotated refresh token was stored and still works"


async def test_a_refused_connection_to_the_token_endpoint_is_retried_even_with_rotating_tokens(
    database_url: str, tmp_path: Path
) -> None:
    async with salesforce_world(database_url, tmp_path, rotate_refresh_tokens=True) as org:
        await connected_with_mapping(org)
        lead_id = await org.lead(email="rotating@example.com", name="Rota")
        org.fake.expire_sessions()
        org.fake.fail_next(2, status=429, path="/services/oauth2/token")  # surely not applied: safe to resend

        synced = await org.sync.SyncLead(org.sync_request(lead_id), metadata=org.auth("member"))

        assert synced.action == "created"
        refreshes = [
            c for c in org.fake.calls_to("/services/oauth2/token") if c.body.get("grant_type") == "refresh_token"
        ]
        assert len(refreshes) == 3


async def test_a_5xx_refresh_of_a_rotating_token_is_not_resent_with_the_token_it_may_have_spent(
    database_url: str, tmp_path: Path
) -> None:
    # The CRM may have rotated the token before the 5xx: sending the old one again would kill the whole chain.
    async with salesforce_world(database_url, tmp_path, rotate_refresh_tokens=True) as org:
        await connected_with_mapping(org)
        lead_id = await org.lead(email="rotating-5xx@example.com", name="Rota")
        org.fake.expire_sessions()
        org.fake.fail_next(1, status=503, path="/services/oauth2/token")

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await org.sync.SyncLead(org.sync_request(lead_id), metadata=org.auth("member"))

        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        refreshes = [
            c for c in org.fake.calls_to("/services/oauth2/token") if c.body.get("grant_type") == "refresh_token"
        ]
        assert len(refreshes) == 1
        again = await org.sync.SyncLead(org.sync_request(lead_id), metadata=org.auth("member"))
        assert again.action == "created", "the chain is intact: the next sync refreshes and works"


async def test_the_daily_api_limit_is_resource_exhausted_without_a_retry_storm_and_shows_in_status(
    salesforce: World,
) -> None:
    await connected_with_mapping(salesforce)
    lead_id = await salesforce.lead(email="fay@example.com", name="Fay")
    salesforce.fake.api_usage = salesforce.fake.daily_limit
    calls_before = len(salesforce.fake.calls)
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await salesforce.sync.SyncLead(salesforce.sync_request(lead_id), metadata=salesforce.auth("member"))
    error = details_of(limited.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert len(salesforce.fake.calls) - calls_before == 1, "no retry against a daily limit"
    assert salesforce.waits == []
    status = await salesforce.status.GetStatus(status_pb2.GetStatusRequest(), metadata=salesforce.auth("member"))
    org = status.integrations["salesforce"]
    assert org.connected is True
    assert "limit" in org.error.lower()

    salesforce.fake.api_usage = 0  # the rolling allocation frees up
    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id), metadata=salesforce.auth("member"))
    assert synced.action == "created"
    status = await salesforce.status.GetStatus(status_pb2.GetStatusRequest(), metadata=salesforce.auth("member"))
    assert not status.integrations["salesforce"].HasField("error")
