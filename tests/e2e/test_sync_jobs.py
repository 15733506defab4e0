"""Sync jobs over gRPC with the real plugins and their fakes, on SQLite and PostgreSQL: batches at the CRM's batch
size, per-lead outcomes, dry runs, selections, cancel, watch, team scoping — and the sync state they leave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import pytest
from crm_hub_hubspot.fake import FakeHubSpot

from crm_hub.v1 import fields_pb2, leads_pb2, status_pb2, sync_pb2
from tests.e2e.conftest import World, running, salesforce_world
from tests.e2e.test_hubspot_flow import MAPPING as HUBSPOT_MAPPING
from tests.e2e.test_salesforce_flow import MAPPING as SALESFORCE_MAPPING
from tests.support.grpc_errors import details_of


@pytest.fixture(params=["hubspot", "salesforce"])
async def crm(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    """Each provider in turn, against its fake."""
    if request.param == "hubspot":
        fake = FakeHubSpot()
        async with running(fake.provider(timeout=5.0), fake, database_url, tmp_path) as world:
            yield world
    else:
        async with salesforce_world(database_url, tmp_path) as world:
            yield world


BATCH_WRITES = {"hubspot": "/crm/v3/objects/contacts/batch/", "salesforce": "/services/data/v58.0/composite/sobjects"}


async def connected(world: World) -> None:
    await world.connect()
    mapping = HUBSPOT_MAPPING if world.kind == "hubspot" else SALESFORCE_MAPPING
    await world.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind=world.kind, mapping=mapping), metadata=world.auth()
    )


async def many_leads(world: World, count: int, prefix: str = "bulk") -> list[str]:
    requests = [
        world.leads.CreateLead(
            leads_pb2.CreateLeadRequest(fields={"email": f"{prefix}{n}@example.com", "name": f"Lead{n}"}),
            metadata=world.auth("member"),
        )
        for n in range(count)
    ]
    return [created.lead.id for created in await asyncio.gather(*requests)]


def job_request(
    world: World,
    *,
    lead_ids: Sequence[str] = (),
    selection: str = "",
    policy: str = "update",
    dry_run: bool = False,
    force: bool = False,
) -> sync_pb2.SyncLeadsRequest:
    options = sync_pb2.SyncLeadsOptions(
        provider=world.kind, duplicate_policy=policy, lead_ids=lead_ids, selection=selection, force=force
    )
    return sync_pb2.SyncLeadsRequest(dry_run=dry_run, options=options)


async def finished(world: World, job_id: str) -> sync_pb2.SyncJob:
    """Watch the job to its end (the stream's last message), as a client would."""
    last = None
    async for update in world.sync.WatchSyncJob(sync_pb2.WatchSyncJobRequest(job_id=job_id), metadata=world.auth()):
        last = update
    assert last is not None
    assert last.final
    return last.job


async def run_job(world: World, **options: object) -> sync_pb2.SyncJob:
    started = await world.sync.SyncLeads(job_request(world, **options), metadata=world.auth("member"))  # type: ignore[arg-type]
    assert started.job.state in ("queued", "succeeded")
    return await finished(world, started.job.id)


async def all_results(world: World, job_id: str, page_size: int = 100) -> list[sync_pb2.SyncJobResult]:
    results, token = [], ""
    while True:
        page = await world.sync.ListSyncJobResults(
            sync_pb2.ListSyncJobResultsRequest(job_id=job_id, page_size=page_size, page_token=token),
            metadata=world.auth("member"),
        )
        results.extend(page.results)
        token = page.next_page_token
        if not token:
            return results


async def test_a_job_syncs_every_lead_at_the_crms_batch_size(crm: World) -> None:
    world = crm.kind
    await connected(crm)
    lead_ids = await many_leads(crm, 450)
    before = len(crm.fake.calls)

    job = await run_job(crm, selection="unsynced")

    assert (job.state, job.total, job.processed, job.counts.created, job.counts.failed) == (
        "succeeded",
        450,
        450,
        450,
        0,
    )
    calls = crm.fake.calls[before:]
    assert job.crm_calls == len(calls)
    writes = [call for call in calls if call.path.startswith(BATCH_WRITES[world])]
    size = 100 if world == "hubspot" else 200
    assert len(writes) == -(-450 // size)  # one write per batch of the CRM's size
    assert len(crm.fake.contacts) >= 450
    results = await all_results(crm, job.id, page_size=100)
    assert sorted(result.lead_id for result in results) == sorted(lead_ids)
    assert {result.outcome for result in results} == {"created"}
    assert all(result.contact_id for result in results)


async def test_a_rerun_of_changed_leads_makes_no_crm_call_and_a_mapping_change_selects_them_again(
    hubspot: World,
) -> None:
    await connected(hubspot)
    await many_leads(hubspot, 120, prefix="changed")
    first = await run_job(hubspot, selection="all")
    assert first.counts.created == 120

    before = len(hubspot.fake.calls)
    again = await run_job(hubspot, selection="changed")
    assert (again.state, again.total, again.crm_calls) == ("succeeded", 0, 0)
    everything = await run_job(hubspot, selection="all")  # selected, but nothing changed: no call either
    assert (everything.total, everything.counts.unchanged, everything.crm_calls) == (120, 120, 0)
    assert len(hubspot.fake.calls) == before

    narrower = {key: value for key, value in HUBSPOT_MAPPING.items() if key != "company"}
    await hubspot.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping=narrower), metadata=hubspot.auth()
    )
    remapped = await run_job(hubspot, selection="changed")
    assert (remapped.total, remapped.counts.updated) == (120, 120)
    assert remapped.crm_calls == 2  # two upserts of 100 and 20


