"""Automatic sync over gRPC, on SQLite (jobs in the server) and PostgreSQL (a procrastinate worker): per-integration
settings, new leads in the CRM seconds after intake in batch calls, changed leads synced again and unchanged ones
not, failures that retrying cannot fix marked once and left alone, and Slack told only of what went wrong."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2, sync_pb2
from tests.e2e.conftest import World
from tests.support.grpc_errors import details_of

HUBSPOT_MAPPING = {"email": "email", "name": "firstname", "company": "company"}
UPSERTS = "/crm/v3/objects/contacts/batch/upsert"
#: Automatic sync's promise: a lead is in the CRM this soon after intake, at rest.
WITHIN_SECONDS = 5.0


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float = WITHIN_SECONDS) -> float:
    """Seconds until ``condition`` held; fails if it did not within ``within``."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await condition():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {within} s")


def settings_request(kind: str, **settings: object) -> integrations_pb2.UpdateIntegrationSettingsRequest:
    return integrations_pb2.UpdateIntegrationSettingsRequest(
        kind=kind, settings=integrations_pb2.IntegrationSettings(**settings)
    )


async def ready(world: World, mapping: dict[str, str]) -> None:
    await world.connect()
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind=world.kind, mapping=mapping), metadata=world.auth()
    )


async def auto_on(
    world: World, mapping: dict[str, str], **settings: object
) -> integrations_pb2.UpdateIntegrationSettingsResponse:
    await ready(world, mapping)
    return await world.integrations.UpdateIntegrationSettings(
        settings_request(world.kind, auto_sync=True, **settings), metadata=world.auth("admin")
    )


async def state_of(world: World, lead_id: str) -> leads_pb2.LeadSyncState | None:
    lead = await world.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=world.auth("member"))
    return next((state for state in lead.sync_states if state.provider == world.kind), None)


async def test_settings_start_off_with_the_defaults_and_say_how_many_leads_are_unsynced(hubspot: World) -> None:
    await ready(hubspot, HUBSPOT_MAPPING)
    for n in range(3):
        await hubspot.lead(email=f"before{n}@example.com")

    shown = await hubspot.integrations.GetIntegrationSettings(
        integrations_pb2.GetIntegrationSettingsRequest(kind="hubspot"), metadata=hubspot.auth("member")
    )

    assert (shown.settings.auto_sync, shown.settings.duplicate_policy, shown.settings.sync_updates) == (
        False,
        "update",
        True,
    )
    assert shown.unsynced_leads == 3


async def test_turning_auto_sync_on_sends_no_backlog_and_says_how_to(hubspot: World) -> None:
    await ready(hubspot, HUBSPOT_MAPPING)
    backlog = [await hubspot.lead(email=f"old{n}@example.com") for n in range(2)]

    turned_on = await hubspot.integrations.UpdateIntegrationSettings(
        settings_request("hubspot", auto_sync=True), metadata=hubspot.auth("admin")
    )

    assert turned_on.settings.auto_sync is True
    assert turned_on.unsynced_leads == 2
    assert '"selection": "unsynced"' in turned_on.message
    await asyncio.sleep(2)
    assert hubspot.fake.count(UPSERTS) == 0
    assert [await state_of(hubspot, lead_id) for lead_id in backlog] == [None, None]


async def test_new_leads_reach_the_crm_within_seconds_in_batch_calls(hubspot: World) -> None:
    await auto_on(hubspot, HUBSPOT_MAPPING)

    leads = await asyncio.gather(*(hubspot.lead(email=f"auto{n}@example.com", name=f"Auto{n}") for n in range(40)))

    async def all_synced() -> bool:
        states = [await state_of(hubspot, lead_id) for lead_id in leads]
        return all(state is not None and state.status == "synced" for state in states)

    await eventually(all_synced)
    emails = {contact.properties.get("email") for contact in hubspot.fake.contacts.values()}
    assert {f"auto{n}@example.com" for n in range(40)} <= emails
    assert hubspot.fake.count(UPSERTS) <= 2, "a burst goes out in batch calls, not one call per lead"
    jobs = await hubspot.sync.ListSyncJobs(sync_pb2.ListSyncJobsRequest(), metadata=hubspot.auth("member"))
    assert {job.selection for job in jobs.jobs} == {"auto"}
    assert sum(job.counts.created for job in jobs.jobs) == 40
    assert hubspot.slack == [], "automatic syncs that went well are not posted"


