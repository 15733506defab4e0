"""The fleet: two `crm-hub serve` replicas behind the real Envoy and two `crm-hub worker` processes on one
PostgreSQL, automatic sync on for a HubSpot and a Salesforce fake served on sockets. Eight REST clients post
2,000 leads while the worker running a batch is killed with SIGKILL and started again, one replica is restarted
(SIGTERM, then a new process on its port), and every access token both CRMs issued expires. Then every lead is
in each CRM exactly once — its sync state, its timeline, the jobs' counts and the CRM's contacts agree — in at
most 0.02 CRM calls per lead, with one token refresh per CRM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from crm_hub.gateway import EnvoyGateway
from crm_hub.rpc.auth import mint_token
from crm_hub.testing import follow_consent
from tests.e2e.test_server_crash import free_port
from tests.e2e.test_worker_crash import Crm, crm_on_a_socket
from tests.gateway.conftest import gateway_settings
from tests.support.app import JWT_SECRET

LEADS = 2_000
CLIENTS = 8
#: Every CRM write answers this much later, as a real CRM's does: a batch is in flight when its worker dies.
WRITE_LATENCY_SECONDS = 0.1
#: The issue's bound on what automatic sync may cost the CRM's API allowance.
MAX_CALLS_PER_LEAD = 0.02
OAUTH_PATHS = ("/oauth", "/services/oauth2")
TOKEN_PATHS = {"hubspot": "/oauth/v1/token", "salesforce": "/services/oauth2/token"}


@dataclass
class Child:
    """A crm_hub process that can be stopped, killed and started again with the same command."""

    name: str
    arguments: list[str]
    environment: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    #: procrastinate's ids of this process's worker, one per start (workers only).
    worker_ids: list[int] = field(default_factory=list)

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(  # noqa: S603 - our own command, the test's arguments
                [sys.executable, "-m", "crm_hub", *self.arguments],
                env=self.environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    async def stop(self, grace: float = 40.0) -> int:
        """SIGTERM, and the exit status once it stopped (killed if it did not within ``grace`` seconds)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def tail(self) -> str:
        return f"--- {self.name} ---\n{self.log.read_text(errors='replace')[-2500:]}"


async def until(condition: Callable[[], Awaitable[Any]], *, within: float, what: str, children: list[Child]) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := await condition():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {within} s\n" + "\n".join(c.tail() for c in children))