async def test_force_sends_unchanged_leads_anyway(hubspot: World) -> None:
    await connected(hubspot)
    lead_ids = await many_leads(hubspot, 30, prefix="forced")
    await run_job(hubspot, lead_ids=lead_ids)

    forced = await run_job(hubspot, lead_ids=lead_ids, force=True)

    assert (forced.counts.updated, forced.counts.unchanged, forced.crm_calls) == (30, 0, 1)


async def test_a_dry_run_job_writes_nothing_and_reports_each_lead(salesforce: World) -> None:
    await connected(salesforce)
    existing = salesforce.fake.add_contact({"Email": "known0@example.com", "LastName": "Known"})
    lead_ids = await many_leads(salesforce, 5, prefix="known")
    writes_before = len(salesforce.fake.write_calls())

    job = await run_job(salesforce, lead_ids=lead_ids, dry_run=True, policy="skip")

    assert job.dry_run
    assert (job.counts.would_skip, job.counts.would_create, job.counts.created) == (1, 4, 0)
    assert len(salesforce.fake.write_calls()) == writes_before
    results = {result.lead_id: result for result in await all_results(salesforce, job.id)}
    assert results[lead_ids[0]].outcome == "would_skip"
    assert results[lead_ids[0]].contact_id == existing
    lead = await salesforce.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_ids[0]), metadata=salesforce.auth())
    assert list(lead.sync_states) == [], "a dry run leaves no sync state"


