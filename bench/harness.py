"""What the benchmarks share: databases, fake CRMs and crm_hub as child processes, a connected team, and the
raw reference — a minimal httpx client making the same CRM calls to the same fake.

Every benchmark runs crm_hub and its reference side by side in one run, alternating (A B A B), and reports
medians and their ratio: the machine is shared and noisy, so only ratios and medians mean anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import httpx

from crm_hub.rpc.auth import mint_token
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

JWT_SECRET = "bench-jwt-secret-that-is-long-enough-0123"  # noqa: S105 - a throwaway benchmark secret
VAULT_KEY = "bench-vault-key-that-is-long-enough-4567"
REDIRECT = "http://127.0.0.1:9/oauth/callback"
MAPPINGS = {
    "hubspot": {"email": "email", "name": "firstname", "company": "company"},
    "salesforce": {"email": "Email", "name": "LastName", "company": "Title"},
}
ADMIN_URL = os.environ.get("CRM_HUB_BENCH_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_PYTHON = sys.executable


def machine() -> str:
    """One line about where the numbers were taken."""
    cores = os.cpu_count()
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{platform.machine()}, {cores} cores, Python {platform.python_version()}, load average {load}"


# -- databases ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh, migrated database: an SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="crm-hub-bench-") as directory:
            url = f"sqlite:///{directory}/bench.db"
            _migrate(url)
            yield url
        return
    name = f"crm_hub_bench_{uuid.uuid4().hex[:10]}"
    _psql(f"CREATE DATABASE {name}")
    try:
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        _migrate(url)
        yield url
    finally:
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _psql(statement: str) -> None:
    subprocess.run(["psql", ADMIN_URL, "-q", "-v", "ON_ERROR_STOP=1", "-c", statement], check=True)  # noqa: S603,S607


def _migrate(url: str) -> None:
    subprocess.run(  # noqa: S603
        [_PYTHON, "-m", "crm_hub", "migrate"], env={**os.environ, "DATABASE_URL": url}, check=True, capture_output=True
    )


# -- child processes ----------------------------------------------------------------------------------------


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> int:
        """Resident memory of the process now, in KiB (Linux)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


@contextlib.contextmanager
def child(command: Sequence[str], env: Mapping[str, str], name: str) -> Iterator[Child]:
    log = Path(tempfile.mkstemp(prefix=f"crm-hub-bench-{name}-", suffix=".log")[1])
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: S603 - our own commands
            list(command), env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT
        )
    running = Child(process, log)
    try:
        yield running
    finally:
        running.stop()