async def serving(port: int) -> bool:
    """Whether the replica on ``port`` answers its gRPC health check with SERVING."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.aio.AioRpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


@contextlib.asynccontextmanager
async def stopped_at_the_end(children: list[Child]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await asyncio.gather(*(child.stop(grace=20) for child in children if child.process is not None))


async def connect_with_auto_sync(http: httpx.AsyncClient, crm: Crm, admin: dict[str, str]) -> None:
    """The REST walk of a team connecting a CRM: OAuth, a mapping, automatic sync on."""
    started = await http.get(f"/integrations/{crm.kind}/start", headers=admin)
    assert started.status_code == 200, started.text
    redirect = await follow_consent(started.json()["authUrl"])
    callback = await http.post(
        f"/integrations/{crm.kind}/callback", json={"code": redirect["code"], "state": redirect["state"]}, headers=admin
    )
    assert callback.status_code == 200, callback.text
    mapping = await http.post(f"/integrations/{crm.kind}/mapping", json={"mapping": crm.mapping}, headers=admin)
    assert mapping.status_code == 200, mapping.text
    settings = await http.patch(f"/integrations/{crm.kind}/settings", json={"autoSync": True}, headers=admin)
    assert (settings.status_code, settings.json()["settings"]["autoSync"]) == (200, True), settings.text


async def new_worker_id(database: AsyncEngine, above: int) -> int | None:
    async with database.connect() as connection:
        found = await connection.scalar(
            text("SELECT min(id) FROM procrastinate_workers WHERE id > :above"), {"above": above}
        )
    return int(found) if found is not None else None


async def latest_worker_id(database: AsyncEngine) -> int:
    async with database.connect() as connection:
        return int(await connection.scalar(text("SELECT coalesce(max(id), 0) FROM procrastinate_workers")) or 0)


async def start_worker(worker: Child, database: AsyncEngine, children: list[Child]) -> None:
    """Start ``worker`` and learn its procrastinate worker id (the first registered after the start)."""
    above = await latest_worker_id(database)
    worker.start()
    worker.worker_ids.append(
        await until(lambda: new_worker_id(database, above), within=30, what=f"{worker.name}'s start", children=children)
    )


async def worker_running_a_batch(database: AsyncEngine, queue: str, workers: list[Child]) -> Child | None:
    async with database.connect() as connection:
        running = (
            await connection.scalars(
                text(
                    "SELECT worker_id FROM procrastinate_jobs WHERE queue_name = :queue AND status = 'doing' "
                    "AND task_name = 'crm_hub.sync_batch' AND worker_id IS NOT NULL"
                ),
                {"queue": queue},
            )
        ).all()
    return next((worker for worker in workers for worker_id in running if worker_id in worker.worker_ids), None)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_fleet_syncs_every_lead_once_to_each_crm_through_a_killed_worker_a_restarted_replica_and_expired_tokens(
    database_url: str, tmp_path: Path, envoy_binary: Path
) -> None:
    started_at = time.monotonic()
    async with crm_on_a_socket("hubspot") as hubspot, crm_on_a_socket("salesforce") as salesforce:
        crms = {"hubspot": hubspot, "salesforce": salesforce}
        queue = f"fleet-{uuid.uuid4().hex[:10]}"
        environment = hubspot.child_environment(
            database_url,
            tmp_path,
            **salesforce.env,
            CRM_HUB_PLUGINS="crm-hub-hubspot,crm-hub-salesforce",
            CRM_HUB_QUEUE=queue,
            CRM_HUB_WORKER_HEARTBEAT_SECONDS="1",  # a killed worker's batch is queued again within ~4 s
            CRM_HUB_DRAIN_SECONDS="1",  # a stopping replica leaves Envoy's rotation (checks every 0.25 s) first
        )
        ports = [free_port(), free_port()]
        replicas = [
            Child(
                f"replica-{n}",
                ["serve"],
                {**environment, "CRM_HUB_GRPC_ADDRESS": f"127.0.0.1:{port}"},
                tmp_path / f"replica-{n}.log",
            )
            for n, port in enumerate(ports)
        ]
        workers = [
            Child(f"worker-{n}", ["worker", "--concurrency", "2"], environment, tmp_path / f"worker-{n}.log")
            for n in range(2)
        ]
        children = [*replicas, *workers]
        database = create_async_engine(database_url)
        team = f"fleet-{uuid.uuid4().hex[:10]}"
        admin = {"authorization": f"Bearer {mint_token(JWT_SECRET, team_id=team, role='admin')}"}
        member = {"authorization": f"Bearer {mint_token(JWT_SECRET, team_id=team, role='member')}"}
        try:
            async with stopped_at_the_end(children):
                for replica in replicas:
                    replica.start()
                for worker in workers:
                    await start_worker(worker, database, children)
                for port in ports:
                    await until(lambda port=port: serving(port), within=30, what="a replica's start", children=children)
                async with (
                    EnvoyGateway(gateway_settings(*ports), envoy=envoy_binary) as gateway,
                    httpx.AsyncClient(base_url=gateway.url, timeout=30, trust_env=False) as http,
                ):
                    for crm in crms.values():
                        await connect_with_auto_sync(http, crm, admin)
                        crm.fake.timeout_next(100_000, delay=WRITE_LATENCY_SECONDS, path=crm.writes)

                    lead_ids: dict[str, str] = {}
                    answers_retried = 0

                    async def post_leads(numbers: range) -> None:
                        nonlocal answers_retried
                        async with httpx.AsyncClient(base_url=gateway.url, timeout=30, trust_env=False) as client:
                            for n in numbers:
                                # A client retries what a restart refused; the externalId makes a retry safe.
                                body = {
                                    "fields": {"email": f"fleet{n}@example.com", "name": f"Fleet{n}"},
                                    "externalId": f"fleet-{n}",
                                }
                                for attempt in range(30):
                                    try:
                                        response = await client.post("/leads", json=body, headers=member)
                                    except httpx.TransportError:
                                        response = None
                                    if response is not None and response.status_code == 200:
                                        break
                                    assert response is None or response.status_code in (502, 503, 504), response.text
                                    answers_retried += 1
                                    await asyncio.sleep(0.05 * (attempt + 1))
                                else:
                                    raise AssertionError(f"lead {n} was never accepted")
                                lead_ids[f"fleet{n}@example.com"] = response.json()["lead"]["id"]

                    async def posted(at_least: float) -> bool:
                        return len(lead_ids) >= at_least

                    async def chaos() -> None:
                        await until(lambda: posted(LEADS * 0.2), within=60, what="the first leads", children=children)
                        victim = await until(
                            lambda: worker_running_a_batch(database, queue, workers),
                            within=30,
                            what="a batch running on a worker",
                            children=children,
                        )
                        victim.kill()  # SIGKILL, mid-batch
                        await start_worker(victim, database, children)

                        await until(lambda: posted(LEADS * 0.45), within=60, what="more leads", children=children)
                        restarted = replicas[1]
                        assert await restarted.stop() == 0, restarted.tail()  # drains, then exits cleanly
                        restarted.start()
                        await until(
                            lambda: serving(ports[1]), within=30, what="the replica's restart", children=children
                        )

                        await until(lambda: posted(LEADS * 0.7), within=60, what="yet more leads", children=children)
                        hubspot.fake.expire_tokens()
                        salesforce.fake.expire_sessions()

                    share = LEADS // CLIENTS
                    await asyncio.gather(
                        chaos(), *(post_leads(range(n * share, (n + 1) * share)) for n in range(CLIENTS))
                    )
                    assert len(lead_ids) == LEADS

                    async def all_synced() -> bool:
                        async with database.connect() as connection:
                            synced = await connection.scalar(
                                text(
                                    "SELECT count(*) FROM lead_sync_states WHERE team_id = :team AND status = 'synced'"
                                ),
                                {"team": team},
                            )
                            unfinished = await connection.scalar(
                                text("SELECT count(*) FROM sync_jobs WHERE team_id = :team AND finished_at IS NULL"),
                                {"team": team},
                            )
                        return synced == LEADS * len(crms) and unfinished == 0

                    await until(all_synced, within=60, what="every lead synced, every job finished", children=children)
                    jobs = (await http.get("/crm/sync/jobs", params={"pageSize": 500}, headers=member)).json()["jobs"]
                    status = (await http.get("/integrations/status", headers=member)).json()
                exits = await asyncio.gather(*(child.stop() for child in children))
                assert exits == [0] * len(children), "every replica and worker stops cleanly on SIGTERM"

            async with database.connect() as connection:
                states = (
                    await connection.execute(
                        text(
                            "SELECT l.fields->>'email', s.provider, s.status, s.contact_id FROM leads l "
                            "JOIN lead_sync_states s ON s.lead_id = l.id WHERE l.team_id = :team"
                        ),
                        {"team": team},
                    )
                ).all()
                writes = (
                    await connection.execute(
                        text(
                            "SELECT l.fields->>'email', e.provider, e.action, e.contact_id FROM timeline_events e "
                            "JOIN leads l ON l.id = e.lead_id "
                            "WHERE e.team_id = :team AND e.action IN ('created', 'updated') AND NOT e.dry_run"
                        ),
                        {"team": team},
                    )
                ).all()
        finally:
            await database.dispose()

        for kind, crm in crms.items():
            in_crm = crm.contact_ids_per_email()
            fleet_emails = {email for email in in_crm if email.startswith("fleet")}
            assert fleet_emails == set(lead_ids), f"{kind}: every lead has a contact, and nothing else was made"
            assert all(len(in_crm[email]) == 1 for email in lead_ids), f"{kind}: no lead's contact was made twice"
            recorded = {
                email: contact for email, provider, state, contact in states if provider == kind and state == "synced"
            }
            assert recorded == {email: ids[0] for email, ids in in_crm.items()}, (
                f"{kind}: sync states name the contacts"
            )
            written = [(email, action, contact) for email, provider, action, contact in writes if provider == kind]
            assert sorted(written) == sorted((email, "created", in_crm[email][0]) for email in lead_ids), (
                f"{kind}: one timeline entry per lead, for the one contact written"
            )
            kind_jobs = [job for job in jobs if job["provider"] == kind]
            assert {job["state"] for job in kind_jobs} == {"succeeded"}
            assert sum(job["counts"].get("created", 0) for job in kind_jobs) == LEADS
            api_calls = [call for call in crm.fake.calls_to() if not call.path.startswith(OAUTH_PATHS)]
            assert len(api_calls) / LEADS <= MAX_CALLS_PER_LEAD, (
                f"{kind}: {len(api_calls)} CRM calls for {LEADS} leads in {len(kind_jobs)} jobs"
            )
            # Counted when granted: a worker on the shared test database may also try a leftover job of another
            # test's team here, whose refresh this fake refuses.
            refreshes = [
                call
                for call in crm.fake.calls_to(TOKEN_PATHS[kind])
                if call.body.get("grant_type") == "refresh_token" and call.status == 200
            ]
            assert len(refreshes) == 1, f"{kind}: one refresh for the whole fleet, not {len(refreshes)}"
            assert status["integrations"][kind]["connected"] is True
        elapsed = time.monotonic() - started_at
        print(
            f"fleet: {LEADS} leads, {answers_retried} answers retried by clients, "
            + ", ".join(
                f"{kind} {len([c for c in crm.fake.calls_to() if not c.path.startswith(OAUTH_PATHS)])} calls"
                for kind, crm in crms.items()
            )
            + f", {elapsed:.1f} s"
        )
        assert elapsed < 120, f"the fleet test took {elapsed:.0f} s"
