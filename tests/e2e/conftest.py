"""The whole service with a real provider plugin and its fake CRM, over a real gRPC channel."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from crm_hub_hubspot.fake import FakeHubSpot
from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.core.retry import RetryPolicy
from crm_hub.default_plugins.slack import SlackNotifier
from crm_hub.hookspecs import hookimpl
from crm_hub.notifications import Notifier
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.testing import follow_consent
from crm_hub.v1 import (
    fields_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    leads_pb2,
    leads_pb2_grpc,
    status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)
from tests.support.app import JWT_SECRET, VAULT_KEY, Metadata, bearer


class _Register:
    def __init__(self, provider: CrmProvider, notifier: Notifier) -> None:
        self.provider = provider
        self.notifier = notifier

    @hookimpl
    def register_providers(self, register: Callable[[CrmProvider], None]) -> None:
        register(self.provider)

    @hookimpl
    def register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        register(self.notifier)


SALESFORCE_REDIRECT = "https://crm-hub.invalid/oauth/salesforce/callback"
SLACK_WEBHOOK = "https://hooks.slack.invalid/services/T0/B0/HOOKSECRET"


def slack_recorder(received: list[str]) -> SlackNotifier:
    """The built-in Slack notifier, posting to a webhook that records each message's text."""

    async def webhook(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content)["text"])
        return httpx.Response(200, text="ok")

    return SlackNotifier(SLACK_WEBHOOK, transport=httpx.MockTransport(webhook))


@dataclass
class World:
    """A running crm_hub, a fake CRM behind its provider, and one team's view of it."""

    application: Application
    channel: grpc.aio.Channel
    fake: Any  # FakeHubSpot or FakeSalesforce
    kind: str
    team: str = field(default_factory=lambda: f"team-{uuid.uuid4().hex[:10]}")
    #: Seconds the retry policy would have slept (tests don't wait).
    waits: list[float] = field(default_factory=list)
    #: Texts posted to Slack by this application, about any team.
    posted: list[str] = field(default_factory=list)

    @property
    def slack(self) -> list[str]:
        """What Slack was told about this world's team. Workers sharing the test database resume any team's
        unfinished jobs, so another test's leftovers may be posted here too; they are not this test's."""
        return [text for text in self.posted if f"team `{self.team}`" in text]

    def auth(self, role: str = "admin", team: str | None = None) -> Metadata:
        return bearer(team or self.team, role)

    @property
    def integrations(self) -> integrations_pb2_grpc.IntegrationsServiceStub:
        return integrations_pb2_grpc.IntegrationsServiceStub(self.channel)

    @property
    def fields(self) -> fields_pb2_grpc.FieldsServiceStub:
        return fields_pb2_grpc.FieldsServiceStub(self.channel)

    @property
    def leads(self) -> leads_pb2_grpc.LeadsServiceStub:
        return leads_pb2_grpc.LeadsServiceStub(self.channel)

    @property
    def sync(self) -> sync_pb2_grpc.SyncServiceStub:
        return sync_pb2_grpc.SyncServiceStub(self.channel)

    @property
    def status(self) -> status_pb2_grpc.StatusServiceStub:
        return status_pb2_grpc.StatusServiceStub(self.channel)

    async def connect(self, team: str | None = None) -> None:
        """The OAuth flow as a user walks it: start, consent on the fake, callback."""
        auth = self.auth("admin", team)
        start = await self.integrations.StartOAuth(integrations_pb2.StartOAuthRequest(kind=self.kind), metadata=auth)
        redirect = await follow_consent(start.auth_url, transport=httpx.ASGITransport(self.fake.app))
        await self.integrations.CompleteOAuth(
            integrations_pb2.CompleteOAuthRequest(kind=self.kind, code=redirect["code"], state=redirect["state"]),
            metadata=auth,
        )

    async def lead(self, **fields: str) -> str:
        created = await self.leads.CreateLead(leads_pb2.CreateLeadRequest(fields=fields), metadata=self.auth("member"))
        return created.lead.id

    def sync_request(
        self, lead_id: str, policy: str = "", *, dry_run: bool = False, force: bool = False
    ) -> sync_pb2.SyncLeadRequest:
        options = sync_pb2.SyncOptions(provider=self.kind, duplicate_policy=policy, force=force)
        return sync_pb2.SyncLeadRequest(lead_id=lead_id, dry_run=dry_run, options=options)


@asynccontextmanager
async def running(
    provider: CrmProvider, fake: Any, database_url: str, data_dir: Path, **settings_given: Any
) -> AsyncIterator[World]:
    """crm_hub serving ``provider`` (wired to ``fake``) over gRPC, retrying without waiting; ``settings_given``
    go to its Settings."""
    waits: list[float] = []
    slack: list[str] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    host = PluginHost(load_entry_points=False, load_default_plugins=False)
    host.register(_Register(provider, slack_recorder(slack)), name=f"crm-hub-{provider.name}")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        secret_vault_key=VAULT_KEY,
        # A queue of its own: on PostgreSQL this test's worker runs this test's jobs only.
        queue_name=f"test-{uuid.uuid4().hex[:12]}",
        worker_heartbeat_seconds=1.0,
        **settings_given,
    )
    application = Application.from_settings(settings, plugins=host, retry=RetryPolicy(sleep=no_wait))
    server, port, _ = await create_server(application, "127.0.0.1:0")
    await server.start()
    await application.start_background(worker=True)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            world = World(application, channel, fake, provider.name, waits=waits, posted=slack)
            yield world
            await cancel_unfinished_jobs(world)
    finally:
        await server.stop(None)
        await application.aclose()


async def cancel_unfinished_jobs(world: World) -> None:
    """Leave no job of this test's team queued or running: any worker on the test database resumes unfinished
    jobs (as it should), and another test's worker would run this one's against that test's fake CRM."""
    caller = Caller(Principal(subject="teardown", team_id=world.team, role=Role.ADMIN), request_id="teardown")
    for job in (await world.application.jobs.list(caller, page_size=500)).jobs:
        if not job.finished:
            await world.application.jobs.cancel(caller, job.id)


@pytest.fixture
async def hubspot(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    fake = FakeHubSpot()
    async with running(fake.provider(timeout=5.0), fake, database_url, tmp_path) as world:
        yield world


def salesforce_world(
    database_url: str, data_dir: Path, fake: FakeSalesforce | None = None, **options: Any
) -> AbstractAsyncContextManager[World]:
    """A Salesforce org (``options`` go to FakeSalesforce: duplicate_rules, rotate_refresh_tokens, ...); pass
    ``fake`` for a second crm_hub (a replica) in front of the same org."""
    fake = fake or FakeSalesforce(redirect_uri=SALESFORCE_REDIRECT, **options)
    settings = SalesforceSettings(
        client_id=fake.client_id,
        client_secret=fake.client_secret,
        redirect_url=SALESFORCE_REDIRECT,
        login_url="https://login.salesforce.invalid",
    )
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app), timeout=5.0)
    return running(provider, fake, database_url, data_dir)


@pytest.fixture
async def salesforce(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    async with salesforce_world(database_url, tmp_path) as world:
        yield world