async def test_some_leads_refused_fail_alone_with_their_own_reason(salesforce: World) -> None:
    await connected(salesforce)
    good = await many_leads(salesforce, 8, prefix="fine")
    bad_number = await salesforce.lead(email="count@example.com", name="Count", employees="a dozen")  # refused by us
    too_long = await salesforce.lead(email="long@example.com", name="L" * 100)  # refused by Salesforce, in the batch

    job = await run_job(salesforce, lead_ids=[*good, bad_number, too_long])

    assert (job.state, job.counts.created, job.counts.failed) == ("succeeded", 8, 2)
    results = {result.lead_id: result for result in await all_results(salesforce, job.id)}
    assert results[bad_number].error_reason == "FIELD_VALUE_INVALID"
    assert "dozen" in results[bad_number].message
    assert "too large" in results[too_long].message
    assert all(results[lead_id].outcome == "created" for lead_id in good)
    assert "2 leads failed" in job.error
    lead = await salesforce.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=bad_number), metadata=salesforce.auth())
    [state] = lead.sync_states
    assert (state.provider, state.status, state.error_reason, state.failures) == (
        "salesforce",
        "failed",
        "FIELD_VALUE_INVALID",
        1,
    )
    status = await salesforce.status.GetStatus(status_pb2.GetStatusRequest(), metadata=salesforce.auth("member"))
    org = status.integrations["salesforce"]
    assert (org.leads_synced, org.leads_failed, org.leads_pending, org.leads_unsynced) == (8, 2, 0, 0)


async def test_the_failed_selection_retries_only_the_leads_that_failed(hubspot: World) -> None:
    await connected(hubspot)
    good = await many_leads(hubspot, 5, prefix="ok")
    bad = await hubspot.lead(email="fixme@example.com", name="Fix", employees="many")
    await run_job(hubspot, lead_ids=[*good, bad])
    await hubspot.leads.CreateLead(  # a new lead that never synced is not "failed"
        leads_pb2.CreateLeadRequest(fields={"email": "later@example.com"}), metadata=hubspot.auth()
    )

    retry = await run_job(hubspot, selection="failed")

    assert (retry.total, retry.counts.failed) == (1, 1)
    [result] = await all_results(hubspot, retry.id)
    assert result.lead_id == bad


async def test_each_outcome_lands_in_the_leads_timeline_with_the_job_id(salesforce: World) -> None:
    await connected(salesforce)
    [lead_id] = await many_leads(salesforce, 1, prefix="timeline")

    job = await run_job(salesforce, lead_ids=[lead_id])

    timeline = await salesforce.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=salesforce.auth()
    )
    [event] = timeline.events
    assert (event.action, event.job_id, event.actor) == ("created", job.id, f"user-of-{salesforce.team}")
    lead = await salesforce.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=salesforce.auth())
    [state] = lead.sync_states
    assert (state.status, state.last_action, state.job_id, state.attempts) == ("synced", "created", job.id, 1)
    assert state.contact_id == event.contact_id


async def test_watching_a_job_streams_progress_per_batch_then_a_final_message(hubspot: World) -> None:
    hubspot.application.jobs.batch_leads = 100  # three batches
    await connected(hubspot)
    await many_leads(hubspot, 250, prefix="watch")
    started = await hubspot.sync.SyncLeads(job_request(hubspot, selection="all"), metadata=hubspot.auth("member"))

    updates = [
        update
        async for update in hubspot.sync.WatchSyncJob(
            sync_pb2.WatchSyncJobRequest(job_id=started.job.id), metadata=hubspot.auth("member")
        )
    ]

    assert [update.final for update in updates].count(True) == 1
    assert updates[-1].final
    assert updates[-1].job.state == "succeeded"
    processed = [update.job.processed for update in updates]
    assert processed == sorted(processed)
    assert processed[-1] == 250


