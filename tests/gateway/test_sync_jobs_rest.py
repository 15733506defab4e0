"""Sync jobs through the real Envoy: start one over REST, watch it as a stream of JSON lines (REST) and of
messages (native gRPC through the gateway), read it, its results and the list of jobs, and cancel one."""

from __future__ import annotations

import json
import uuid

import grpc
import httpx

from crm_hub.gateway import EnvoyGateway
from crm_hub.v1 import sync_pb2, sync_pb2_grpc
from tests.gateway.conftest import connect_memorycrm, headers
from tests.support.app import bearer


async def _team_with_leads(http: httpx.AsyncClient, count: int) -> tuple[str, list[str]]:
    team = f"team-{uuid.uuid4().hex[:10]}"
    await connect_memorycrm(http, team)
    saved = await http.post(
        "/integrations/memorycrm/mapping", json={"mapping": {"email": "email"}}, headers=headers(team)
    )
    assert saved.status_code == 200, saved.text
    lead_ids = []
    for n in range(count):
        created = await http.post(
            "/leads", json={"fields": {"email": f"rest{n}-{team}@example.com"}}, headers=headers(team)
        )
        lead_ids.append(created.json()["lead"]["id"])
    return team, lead_ids


async def test_a_job_started_over_rest_streams_its_progress_as_json_lines_to_its_end(http: httpx.AsyncClient) -> None:
    team, lead_ids = await _team_with_leads(http, 25)

    started = await http.post(
        "/crm/sync/leads",
        json={"provider": "memorycrm", "duplicatePolicy": "update", "selection": "all"},
        headers=headers(team, "member"),
    )
    assert started.status_code == 200, started.text
    job = started.json()["job"]
    assert (job["state"], job["total"], job["provider"], job["selection"]) in (
        ("queued", 25, "memorycrm", "all"),
        ("running", 25, "memorycrm", "all"),
    )

    lines = []
    async with http.stream("GET", f"/crm/sync/jobs/{job['id']}/watch", headers=headers(team, "member")) as watched:
        assert watched.status_code == 200
        assert watched.headers["content-type"] == "application/json"  # as the OpenAPI document says
        async for line in watched.aiter_lines():
            if line.strip():
                lines.append(json.loads(line))
    assert lines[-1]["final"] is True
    assert [line["final"] for line in lines].count(True) == 1
    final = lines[-1]["job"]
    assert (final["state"], final["processed"], final["counts"]["created"]) == ("succeeded", 25, 25)

    read = (await http.get(f"/crm/sync/jobs/{job['id']}", headers=headers(team, "member"))).json()["job"]
    assert read["counts"]["created"] == 25
    results = (
        await http.get(f"/crm/sync/jobs/{job['id']}/results?pageSize=10", headers=headers(team, "member"))
    ).json()
    assert len(results["results"]) == 10
    assert results["nextPageToken"]
    assert {result["leadId"] for result in results["results"]} <= set(lead_ids)
    failed = (await http.get(f"/crm/sync/jobs/{job['id']}/results?outcome=failed", headers=headers(team))).json()
    assert failed["results"] == []
    listed = (await http.get("/crm/sync/jobs", headers=headers(team, "member"))).json()
    assert [listed_job["id"] for listed_job in listed["jobs"]] == [job["id"]]


async def test_watching_a_job_works_over_native_grpc_through_the_gateway(
    http: httpx.AsyncClient, gateway: EnvoyGateway
) -> None:
    team, lead_ids = await _team_with_leads(http, 3)
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        sync = sync_pb2_grpc.SyncServiceStub(channel)
        options = sync_pb2.SyncLeadsOptions(provider="memorycrm", lead_ids=lead_ids)
        started = await sync.SyncLeads(sync_pb2.SyncLeadsRequest(options=options), metadata=bearer(team, "member"))
        updates = [
            update
            async for update in sync.WatchSyncJob(
                sync_pb2.WatchSyncJobRequest(job_id=started.job.id), metadata=bearer(team, "member")
            )
        ]
    assert updates[-1].final
    assert updates[-1].job.counts.created == 3


async def test_cancelling_over_rest_answers_with_the_job_and_a_message(http: httpx.AsyncClient) -> None:
    team, lead_ids = await _team_with_leads(http, 2)
    started = await http.post(
        "/crm/sync/leads?dryRun=true",
        json={"provider": "memorycrm", "leadIds": lead_ids},
        headers=headers(team, "member"),
    )
    job_id = started.json()["job"]["id"]
    assert started.json()["job"]["dryRun"] is True

    cancelled = await http.post(f"/crm/sync/jobs/{job_id}/cancel", json={}, headers=headers(team, "member"))

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["job"]["state"] in ("cancelled", "succeeded")
    assert cancelled.json()["message"]


async def test_another_teams_job_is_a_json_404_and_a_bad_selection_a_json_400(http: httpx.AsyncClient) -> None:
    missing = await http.get(f"/crm/sync/jobs/{uuid.uuid4().hex}", headers=headers("team-nobody", "member"))
    assert (missing.status_code, missing.json()["reason"], missing.json()["success"]) == (
        404,
        "SYNC_JOB_NOT_FOUND",
        False,
    )
    watched = await http.get(f"/crm/sync/jobs/{uuid.uuid4().hex}/watch", headers=headers("team-nobody", "member"))
    assert watched.status_code == 404
    team, _ = await _team_with_leads(http, 0)
    bad = await http.post(
        "/crm/sync/leads", json={"provider": "memorycrm", "selection": "everything"}, headers=headers(team, "member")
    )
    assert (bad.status_code, bad.json()["reason"]) == (400, "SYNC_REQUEST_INVALID")
    assert "selection" in bad.text