async def test_a_steady_stream_of_leads_waits_for_a_fuller_batch_but_not_past_the_longest_gather(
    hubspot: World,
) -> None:
    await auto_on(hubspot, HUBSPOT_MAPPING)

    # A lead every 0.4 s for 4 s never leaves the quiet second a gathering job waits for.
    started = time.monotonic()
    leads = []
    for n in range(10):
        leads.append(await hubspot.lead(email=f"stream{n}@example.com", name=f"Stream{n}"))
        await asyncio.sleep(0.4)

    async def all_synced() -> bool:
        states = [await state_of(hubspot, lead_id) for lead_id in leads]
        return all(state is not None and state.status == "synced" for state in states)

    await eventually(all_synced, within=10)
    jobs = (await hubspot.sync.ListSyncJobs(sync_pb2.ListSyncJobsRequest(), metadata=hubspot.auth("member"))).jobs
    assert len(jobs) <= 2, f"ten leads in a stream went out in {len(jobs)} jobs"
    assert hubspot.fake.count(UPSERTS) == len(jobs)
    first = min(jobs, key=lambda job: job.created_at.ToDatetime())
    waited = (first.started_at.ToDatetime() - first.created_at.ToDatetime()).total_seconds()
    assert 1.0 <= waited <= 5.0 + 1.5, f"the first job gathered for {waited:.1f} s"
    assert time.monotonic() - started < 10


async def test_a_changed_lead_is_synced_again_and_an_unchanged_one_is_not(hubspot: World) -> None:
    await auto_on(hubspot, HUBSPOT_MAPPING)
    lead_id = await hubspot.lead(email="moves@example.com", name="Mo", company="Acme")

    async def synced() -> bool:
        state = await state_of(hubspot, lead_id)
        return state is not None and state.status == "synced"

    await eventually(synced)
    upserts = hubspot.fake.count(UPSERTS)

    await hubspot.leads.UpdateLead(
        leads_pb2.UpdateLeadRequest(lead_id=lead_id, fields={"company": "Acme"}), metadata=hubspot.auth("member")
    )
    await hubspot.leads.UpdateLead(
        leads_pb2.UpdateLeadRequest(lead_id=lead_id, fields={"company": "Globex"}), metadata=hubspot.auth("member")
    )

    def contact_company() -> str:
        [contact] = [c for c in hubspot.fake.contacts.values() if c.properties.get("email") == "moves@example.com"]
        return contact.properties.get("company", "")

    async def resent() -> bool:
        return contact_company() == "Globex"

    await eventually(resent)
    await asyncio.sleep(1.5)
    assert hubspot.fake.count(UPSERTS) == upserts + 1, "the unchanged update sent nothing"


async def test_with_sync_updates_off_only_new_leads_are_synced(hubspot: World) -> None:
    await auto_on(hubspot, HUBSPOT_MAPPING, sync_updates=False)
    lead_id = await hubspot.lead(email="once@example.com", name="Once")

    async def synced() -> bool:
        state = await state_of(hubspot, lead_id)
        return state is not None and state.status == "synced"

    await eventually(synced)
    upserts = hubspot.fake.count(UPSERTS)
    await hubspot.leads.UpdateLead(
        leads_pb2.UpdateLeadRequest(lead_id=lead_id, fields={"name": "Twice"}), metadata=hubspot.auth("member")
    )
    await asyncio.sleep(2.5)
    assert hubspot.fake.count(UPSERTS) == upserts


async def test_a_lead_that_cannot_be_synced_is_marked_failed_once_and_slack_hears_one_summary(
    salesforce: World,
) -> None:
    await auto_on(salesforce, {"email": "Email", "name": "LastName"})
    lead_id = await salesforce.lead(email="noname@example.com")  # LastName is required to create a contact

    async def failed() -> bool:
        state = await state_of(salesforce, lead_id)
        return state is not None and state.status == "failed"

    await eventually(failed)
    state = await state_of(salesforce, lead_id)
    assert state is not None
    assert state.error_reason == "REQUIRED_FIELD_MISSING"
    calls = len(salesforce.fake.calls)
    await asyncio.sleep(2.5)
    assert len(salesforce.fake.calls) == calls, "not retried by itself"
    assert len(salesforce.slack) == 1
    assert "REQUIRED_FIELD_MISSING" in salesforce.slack[0]


@pytest.mark.parametrize(
    ("role", "settings", "code", "reason"),
    [
        ("member", {"auto_sync": True}, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
        ("admin", {"duplicate_policy": "merge"}, grpc.StatusCode.INVALID_ARGUMENT, "SETTINGS_INVALID"),
    ],
)
async def test_settings_changes_are_refused_with_a_reason_and_change_nothing(
    hubspot: World, role: str, settings: dict[str, object], code: grpc.StatusCode, reason: str
) -> None:
    await ready(hubspot, HUBSPOT_MAPPING)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.integrations.UpdateIntegrationSettings(
            settings_request("hubspot", **settings), metadata=hubspot.auth(role)
        )

    assert (details_of(refused.value).code, details_of(refused.value).reason) == (code, reason)
    shown = await hubspot.integrations.GetIntegrationSettings(
        integrations_pb2.GetIntegrationSettingsRequest(kind="hubspot"), metadata=hubspot.auth("member")
    )
    assert (shown.settings.auto_sync, shown.settings.duplicate_policy) == (False, "update")


async def test_auto_sync_needs_a_saved_mapping(hubspot: World) -> None:
    await hubspot.connect()

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await hubspot.integrations.UpdateIntegrationSettings(
            settings_request("hubspot", auto_sync=True), metadata=hubspot.auth("admin")
        )

    assert (details_of(refused.value).code, details_of(refused.value).reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "MAPPING_MISSING",
    )