async def test_cancelling_a_job_ends_the_leads_it_has_not_reached_as_cancelled(hubspot: World) -> None:
    hubspot.application.jobs.batch_leads = 100  # three batches, so that the cancel lands between two
    await connected(hubspot)
    await many_leads(hubspot, 300, prefix="cancel")
    hubspot.fake.timeout_next(1, delay=0.5, path="/crm/v3/objects/contacts/batch/upsert")  # the first batch is slow
    started = await hubspot.sync.SyncLeads(job_request(hubspot, selection="all"), metadata=hubspot.auth("member"))

    cancelled = await hubspot.sync.CancelSyncJob(
        sync_pb2.CancelSyncJobRequest(job_id=started.job.id), metadata=hubspot.auth("member")
    )
    job = await finished(hubspot, started.job.id)

    assert cancelled.job.state == "cancelled"
    assert job.state == "cancelled"
    assert job.counts.cancelled > 0
    assert job.counts.cancelled + job.counts.created == 300  # every lead has exactly one outcome
    assert len(hubspot.fake.contacts) == job.counts.created
    results = await all_results(hubspot, job.id, page_size=1000)
    cancelled_lead = next(result.lead_id for result in results if result.outcome == "cancelled")
    timeline = await hubspot.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=cancelled_lead), metadata=hubspot.auth()
    )
    assert [(e.action, e.job_id) for e in timeline.events] == [("cancelled", job.id)]
    again = await hubspot.sync.CancelSyncJob(
        sync_pb2.CancelSyncJobRequest(job_id=started.job.id), metadata=hubspot.auth("member")
    )
    assert "already" in again.message