def _wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := re.search(pattern, log.read_text(errors="replace")):
            return match
        if process.poll() is not None:
            raise RuntimeError(f"child exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"no {pattern!r} within {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class FakeCrm:
    kind: str
    url: str
    client_id: str
    client_secret: str
    process: Child

    @property
    def provider_env(self) -> dict[str, str]:
        if self.kind == "hubspot":
            return {
                "HUBSPOT_CLIENT_ID": self.client_id,
                "HUBSPOT_CLIENT_SECRET": self.client_secret,
                "HUBSPOT_REDIRECT_URL": REDIRECT,
                "HUBSPOT_API_BASE_URL": self.url,
                "HUBSPOT_AUTHORIZE_URL": f"{self.url}/oauth/authorize",
            }
        return {
            "SALESFORCE_CLIENT_ID": self.client_id,
            "SALESFORCE_CLIENT_SECRET": self.client_secret,
            "SALESFORCE_REDIRECT_URL": REDIRECT,
            "SALESFORCE_LOGIN_URL": self.url,
        }


@contextlib.contextmanager
def fake_crm(kind: str, *, latency: float = 0.0, rate_limit: int = 0) -> Iterator[FakeCrm]:
    """The provider's fake on a socket, in its own process. ``rate_limit`` 0: HubSpot's limit off."""
    client_id, client_secret = "bench-client", secrets.token_urlsafe(16)
    command = [_PYTHON, "-m", f"crm_hub_{kind}.fake", "--client-id", client_id, f"--client-secret={client_secret}"]
    command += ["--redirect-uri", REDIRECT, "--latency", str(latency), "--log-level", "warning"]
    if kind == "hubspot":
        command += ["--rate-limit", str(rate_limit)]
    else:
        command += ["--daily-limit", "10000000"]
    with child(command, {}, f"fake-{kind}") as process:
        url = _wait_for(process.log, r"listening on (http://\S+)", process.process).group(1)
        yield FakeCrm(kind, url, client_id, client_secret, process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def crm_hub_server(database_url: str, fake: FakeCrm, **env: str) -> Iterator[tuple[int, Child]]:
    """`crm-hub serve` in its own process, its provider pointed at ``fake``; its port and the process."""
    port = free_port()
    environment = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "SECRET_VAULT_KEY": VAULT_KEY,
        "CRM_HUB_GRPC_ADDRESS": f"127.0.0.1:{port}",
        "CRM_HUB_PLUGINS": f"crm-hub-{fake.kind}",
        "CRM_HUB_LOG_LEVEL": "WARNING",
        "CRM_HUB_DATA_DIR": tempfile.mkdtemp(prefix="crm-hub-bench-data-"),
        "HUBSPOT_RATE_LIMIT": "off",
        **fake.provider_env,
        **env,
    }
    with child([_PYTHON, "-m", "crm_hub", "serve"], environment, "server") as process:
        _wait_for_port(port, process)
        yield port, process


@contextlib.contextmanager
def crm_hub_worker(database_url: str, fake: FakeCrm, **env: str) -> Iterator[Child]:
    """`crm-hub worker` in its own process (PostgreSQL)."""
    environment = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "SECRET_VAULT_KEY": VAULT_KEY,
        "CRM_HUB_PLUGINS": f"crm-hub-{fake.kind}",
        "CRM_HUB_LOG_LEVEL": "WARNING",
        "CRM_HUB_DATA_DIR": tempfile.mkdtemp(prefix="crm-hub-bench-data-"),
        "HUBSPOT_RATE_LIMIT": "off",
        **fake.provider_env,
        **env,
    }
    with child([_PYTHON, "-m", "crm_hub", "worker"], environment, "worker") as process:
        yield process


def _wait_for_port(port: int, process: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.process.poll() is not None:
            raise RuntimeError(f"crm-hub exited:\n{process.log.read_text(errors='replace')[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"crm-hub did not listen on {port} within {timeout} s")


# -- a team, as a user sets it up ----------------------------------------------------------------------------


@dataclass
class Team:
    channel: grpc.aio.Channel
    kind: str
    team_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")

    def auth(self, role: str = "admin") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {mint_token(JWT_SECRET, team_id=self.team_id, role=role)}"),)

    @property
    def sync(self) -> sync_pb2_grpc.SyncServiceStub:
        return sync_pb2_grpc.SyncServiceStub(self.channel)

    @property
    def leads(self) -> leads_pb2_grpc.LeadsServiceStub:
        return leads_pb2_grpc.LeadsServiceStub(self.channel)

    async def connect(self) -> None:
        integrations = integrations_pb2_grpc.IntegrationsServiceStub(self.channel)
        started = await integrations.StartOAuth(
            integrations_pb2.StartOAuthRequest(kind=self.kind), metadata=self.auth()
        )
        query = await consent(started.auth_url)
        await integrations.CompleteOAuth(
            integrations_pb2.CompleteOAuthRequest(kind=self.kind, code=query["code"], state=query["state"]),
            metadata=self.auth(),
        )
        await fields_pb2_grpc.FieldsServiceStub(self.channel).SaveMapping(
            fields_pb2.SaveMappingRequest(kind=self.kind, mapping=MAPPINGS[self.kind]), metadata=self.auth()
        )

    async def create_leads(self, count: int, prefix: str, *, concurrency: int = 32) -> list[str]:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(n: int) -> str:
            async with semaphore:
                fields = {"email": f"{prefix}{n}@example.com", "name": f"Lead {n}", "company": "Bench"}
                created = await self.leads.CreateLead(leads_pb2.CreateLeadRequest(fields=fields), metadata=self.auth())
                return created.lead.id

        return list(await asyncio.gather(*(one(n) for n in range(count))))

    def sync_request(self, lead_id: str) -> sync_pb2.SyncLeadRequest:
        options = sync_pb2.SyncOptions(provider=self.kind, duplicate_policy="update")
        return sync_pb2.SyncLeadRequest(lead_id=lead_id, options=options)

    async def run_job(self, selection: str = "all", **options: Any) -> sync_pb2.SyncJob:
        request = sync_pb2.SyncLeadsRequest(
            options=sync_pb2.SyncLeadsOptions(
                provider=self.kind, duplicate_policy="update", selection=selection, **options
            )
        )
        started = await self.sync.SyncLeads(request, metadata=self.auth())
        last = started.job
        async for update in self.sync.WatchSyncJob(
            sync_pb2.WatchSyncJobRequest(job_id=started.job.id), metadata=self.auth()
        ):
            last = update.job
        return last


async def consent(auth_url: str) -> dict[str, str]:
    async with httpx.AsyncClient(follow_redirects=False) as client:
        response = await client.get(auth_url)
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {key: values[0] for key, values in query.items()}


@contextlib.asynccontextmanager
async def grpc_channel(port: int) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel


# -- the raw reference: the same CRM calls, nothing around them ----------------------------------------------


@dataclass
class RawHubSpot:
    """A minimal httpx client of the fake HubSpot: the physical reference."""

    client: httpx.AsyncClient
    token: str

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, fake: FakeCrm) -> AsyncIterator[RawHubSpot]:
        async with httpx.AsyncClient(base_url=fake.url, timeout=60) as client:
            query = await consent(
                f"{fake.url}/oauth/authorize?client_id={fake.client_id}&redirect_uri={REDIRECT}&state=raw"
                "&scope=crm.objects.contacts.write%20crm.objects.contacts.read%20crm.schemas.contacts.read"
            )
            answer = await client.post(
                "/oauth/v1/token",
                data={
                    "grant_type": "authorization_code",
                    "client_id": fake.client_id,
                    "client_secret": fake.client_secret,
                    "redirect_uri": REDIRECT,
                    "code": query["code"],
                },
            )
            answer.raise_for_status()
            yield cls(client, answer.json()["access_token"])

    async def upsert(self, emails: Sequence[str]) -> None:
        inputs = [
            {
                "id": email,
                "idProperty": "email",
                "properties": {"email": email, "firstname": "Lead", "company": "Bench"},
            }
            for email in emails
        ]
        response = await self.client.post(
            "/crm/v3/objects/contacts/batch/upsert",
            json={"inputs": inputs},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        response.raise_for_status()


# -- timing ---------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


async def concurrently(level: int, calls: list[Callable[[], Awaitable[object]]]) -> float:
    """Seconds for ``level`` callers to work through ``calls``, each taking the next as it finishes one."""
    queue = list(calls)
    started = time.perf_counter()

    async def caller() -> None:
        while queue:
            await queue.pop()()

    await asyncio.gather(*(caller() for _ in range(level)))
    return time.perf_counter() - started
