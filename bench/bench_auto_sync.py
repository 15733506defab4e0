"""Automatic sync: how soon a new lead is in the CRM at rest, and what a burst of 1,000 leads costs (figure 7 of
bench/RESULTS.md).

    .venv/bin/python -m bench.bench_auto_sync [--databases sqlite,postgresql]

crm_hub (`crm-hub serve`, and on PostgreSQL a `crm-hub worker`) with automatic sync on for HubSpot (policy
update), the fake HubSpot in its own process. At rest: leads posted one at a time, each timed from `CreateLead`
until `GetLead` shows it synced. A burst: 1,000 leads posted by 16 concurrent clients, timed until all are
synced, with the CRM requests the automatic jobs made — against the raw script sending the same 10 batch
upserts of 100 straight to the fake.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable

from bench.bench_jobs import service
from bench.harness import RawHubSpot, Team, database, fake_crm, grpc_channel, machine, median
from crm_hub.v1 import integrations_pb2, integrations_pb2_grpc, leads_pb2, sync_pb2

AT_REST = 20
BURST = 1_000


async def synced(team: Team, lead_id: str) -> bool:
    lead = await team.leads.GetLead(leads_pb2.GetLeadRequest(lead_id=lead_id), metadata=team.auth())
    return any(state.status == "synced" for state in lead.sync_states)


async def until(condition: Callable[[], Awaitable[bool]], *, every: float = 0.02, within: float = 300.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(every)
    raise TimeoutError(f"not within {within} s")


async def auto_jobs(team: Team) -> list[sync_pb2.SyncJob]:
    listed = await team.sync.ListSyncJobs(sync_pb2.ListSyncJobsRequest(page_size=500), metadata=team.auth())
    return [job for job in listed.jobs if job.selection == "auto"]


async def figure_7(kind: str) -> list[str]:
    with fake_crm("hubspot") as fake, database(kind) as url, service(kind, url, fake) as port:
        async with grpc_channel(port) as channel, RawHubSpot.connected(fake) as raw:
            team = Team(channel, "hubspot")
            await team.connect()
            await integrations_pb2_grpc.IntegrationsServiceStub(channel).UpdateIntegrationSettings(
                integrations_pb2.UpdateIntegrationSettingsRequest(
                    kind="hubspot", settings=integrations_pb2.IntegrationSettings(auto_sync=True)
                ),
                metadata=team.auth(),
            )
            latencies = []
            for n in range(AT_REST):
                started = time.perf_counter()
                fields = {"email": f"rest{n}@example.com", "name": "Rest"}
                created = await team.leads.CreateLead(leads_pb2.CreateLeadRequest(fields=fields), metadata=team.auth())
                await until(functools.partial(synced, team, created.lead.id))
                latencies.append(time.perf_counter() - started)
            before = {job.id for job in await auto_jobs(team)}

            started = time.perf_counter()
            await team.create_leads(BURST, "burst", concurrency=16)
            posted = time.perf_counter() - started

            async def burst_synced() -> bool:
                burst[:] = [job for job in await auto_jobs(team) if job.id not in before]
                return sum(job.counts.created for job in burst) >= BURST and all(j.finished_at.seconds for j in burst)

            burst: list[sync_pb2.SyncJob] = []
            await until(burst_synced)
            burst_seconds = time.perf_counter() - started
            calls = sum(job.crm_calls for job in burst)

            raw_started = time.perf_counter()
            emails = [f"raw-{uuid.uuid4().hex}@example.com" for _ in range(BURST)]
            await asyncio.gather(*(raw.upsert(emails[start : start + 100]) for start in range(0, BURST, 100)))
            raw_seconds = time.perf_counter() - raw_started
    return [
        f"| {kind} | a new lead at rest, intake to synced (p50 / max of {AT_REST}) | "
        f"{median(latencies):.2f} / {max(latencies):.2f} s | — | target ≤ 5 s |",
        f"| {kind} | a burst of {BURST:,} leads, 16 clients: posted / all synced | {posted:.1f} / "
        f"{burst_seconds:.1f} s in {len(burst)} jobs | {raw_seconds:.2f} s (10 upserts of 100) | |",
        f"| {kind} | the burst's CRM calls | {calls} ({calls / BURST:.3f} per lead) | 10 (0.010 per lead) | "
        "target ≤ 0.02 per lead |",
    ]


async def main(databases: list[str]) -> None:
    print(f"# {machine()}")
    print("| database | what | crm_hub | raw script | target |\n|---|---|---|---|---|", flush=True)
    for kind in databases:
        for row in await figure_7(kind):
            print(row, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    asyncio.run(main(args.databases.split(",")))