async def test_another_teams_job_is_not_found(hubspot: World) -> None:
    await connected(hubspot)
    job = await run_job(hubspot, lead_ids=await many_leads(hubspot, 1, prefix="mine"))
    stranger = hubspot.auth("admin", team=f"{hubspot.team}-other")

    calls = [
        hubspot.sync.GetSyncJob(sync_pb2.GetSyncJobRequest(job_id=job.id), metadata=stranger),
        hubspot.sync.CancelSyncJob(sync_pb2.CancelSyncJobRequest(job_id=job.id), metadata=stranger),
        hubspot.sync.ListSyncJobResults(sync_pb2.ListSyncJobResultsRequest(job_id=job.id), metadata=stranger),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert (caught.value.code(), details_of(caught.value).reason) == (
            grpc.StatusCode.NOT_FOUND,
            "SYNC_JOB_NOT_FOUND",
        )
    listed = await hubspot.sync.ListSyncJobs(sync_pb2.ListSyncJobsRequest(), metadata=stranger)
    assert list(listed.jobs) == []


async def test_jobs_are_listed_newest_first_page_by_page(hubspot: World) -> None:
    await connected(hubspot)
    lead_ids = await many_leads(hubspot, 3, prefix="listed")
    made = [(await run_job(hubspot, lead_ids=[lead_id], dry_run=True)).id for lead_id in lead_ids]

    first = await hubspot.sync.ListSyncJobs(sync_pb2.ListSyncJobsRequest(page_size=2), metadata=hubspot.auth("member"))
    second = await hubspot.sync.ListSyncJobs(
        sync_pb2.ListSyncJobsRequest(page_size=2, page_token=first.next_page_token), metadata=hubspot.auth("member")
    )

    assert [job.id for job in [*first.jobs, *second.jobs]] == made[::-1]
    assert second.next_page_token == ""
    assert first.jobs[0].created_by == f"user-of-{hubspot.team}"


@pytest.mark.parametrize(
    ("options", "reason", "field"),
    [
        ({"selection": "everything"}, "SYNC_REQUEST_INVALID", "selection"),
        ({}, "SYNC_REQUEST_INVALID", "selection"),
        ({"selection": "all", "policy": "merge"}, "SYNC_REQUEST_INVALID", "duplicatePolicy"),
        ({"lead_ids": ["f" * 32], "selection": "all"}, "SYNC_REQUEST_INVALID", "selection"),
        ({"lead_ids": ["f" * 32] * 10_001}, "SYNC_REQUEST_INVALID", "leadIds"),
    ],
    ids=["unknown-selection", "nothing-selected", "unknown-policy", "ids-and-selection", "too-many-ids"],
)
async def test_a_job_request_that_cannot_run_is_refused_at_once_and_starts_nothing(
    hubspot: World, options: dict[str, object], reason: str, field: str
) -> None:
    await connected(hubspot)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hubspot.sync.SyncLeads(job_request(hubspot, **options), metadata=hubspot.auth("member"))  # type: ignore[arg-type]
    error = details_of(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert field in error.field_violations
    listed = await hubspot.sync.ListSyncJobs(sync_pb2.ListSyncJobsRequest(), metadata=hubspot.auth("member"))
    assert list(listed.jobs) == []


async def test_a_job_for_leads_of_another_team_is_refused_naming_them(hubspot: World) -> None:
    await connected(hubspot)
    theirs = (
        await hubspot.leads.CreateLead(
            leads_pb2.CreateLeadRequest(fields={"email": "x@example.com"}),
            metadata=hubspot.auth("member", team=f"{hubspot.team}-other"),
        )
    ).lead.id

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await hubspot.sync.SyncLeads(job_request(hubspot, lead_ids=[theirs]), metadata=hubspot.auth("member"))

    error = details_of(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "LEAD_NOT_FOUND")
    assert theirs in error.metadata["lead_ids"]


async def test_a_job_needs_a_connected_provider_and_a_saved_mapping(hubspot: World) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unconnected:
        await hubspot.sync.SyncLeads(job_request(hubspot, selection="all"), metadata=hubspot.auth("member"))
    await hubspot.connect()
    with pytest.raises(grpc.aio.AioRpcError) as unmapped:
        await hubspot.sync.SyncLeads(job_request(hubspot, selection="all"), metadata=hubspot.auth("member"))

    assert details_of(unconnected.value).reason == "PROVIDER_NOT_CONNECTED"
    assert details_of(unmapped.value).reason == "MAPPING_MISSING"
    assert unconnected.value.code() is unmapped.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_expired_credentials_fail_the_job_and_every_lead_it_had_left(hubspot: World) -> None:
    await connected(hubspot)
    lead_ids = await many_leads(hubspot, 150, prefix="expired")
    hubspot.fake.expire_tokens()
    hubspot.fake.fail_next(
        status=400,
        path="/oauth/v1/token",
        body={"error": "invalid_grant", "error_description": "refresh token is invalid, expired or revoked"},
    )

    job = await run_job(hubspot, lead_ids=lead_ids)

    assert (job.state, job.error_reason, job.counts.failed) == ("failed", "CREDENTIALS_EXPIRED", 150)
    assert hubspot.fake.contacts == {}
    timeline = await hubspot.leads.ListTimelineEvents(
        leads_pb2.ListTimelineEventsRequest(lead_id=lead_ids[-1]), metadata=hubspot.auth()
    )
    assert [(e.action, e.error_reason, e.job_id) for e in timeline.events] == [
        ("failed", "CREDENTIALS_EXPIRED", job.id)
    ]
    await hubspot.application.notifications.drain()
    summaries = [text for text in hubspot.slack if "Sync job" in text]
    assert len(summaries) == 1, "one summary per job, never a message per lead"


async def test_tokens_expiring_part_way_through_a_batch_are_refreshed_and_only_the_rest_is_written(
    crm: World,
) -> None:
    await connected(crm)
    lead_ids = await many_leads(crm, 450, prefix="midway")
    # The CRM's second batch call of the job finds the token expired (its first went through).
    crm.fake.fail_next(status=401, path=BATCH_WRITES[crm.kind], skip=1)

    job = await run_job(crm, lead_ids=lead_ids)

    assert (job.state, job.counts.created, job.counts.failed) == ("succeeded", 450, 0)
    results = await all_results(crm, job.id)
    assert {result.outcome for result in results} == {"created"}
    assert len({result.contact_id for result in results}) == 450, "no lead written twice"
    token_path = "/oauth/v1/token" if crm.kind == "hubspot" else "/services/oauth2/token"
    refreshes = [call for call in crm.fake.calls_to(token_path) if call.body.get("grant_type") == "refresh_token"]
    assert len(refreshes) == 1
    size = 100 if crm.kind == "hubspot" else 200
    writes = crm.fake.calls_to(BATCH_WRITES[crm.kind])
    assert len(writes) == -(-450 // size) + 1, "the refused call is sent again once, the others once each"
