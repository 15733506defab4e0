"""What a sync must survive: lost answers, races, a contact deleted under it, expired credentials, a mapping
that names the email differently — over gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from crm_hub_salesforce.fake import FakeSalesforce
from sqlalchemy import text, update

from crm_hub.core.sync.engine import INTENT_STALE_SECONDS
from crm_hub.storage import utcnow
from crm_hub.storage.models import LeadSyncState
from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2, status_pb2
from tests.e2e.conftest import SALESFORCE_REDIRECT, World, salesforce_world
from tests.support.grpc_errors import details_of

SALESFORCE_MAPPING = {"email": "Email", "name": "LastName", "title": "Title"}
COLLECTIONS = "/services/data/v58.0/composite/sobjects"


async def with_mapping(world: World, mapping: dict[str, str]) -> None:
    await world.connect()
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind=world.kind, mapping=mapping), metadata=world.auth()
    )


async def test_a_create_whose_answer_was_lost_is_found_by_email_not_made_twice(salesforce: World) -> None:
    await with_mapping(salesforce, SALESFORCE_MAPPING)
    lead_id = await salesforce.lead(email="lost@example.com", name="Lost")
    salesforce.fake.lose_answer_next(path=COLLECTIONS, status=502)
    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=salesforce.auth())
    [contact_id] = salesforce.fake.contacts_with_email("lost@example.com")
    assert (synced.action, synced.contact_id) == ("created", contact_id)
    assert len(salesforce.fake.calls_to(COLLECTIONS, "POST")) == 1, "the create was not sent again"


async def test_a_create_that_failed_before_writing_is_tried_again_once_checked(salesforce: World) -> None:
    await with_mapping(salesforce, SALESFORCE_MAPPING)
    lead_id = await salesforce.lead(email="again@example.com", name="Again")
    salesforce.fake.fail_next(status=503, path=COLLECTIONS)
    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "skip"), metadata=salesforce.auth())
    assert synced.action == "created"
    assert len(salesforce.fake.contacts_with_email("again@example.com")) == 1
    assert len(salesforce.fake.calls_to(COLLECTIONS, "POST")) == 2


async def test_create_new_with_a_lost_answer_finds_the_contact_it_created_and_never_duplicates(
    salesforce: World,
) -> None:
    await with_mapping(salesforce, SALESFORCE_MAPPING)
    existing = salesforce.fake.add_contact({"Email": "unknown@example.com", "LastName": "Earlier"})
    lead_id = await salesforce.lead(email="unknown@example.com", name="Unknown")
    salesforce.fake.lose_answer_next(path=COLLECTIONS, status=502)

    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "create_new"), metadata=salesforce.auth())

    # create_new looked the email up first, so the contact that appeared after the lost answer is known to be ours.
    contacts = salesforce.fake.contacts_with_email("unknown@example.com")
    assert len(contacts) == 2
    assert synced.action == "created"
    assert synced.contact_id in contacts
    assert synced.contact_id != existing
    assert list(synced.other_contact_ids) == [existing]


async def test_a_create_that_may_still_be_in_flight_is_waited_for_then_found_never_sent_twice(
    salesforce: World,
) -> None:
    await with_mapping(salesforce, SALESFORCE_MAPPING)
    lead_id = await salesforce.lead(email="inflight@example.com", name="Inflight")
    salesforce.fake.fail_next(path=COLLECTIONS, status=504)  # the CRM's gateway gave up; the create may still land

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=salesforce.auth())
    assert (details_of(unknown.value).code, details_of(unknown.value).reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "WRITE_OUTCOME_UNKNOWN",
    )
    posts = len(salesforce.fake.calls_to(COLLECTIONS, "POST"))

    # Syncing again at once would risk a second contact: it waits, and says so, without calling the CRM.
    calls_before = len(salesforce.fake.calls)
    with pytest.raises(grpc.aio.AioRpcError) as waiting:
        await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=salesforce.auth())
    assert (details_of(waiting.value).code, details_of(waiting.value).reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "SYNC_IN_PROGRESS",
    )
    assert len(salesforce.fake.calls) == calls_before

    # The create did land, late; two minutes on, the next sync looks the email up and takes that contact as its own.
    landed = salesforce.fake.add_contact({"Email": "inflight@example.com", "LastName": "Inflight"})
    async with salesforce.application.database.session() as session:
        await session.execute(
            update(LeadSyncState)
            .where(LeadSyncState.team_id == salesforce.team, LeadSyncState.lead_id == lead_id)
            .values(intent_at=utcnow() - timedelta(seconds=INTENT_STALE_SECONDS + 1))
        )
    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=salesforce.auth())
    assert salesforce.fake.contacts_with_email("inflight@example.com") == [landed]
    assert (synced.action, synced.contact_id) == ("created", landed)
    assert len(salesforce.fake.calls_to(COLLECTIONS, "POST")) == posts, "the create was not sent again"
    lead = await salesforce.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=salesforce.auth())
    assert [(s.status, s.contact_id) for s in lead.sync_states] == [("synced", landed)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_two_replicas_syncing_one_new_email_at_once_make_one_contact(database_url: str, tmp_path: Path) -> None:
    org = FakeSalesforce(redirect_uri=SALESFORCE_REDIRECT)  # takes several contacts per email: nothing stops a second
    async with (
        salesforce_world(database_url, tmp_path, fake=org) as replica_a,
        salesforce_world(database_url, tmp_path, fake=org) as replica_b,
    ):
        replica_b.team = replica_a.team
        await with_mapping(replica_a, SALESFORCE_MAPPING)
        first = await replica_a.lead(email="twice@example.com", name="First")
        second = await replica_a.lead(email="twice@example.com", name="Second")
        org.timeout_next(2, delay=0.3, path=COLLECTIONS)  # each write takes a while, so the two syncs overlap

        synced = await asyncio.gather(
            replica_a.sync.SyncLead(replica_a.sync_request(first, "update"), metadata=replica_a.auth()),
            replica_b.sync.SyncLead(replica_b.sync_request(second, "update"), metadata=replica_b.auth()),
        )

        [contact] = org.contacts_with_email("twice@example.com")
        assert sorted(answer.action for answer in synced) == ["created", "updated"]
        assert {answer.contact_id for answer in synced} == {contact}


def stale_lookup(world: World, *matches: str) -> None:
    """The next SOQL lookup answers as it would have a moment ago (the CRM changed since): with ``matches``."""
    records = [{"attributes": {"type": "Contact"}, "Id": contact_id} for contact_id in matches]
    world.fake.fail_next(
        path="/services/data/v58.0/query",
        status=200,
        body={"done": True, "totalSize": len(records), "records": records},
    )


async def test_updating_a_contact_deleted_since_the_lookup_creates_it_anew(salesforce: World) -> None:
    await with_mapping(salesforce, SALESFORCE_MAPPING)
    gone = salesforce.fake.add_contact({"Email": "gone@example.com", "LastName": "Gone"})
    lead_id = await salesforce.lead(email="gone@example.com", name="Back")
    salesforce.fake.delete_contact(gone)
    stale_lookup(salesforce, gone)  # the lookup still saw it; the update will not find it
    synced = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=salesforce.auth())
    [created] = salesforce.fake.contacts_with_email("gone@example.com")
    assert (synced.action, synced.contact_id) == ("created", created)
    assert created != gone


async def test_required_values_are_needed_to_create_a_contact_not_to_update_one(salesforce: World) -> None:
    await with_mapping(salesforce, SALESFORCE_MAPPING)
    existing = salesforce.fake.add_contact({"Email": "kept@example.com", "LastName": "Kept"})
    lead_id = await salesforce.lead(email="kept@example.com", name=" ", title="CFO")
    updated = await salesforce.sync.SyncLead(salesforce.sync_request(lead_id, "update"), metadata=salesforce.auth())
    assert (updated.action, updated.contact_id) == ("updated", existing)
    assert (salesforce.fake.contacts[existing]["LastName"], salesforce.fake.contacts[existing]["Title"]) == (
        "Kept",
        "CFO",
    )

    new_lead = await salesforce.lead(email="nameless@example.com", name=" ")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await salesforce.sync.SyncLead(salesforce.sync_request(new_lead, "update"), metadata=salesforce.auth())
    assert details_of(refused.value).reason == "REQUIRED_FIELD_MISSING"


async def test_duplicates_are_matched_by_the_email_the_mapping_sends_whatever_the_lead_calls_it(
    hubspot: World,
) -> None:
    await with_mapping(hubspot, {"work_email": "email", "name": "firstname"})
    existing = hubspot.fake.add_contact({"email": "ida@example.com", "firstname": "Old"})
    lead_id = await hubspot.lead(work_email="Ida@Example.com", name="Ida")
    preview = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "skip", dry_run=True), metadata=hubspot.auth())
    assert (preview.action, preview.contact_id) == ("would_skip", existing.id)
    skipped = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "skip"), metadata=hubspot.auth())
    assert (skipped.action, skipped.contact_id) == ("skipped", existing.id)


async def test_expired_credentials_fail_fast_without_calling_the_crm_and_are_notified_once(hubspot: World) -> None:
    await with_mapping(hubspot, {"email": "email", "name": "firstname"})
    lead_id = await hubspot.lead(email="jay@example.com", name="Jay")
    hubspot.fake.refresh_tokens.clear()
    hubspot.fake.expire_tokens()
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
        assert details_of(refused.value).reason == "CREDENTIALS_EXPIRED"
    await hubspot.application.notifications.drain()
    refreshes = [c for c in hubspot.fake.calls_to("/oauth/v1/token") if c.body.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 1, "only the first sync tried to refresh"
    [message] = hubspot.slack
    assert "credentials expired" in message.lower()


async def test_disconnect_works_even_when_the_stored_credentials_cannot_be_decrypted(hubspot: World) -> None:
    await with_mapping(hubspot, {"email": "email"})
    async with hubspot.application.database.session() as session:
        await session.execute(
            text("UPDATE credentials SET encrypted = :broken WHERE team_id = :team"),
            {
                "broken": '{"v": 1, "alg": "A256GCM", "kid": "0000000000000000", "salt": "AA", "iv": "AA", "ct": "AA"}',
                "team": hubspot.team,
            },
        )
    done = await hubspot.integrations.Disconnect(
        integrations_pb2.DisconnectRequest(kind="hubspot"), metadata=hubspot.auth("admin")
    )
    assert done.success is True
    status = await hubspot.status.GetStatus(status_pb2.GetStatusRequest(), metadata=hubspot.auth("member"))
    assert status.integrations["hubspot"].state == "DISCONNECTED"
    async with hubspot.application.database.session() as session:
        left = (
            await session.execute(text("SELECT count(*) FROM credentials WHERE team_id = :t"), {"t": hubspot.team})
        ).scalar()
    assert left == 0


async def test_an_undecryptable_credential_is_an_internal_error_that_reveals_no_key_ids(hubspot: World) -> None:
    await with_mapping(hubspot, {"email": "email"})
    async with hubspot.application.database.session() as session:
        await session.execute(
            text("UPDATE credentials SET encrypted = :broken WHERE team_id = :team"),
            {
                "broken": '{"v": 1, "alg": "A256GCM", "kid": "0123456789abcdef", "salt": "AA", "iv": "AA", "ct": "AA"}',
                "team": hubspot.team,
            },
        )
    lead_id = await hubspot.lead(email="kim@example.com")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, dry_run=True), metadata=hubspot.auth("member"))
    error = details_of(failed.value)
    assert error.code is grpc.StatusCode.INTERNAL
    assert error.message.startswith("Internal error; quote request id ")
    assert "0123456789abcdef" not in error.message
    assert error.metadata == {}


@pytest.mark.parametrize(("policy", "action"), [("update", "updated"), ("skip", "skipped")])
async def test_a_contact_created_by_a_racing_sync_is_treated_by_the_policy_not_refused(
    database_url: str, tmp_path: Path, policy: str, action: str
) -> None:
    async with salesforce_world(database_url, tmp_path, duplicate_rules=True) as org:
        await with_mapping(org, SALESFORCE_MAPPING)
        lead_id = await org.lead(email="race@example.com", name="Racer", title="COO")
        # Another replica created the contact between our lookup (which found none) and our create.
        racer = org.fake.add_contact({"Email": "race@example.com", "LastName": "Other"})
        stale_lookup(org)
        synced = await org.sync.SyncLead(org.sync_request(lead_id, policy), metadata=org.auth())
        assert (synced.action, synced.contact_id) == (action, racer)
        assert org.fake.contacts_with_email("race@example.com") == [racer]
        assert org.fake.contacts[racer]["Title"] == ("COO" if policy == "update" else None)


UPSERTS = "/crm/v3/objects/contacts/batch/upsert"
HUBSPOT_MAPPING = {"email": "email", "name": "firstname"}


async def test_an_upsert_whose_answer_was_lost_is_recorded_created_not_updated(hubspot: World) -> None:
    await with_mapping(hubspot, HUBSPOT_MAPPING)
    lead_id = await hubspot.lead(email="upserted@example.com", name="Lost")
    hubspot.fake.lose_answer_next(path=UPSERTS, status=502)  # applied, answer lost: the retry says "not new"

    synced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "update"), metadata=hubspot.auth())

    contact = hubspot.fake.contact_by_email("upserted@example.com")
    assert contact is not None
    assert (synced.action, synced.contact_id) == ("created", contact.id)
    assert len(hubspot.fake.calls_to(UPSERTS)) == 2
    timeline = await hubspot.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=hubspot.auth()
    )
    assert [event.action for event in timeline.events] == ["created"]


async def test_an_upsert_onto_a_contact_that_was_there_before_is_recorded_updated(hubspot: World) -> None:
    await with_mapping(hubspot, HUBSPOT_MAPPING)
    existing = hubspot.fake.add_contact({"email": "before@example.com", "firstname": "Before"})
    existing.created_at -= 3600  # made an hour ago, by someone else
    lead_id = await hubspot.lead(email="before@example.com", name="After")
    hubspot.fake.lose_answer_next(path=UPSERTS, status=502)

    synced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id, "update"), metadata=hubspot.auth())

    assert (synced.action, synced.contact_id) == ("updated", existing.id)
