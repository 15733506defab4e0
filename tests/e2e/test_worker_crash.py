"""A `crm-hub worker` killed with SIGKILL in the middle of a job, on PostgreSQL: after another worker starts, the
job resumes and every lead ends with exactly one outcome — none lost, no contact made twice. For both providers,
with each fake CRM served on a socket and the workers as real child processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from crm_hub_hubspot.fake import FakeHubSpot
from crm_hub_salesforce.fake import FakeSalesforce

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.testing import follow_consent
from crm_hub.testing.fakes import serving
from tests.e2e.test_hubspot_flow import MAPPING as HUBSPOT_MAPPING
from tests.e2e.test_salesforce_flow import MAPPING as SALESFORCE_MAPPING
from tests.support.app import JWT_SECRET, VAULT_KEY

LEADS = 1_500
REDIRECT = "http://127.0.0.1:9/oauth/callback"
#: Each write answers this much later, so the job is still running when its worker is killed.
WRITE_DELAY_SECONDS = 0.25


@dataclass
class Crm:
    kind: str
    fake: Any
    env: dict[str, str]
    mapping: dict[str, str]
    writes: str

    def child_environment(self, database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
        """The environment of a crm_hub child process (server or worker) using this CRM and database."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("HUBSPOT_", "SALESFORCE_"))}
        return {
            **inherited,
            **self.env,
            "DATABASE_URL": database_url,
            "SECRET_VAULT_KEY": VAULT_KEY,
            "JWT_SECRET": JWT_SECRET,
            "CRM_HUB_DATA_DIR": str(data_dir),
            "CRM_HUB_PLUGINS": f"crm-hub-{self.kind}",
            "CRM_HUB_LOG_FORMAT": "text",
            **extra,
        }

    def contact_ids_per_email(self) -> dict[str, list[str]]:
        if self.kind == "hubspot":
            contacts = [(c.properties.get("email", ""), c.id) for c in self.fake.contacts.values()]
        else:
            contacts = [(str(row.get("Email") or "").lower(), str(row["Id"])) for row in self.fake._live_contacts()]
        ids: dict[str, list[str]] = {}
        for email, contact_id in contacts:
            ids.setdefault(email, []).append(contact_id)
        return ids

    def contacts_per_email(self) -> dict[str, int]:
        return {email: len(ids) for email, ids in self.contact_ids_per_email().items()}


@contextlib.asynccontextmanager
async def crm_on_a_socket(kind: str) -> AsyncIterator[Crm]:
    if kind == "hubspot":
        fake: Any = FakeHubSpot(redirect_uri=REDIRECT)
        async with serving(fake) as url:
            env = {
                "HUBSPOT_CLIENT_ID": fake.client_id,
                "HUBSPOT_CLIENT_SECRET": fake.client_secret,
                "HUBSPOT_REDIRECT_URL": REDIRECT,
                "HUBSPOT_API_BASE_URL": url,
                "HUBSPOT_AUTHORIZE_URL": f"{url}/oauth/authorize",
            }
            yield Crm(kind, fake, env, HUBSPOT_MAPPING, "/crm/v3/objects/contacts/batch/upsert")
        return
    fake = FakeSalesforce(redirect_uri=REDIRECT)
    async with serving(fake) as url:  # the org's API is the same server: the token answer says so
        env = {
            "SALESFORCE_CLIENT_ID": fake.client_id,
            "SALESFORCE_CLIENT_SECRET": fake.client_secret,
            "SALESFORCE_REDIRECT_URL": REDIRECT,
            "SALESFORCE_LOGIN_URL": url,
        }
        yield Crm(kind, fake, env, SALESFORCE_MAPPING, "/services/data/v58.0/composite/sobjects")


@contextlib.contextmanager
def worker(environment: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`crm-hub worker` as a child process; stopped (SIGTERM, then SIGKILL) if still running at the end."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_hub", "worker", "--concurrency", "2"],
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def until(condition: Callable[[], Any], *, within: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := await condition():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within} s; workers' log:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["hubspot", "salesforce"])
async def test_a_worker_killed_mid_job_loses_and_duplicates_nothing_once_another_takes_over(
    database_url: str, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with crm_on_a_socket(kind) as crm:
        for name, value in crm.env.items():  # the plugins read their settings from the environment
            monkeypatch.setenv(name, value)
        queue = f"crash-{uuid.uuid4().hex[:10]}"
        environment = crm.child_environment(
            database_url, tmp_path, CRM_HUB_QUEUE=queue, CRM_HUB_WORKER_HEARTBEAT_SECONDS="1"
        )
        settings = Settings.from_env(environment)
        application = Application.from_settings(settings)  # this process only defers; the workers run the job
        log = tmp_path / "workers.log"
        try:
            team = f"team-{uuid.uuid4().hex[:10]}"
            caller = Caller(Principal(subject="ops", team_id=team, role=Role.ADMIN), request_id="crash-test")
            started = await application.connections.start_oauth(caller, kind)
            redirect = await follow_consent(started.auth_url)
            await application.connections.complete_oauth(caller, kind, code=redirect["code"], state=redirect["state"])
            await application.fields.save_mapping(caller, kind, crm.mapping)
            leads = [
                (await application.leads.create(caller, {"email": f"crash{n}@example.com", "name": f"Crash{n}"}))[0].id
                for n in range(LEADS)
            ]
            crm.fake.timeout_next(10_000, delay=WRITE_DELAY_SECONDS, path=crm.writes)
            job = await application.jobs.start(caller, provider=kind, selection="all")

            async def processed() -> int:
                view = await application.jobs.get(caller, job.id)
                return view.processed if view.processed >= LEADS // 5 else 0

            with worker(environment, log) as first:
                await until(processed, within=60, what="the first worker's progress", log=log)
                first.kill()  # SIGKILL, mid-job: a batch may be half written
                first.wait()
            killed_at = (await application.jobs.get(caller, job.id)).processed
            assert killed_at < LEADS, "the job was still running when its worker died"

            with worker(environment, log):

                async def done() -> bool:
                    return (await application.jobs.get(caller, job.id)).finished

                await until(done, within=90, what="the job's end on the second worker", log=log)

            final = await application.jobs.get(caller, job.id)
            assert (final.state, final.total, final.processed) == ("succeeded", LEADS, LEADS)
            assert final.counts.get("created", 0) + final.counts.get("updated", 0) == LEADS
            assert final.counts.get("failed", 0) == 0
            page = await application.jobs.results(caller, job.id, page_size=1000)
            results = list(page.results)
            while page.next_page_token:
                page = await application.jobs.results(caller, job.id, page_size=1000, page_token=page.next_page_token)
                results.extend(page.results)
            assert sorted(result.lead_id for result in results) == sorted(leads), "one outcome for every lead"
            per_email = crm.contacts_per_email()
            assert len(per_email) == LEADS
            assert set(per_email.values()) == {1}, "no lead's contact was made twice"
            contact_ids = {result.contact_id for result in results}
            assert len(contact_ids) == LEADS
        finally:
            await application.aclose()
