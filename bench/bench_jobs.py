"""Sync jobs: CRM calls per lead, bulk leads/s against a raw script, memory of a big job, a job under HubSpot's
real rate limit (figures 1, 2, 5 and 6 of bench/RESULTS.md).

    .venv/bin/python -m bench.bench_jobs [--figures 1,2,5,6] [--databases sqlite,postgresql]

Figure 1 counts the requests each fake CRM receives for 10,000 leads per policy, in this process. The others
run crm_hub as `crm-hub serve` (on PostgreSQL with a `crm-hub worker` too) and the fake in their own processes;
the raw reference is a minimal httpx client sending the same batch upserts of 100 to the same fake.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
from crm_hub_hubspot.fake import FakeHubSpot
from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce
from sqlalchemy import insert

from bench.harness import (
    MAPPINGS,
    RawHubSpot,
    Team,
    crm_hub_server,
    crm_hub_worker,
    database,
    fake_crm,
    grpc_channel,
    machine,
    median,
)
from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.hookspecs import hookimpl
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.queue import InProcessQueue
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import Database, TeamRepository, new_id, normalize_database_url, upgrade, utcnow
from crm_hub.storage.models import Lead
from crm_hub.testing import follow_consent

LEADS = 10_000


def lead_rows(team_id: str, count: int, prefix: str) -> list[dict[str, object]]:
    now = utcnow()
    return [
        {
            "id": new_id(),
            "team_id": team_id,
            "fields": {"email": f"{prefix}{n}@example.com", "name": f"Lead {n}", "company": "Bench"},
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]


async def insert_leads(url: str, team_id: str, count: int, prefix: str) -> None:
    """Leads straight into the database: intake is not what these figures measure."""
    database = Database(normalize_database_url(url, data_dir=Path(tempfile.gettempdir())))
    try:
        async with database.session() as session:
            await TeamRepository(session).ensure(team_id)
            rows = lead_rows(team_id, count, prefix)
            for start in range(0, len(rows), 1000):
                await session.execute(insert(Lead.__table__), rows[start : start + 1000])  # type: ignore[arg-type]
    finally:
        await database.close()


# -- figure 1: CRM calls per lead -------------------------------------------------------------------------


class _Plugin:
    def __init__(self, provider: CrmProvider) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, register: object) -> None:
        register(self.provider)  # type: ignore[operator]


@contextlib.asynccontextmanager
async def in_process(kind: str) -> AsyncIterator[tuple[Application, object, Caller]]:
    """crm_hub in this process on an SQLite file, its provider on the fake through ASGI; a connected caller."""
    with tempfile.TemporaryDirectory(prefix="crm-hub-bench-") as directory:
        url = normalize_database_url(None, data_dir=Path(directory))
        await upgrade(url)
        if kind == "hubspot":
            fake: object = FakeHubSpot(rate_limit=10**9)
            provider: CrmProvider = fake.provider()  # type: ignore[attr-defined]
        else:
            fake = FakeSalesforce(redirect_uri="https://bench.invalid/callback", daily_limit=10**9)
            provider = SalesforceProvider(
                settings=SalesforceSettings(
                    client_id=fake.client_id,  # type: ignore[attr-defined]
                    client_secret=fake.client_secret,  # type: ignore[attr-defined]
                    redirect_url="https://bench.invalid/callback",
                    login_url="https://login.salesforce.invalid",
                ),
                transport=httpx.ASGITransport(fake.app),  # type: ignore[attr-defined]
            )
        host = PluginHost(load_entry_points=False, load_default_plugins=False)
        host.register(_Plugin(provider), name=f"crm-hub-{kind}")
        settings = Settings(database_url=url, data_dir=Path(directory), jwt_secret="b" * 40, secret_vault_key="v" * 40)
        application = Application.from_settings(settings, plugins=host)
        caller = Caller(Principal(subject="bench", team_id=f"bench-{uuid.uuid4().hex[:8]}", role=Role.ADMIN), "bench")
        started = await application.connections.start_oauth(caller, kind)
        redirect = await follow_consent(started.auth_url, transport=httpx.ASGITransport(fake.app))  # type: ignore[attr-defined]
        await application.connections.complete_oauth(caller, kind, code=redirect["code"], state=redirect["state"])
        await application.fields.save_mapping(caller, kind, MAPPINGS[kind])
        try:
            yield application, fake, caller
        finally:
            await application.aclose()


async def calls_per_lead(kind: str, policy: str, *, existing: int, dry_run: bool = False) -> tuple[int, int]:
    async with in_process(kind) as (application, fake, caller):
        url = application.database.url
        await insert_leads(url, caller.team_id, LEADS, "calls")
        for n in range(existing):  # contacts the CRM has already, for half the leads
            contact = (
                {"email": f"calls{n}@example.com"}
                if kind == "hubspot"
                else {"Email": f"calls{n}@example.com", "LastName": "X"}
            )
            fake.add_contact(contact)  # type: ignore[attr-defined]
        before = len(fake.calls)  # type: ignore[attr-defined]
        job = await application.jobs.start(
            caller, provider=kind, duplicate_policy=policy, selection="all", dry_run=dry_run
        )
        assert isinstance(application.jobs.queue, InProcessQueue)
        await application.jobs.queue.idle()
        done = await application.jobs.get(caller, job.id)
        first = len(fake.calls) - before  # type: ignore[attr-defined]
        assert done.processed == LEADS, done
        assert done.crm_calls == first, (done.crm_calls, first)
        before = len(fake.calls)  # type: ignore[attr-defined]
        again = await application.jobs.start(caller, provider=kind, duplicate_policy=policy, selection="changed")
        await application.jobs.queue.idle()
        rerun = len(fake.calls) - before  # type: ignore[attr-defined]
        assert again.total == 0 or dry_run or policy == "create_new"
        return first, rerun


async def figure_1() -> list[str]:
    rows = [
        "| provider | policy | CRM contacts beforehand | CRM calls for 10,000 leads | per lead "
        "| a re-run of `changed` |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(rows), flush=True)
    cases = [
        ("update", 0, False),
        ("update", LEADS // 2, False),
        ("skip", LEADS // 2, False),
        ("create_new", 0, False),
        ("update", LEADS // 2, True),
    ]
    for kind in ("hubspot", "salesforce"):
        for policy, existing, dry_run in cases:
            calls, rerun = await calls_per_lead(kind, policy, existing=existing, dry_run=dry_run)
            label = f"{policy} (dry run)" if dry_run else policy
            rows.append(f"| {kind} | {label} | {existing:,} | {calls} | {calls / LEADS:.4f} | {rerun} calls |")
            print(rows[-1], flush=True)
    return rows


# -- figures 2, 5, 6: through the API, against the raw script ---------------------------------------------


@contextlib.contextmanager
def service(kind: str, url: str, fake: object, **env: str) -> Iterator[int]:
    """`crm-hub serve` (and on PostgreSQL a `crm-hub worker`): the gRPC port."""
    with crm_hub_server(url, fake, **env) as (port, _server):  # type: ignore[arg-type]
        if kind == "postgresql":
            with crm_hub_worker(url, fake, **env):  # type: ignore[arg-type]
                yield port
        else:
            yield port


async def job_seconds(team: Team, url: str, count: int, prefix: str) -> tuple[float, object]:
    await insert_leads(url, team.team_id, count, prefix)
    started = time.perf_counter()
    job = await team.run_job("unsynced")
    return time.perf_counter() - started, job


async def raw_seconds(raw: RawHubSpot, count: int) -> float:
    prefix = uuid.uuid4().hex[:8]
    started = time.perf_counter()
    for first in range(0, count, 100):
        await raw.upsert([f"raw{prefix}-{n}@example.com" for n in range(first, min(first + 100, count))])
    return time.perf_counter() - started


async def figure_2(kind: str, rounds: int = 2, latency: float = 0.0) -> str:
    with (
        fake_crm("hubspot", latency=latency) as fake,
        database(kind) as url,
        service(kind, url, fake, HUBSPOT_RATE_LIMIT="off") as port,
    ):
        async with grpc_channel(port) as channel, RawHubSpot.connected(fake) as raw:
            team = Team(channel, "hubspot")
            await team.connect()
            ours, theirs = [], []
            for n in range(rounds):
                seconds, job = await job_seconds(team, url, LEADS, f"bulk{n}-")
                assert job.counts.created == LEADS, job  # type: ignore[attr-defined]
                ours.append(LEADS / seconds)
                theirs.append(LEADS / await raw_seconds(raw, LEADS))
    ratio = median(ours) / median(theirs)
    crm = f"the CRM answering in {latency * 1000:.0f} ms" if latency else "an instant CRM"
    return (
        f"| {kind} | 10,000 leads, policy update, HubSpot, {crm} | {median(ours):,.0f} leads/s | "
        f"{median(theirs):,.0f} leads/s | {ratio:.2f}x |"
    )


async def figure_5(leads: int = 100_000) -> str:
    """Peak RSS of the server while it runs a big job (SQLite: the server runs its jobs itself)."""
    with (
        fake_crm("hubspot") as fake,
        database("sqlite") as url,
        crm_hub_server(url, fake, HUBSPOT_RATE_LIMIT="off") as (port, server),
    ):
        async with grpc_channel(port) as channel:
            team = Team(channel, "hubspot")
            await team.connect()
            await insert_leads(url, team.team_id, leads, "memory")
            await asyncio.sleep(1)
            idle = server.rss_kib()
            peak = idle
            running = asyncio.create_task(team.run_job("all"))
            while not running.done():
                peak = max(peak, server.rss_kib())
                await asyncio.sleep(0.1)
            job = running.result()
            assert job.processed == leads, job
    return (
        f"| sqlite | a {leads:,}-lead job: the server's resident memory | idle {idle / 1024:.0f} MiB, "
        f"peak {peak / 1024:.0f} MiB | +{(peak - idle) / 1024:.0f} MiB above idle | target ≤ +100 MiB |"
    )


async def figure_6(kind: str) -> str:
    """A 10,000-lead job under HubSpot's real limit: the fake refuses the 111th request in any 10 s."""
    with (
        fake_crm("hubspot", rate_limit=110) as fake,
        database(kind) as url,
        service(kind, url, fake, HUBSPOT_RATE_LIMIT="110/10s") as port,
    ):
        async with grpc_channel(port) as channel, RawHubSpot.connected(fake) as raw:
            team = Team(channel, "hubspot")
            await team.connect()
            await asyncio.sleep(10)  # the connect's requests out of the fake's window
            seconds, job = await job_seconds(team, url, LEADS, "limited-")
            await asyncio.sleep(10)
            reference = await raw_seconds(raw, LEADS)
    calls = job.crm_calls  # type: ignore[attr-defined]
    return (
        f"| {kind} | 10,000 leads under 110 requests per 10 s | {seconds:.1f} s, {calls} requests, no 429 needed | "
        f"{reference:.1f} s (all 100 upserts at once, the whole window's allowance) | target ≤ 15 s |"
    )


async def main(figures: set[str], databases: list[str]) -> None:
    print(f"# {machine()}", flush=True)
    if "1" in figures:
        await figure_1()
    if "2" in figures:
        print("| database | what | crm_hub | raw script | ratio |\n|---|---|---|---|---|", flush=True)
        for kind in databases:
            print(await figure_2(kind), flush=True)
        for kind in databases:  # a CRM as slow as a real one: HubSpot takes a few hundred ms per batch
            print(await figure_2(kind, rounds=1, latency=0.2), flush=True)
    if "5" in figures:
        print(await figure_5(), flush=True)
    if "6" in figures:
        for kind in databases:
            print(await figure_6(kind), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", default="1,2,5,6")
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    asyncio.run(main(set(args.figures.split(",")), args.databases.split(",")))
