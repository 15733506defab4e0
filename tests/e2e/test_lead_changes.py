"""Updating and deleting leads over gRPC, on SQLite and PostgreSQL: fields merged (a "" removes one), a changed
lead synced again and an unchanged one not, a delete that takes the lead's sync states and timeline with it and
leaves the CRM alone — and every refusal with its reason, nothing written."""

from __future__ import annotations

import grpc
import pytest
from sqlalchemy import func, select, update

from crm_hub.storage import TimelineEvent, utcnow
from crm_hub.storage.models import LeadSyncState
from crm_hub.v1 import fields_pb2, leads_pb2
from tests.e2e.conftest import World
from tests.support.grpc_errors import details_of

MAPPING = {"email": "email", "name": "firstname", "company": "company"}


async def synced_lead(world: World, **fields: str) -> str:
    await world.connect()
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind=world.kind, mapping=MAPPING), metadata=world.auth()
    )
    lead_id = await world.lead(**fields)
    synced = await world.sync.SyncLead(world.sync_request(lead_id), metadata=world.auth("member"))
    assert synced.action == "created"
    return lead_id


def update_request(lead_id: str, **fields: str) -> leads_pb2.UpdateLeadRequest:
    return leads_pb2.UpdateLeadRequest(lead_id=lead_id, fields=fields)


async def test_an_update_merges_fields_and_an_empty_value_removes_one(hubspot: World) -> None:
    lead_id = await hubspot.lead(email="merge@example.com", name="Ann", company="Old Co")

    updated = await hubspot.leads.UpdateLead(
        update_request(lead_id, company="New Co", phone="+1 555 0101", name=""), metadata=hubspot.auth("member")
    )

    assert updated.changed is True
    assert dict(updated.lead.fields) == {"email": "merge@example.com", "company": "New Co", "phone": "+1 555 0101"}
    stored = await hubspot.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=hubspot.auth("member"))
    assert dict(stored.lead.fields) == dict(updated.lead.fields)
    assert stored.lead.updated_at.ToDatetime() >= stored.lead.created_at.ToDatetime()


async def test_a_changed_lead_is_synced_again_and_an_unchanged_one_makes_no_call(hubspot: World) -> None:
    lead_id = await synced_lead(hubspot, email="again@example.com", name="Bo", company="Acme")

    same = await hubspot.leads.UpdateLead(update_request(lead_id, company="Acme"), metadata=hubspot.auth("member"))
    calls = len(hubspot.fake.calls)
    unchanged = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert (same.changed, unchanged.action, len(hubspot.fake.calls)) == (False, "unchanged", calls)

    moved = await hubspot.leads.UpdateLead(update_request(lead_id, company="Globex"), metadata=hubspot.auth("member"))
    resynced = await hubspot.sync.SyncLead(hubspot.sync_request(lead_id), metadata=hubspot.auth("member"))
    assert (moved.changed, resynced.action) == (True, "updated")
    [contact] = [c for c in hubspot.fake.contacts.values() if c.properties.get("email") == "again@example.com"]
    assert contact.properties["company"] == "Globex"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({}, "fields"),
        ({"bad name": "x"}, "fields[bad name]"),
        ({"email": "not an email"}, "fields[email]"),
        ({"notes": "nul\x00byte"}, "fields[notes]"),
        ({"email": "", "name": ""}, "fields"),  # nothing would be left of the lead
    ],
)
async def test_an_invalid_update_is_refused_naming_the_field_and_changes_nothing(
    hubspot: World, changes: dict[str, str], field: str
) -> None:
    lead_id = await hubspot.lead(email="keep@example.com", name="Keep")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.leads.UpdateLead(update_request(lead_id, **changes), metadata=hubspot.auth("member"))

    details = details_of(refused.value)
    assert (details.code, details.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "LEAD_INVALID")
    assert field in details.field_violations
    stored = await hubspot.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=hubspot.auth("member"))
    assert dict(stored.lead.fields) == {"email": "keep@example.com", "name": "Keep"}


async def test_deleting_a_lead_removes_its_sync_state_and_timeline_but_not_the_crm_contact(hubspot: World) -> None:
    lead_id = await synced_lead(hubspot, email="gone@example.com", name="Gone")
    contacts = len(hubspot.fake.contacts)

    deleted = await hubspot.leads.DeleteLead(leads_pb2.DeleteLeadRequest(lead_id=lead_id), metadata=hubspot.auth())

    assert deleted.success is True
    assert "CRM contacts were not touched" in deleted.message
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await hubspot.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=hubspot.auth("member"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    async with hubspot.application.database.session() as session:
        states = await session.scalar(select(func.count()).where(LeadSyncState.lead_id == lead_id))
        events = await session.scalar(select(func.count()).where(TimelineEvent.lead_id == lead_id))
    assert (states, events) == (0, 0)
    assert len(hubspot.fake.contacts) == contacts


async def test_only_an_admin_deletes_and_only_the_teams_own_leads(hubspot: World) -> None:
    lead_id = await hubspot.lead(email="mine@example.com")

    with pytest.raises(grpc.aio.AioRpcError) as member:
        await hubspot.leads.DeleteLead(leads_pb2.DeleteLeadRequest(lead_id=lead_id), metadata=hubspot.auth("member"))
    with pytest.raises(grpc.aio.AioRpcError) as other_team:
        await hubspot.leads.DeleteLead(
            leads_pb2.DeleteLeadRequest(lead_id=lead_id), metadata=hubspot.auth("admin", team="team-someone-else")
        )
    with pytest.raises(grpc.aio.AioRpcError) as other_team_update:
        await hubspot.leads.UpdateLead(
            update_request(lead_id, name="Mallory"), metadata=hubspot.auth("member", team="team-someone-else")
        )

    assert member.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert other_team.value.code() == grpc.StatusCode.NOT_FOUND
    assert other_team_update.value.code() == grpc.StatusCode.NOT_FOUND
    stored = await hubspot.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=hubspot.auth("member"))
    assert dict(stored.lead.fields) == {"email": "mine@example.com"}


async def test_a_lead_whose_sync_is_still_writing_is_not_deleted_until_it_is_done(hubspot: World) -> None:
    lead_id = await synced_lead(hubspot, email="busy@example.com", name="Busy")
    async with hubspot.application.database.session() as session:  # as while a write is in flight
        await session.execute(update(LeadSyncState).where(LeadSyncState.lead_id == lead_id).values(intent_at=utcnow()))

    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await hubspot.leads.DeleteLead(leads_pb2.DeleteLeadRequest(lead_id=lead_id), metadata=hubspot.auth())

    assert (details_of(busy.value).code, details_of(busy.value).reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "SYNC_IN_PROGRESS",
    )
    stored = await hubspot.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=hubspot.auth("member"))
    assert stored.lead.id == lead_id
