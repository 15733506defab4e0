"""crm_hub's pytest plugin (entry point ``pytest11``): fixtures for testing provider plugins end to end.

``crm_hub_server`` starts the real service — gRPC server, core, storage on a fresh SQLite file — with the
providers you pass, so a plugin's tests can drive the whole flow over a channel::

    async def test_sync(crm_hub_server):
        async with crm_hub_server(providers=[MyCrmProvider(transport=fake.transport)]) as hub:
            stub = SyncServiceStub(hub.channel)
            await stub.SyncLead(..., metadata=hub.auth("my-team", "admin"))
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from crm_hub.core.retry import RetryPolicy
from crm_hub.hookspecs import hookimpl
from crm_hub.notifications import Notifier
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.rpc.auth import mint_token
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import normalize_database_url, upgrade

__all__ = ["CrmHubServer", "RunningHub", "crm_hub_server"]

Metadata = tuple[tuple[str, str], ...]
_JWT_SECRET = "crm-hub-testing-jwt-secret-0123456789"  # noqa: S105 - test-only, never a real secret
_VAULT_KEY = "crm-hub-testing-vault-key-0123456789"


@dataclass(frozen=True)
class RunningHub:
    """A started crm_hub: its application, a channel to its gRPC port, and a way to make call credentials."""

    application: Application
    channel: grpc.aio.Channel
    port: int

    @staticmethod
    def auth(team_id: str, role: str = "admin", subject: str = "tester") -> Metadata:
        """Call metadata carrying a valid bearer token for ``team_id`` and ``role``."""
        return (("authorization", f"Bearer {mint_token(_JWT_SECRET, team_id=team_id, role=role, subject=subject)}"),)


class _Plugins:
    def __init__(self, providers: Sequence[CrmProvider], notifiers: Sequence[Notifier]) -> None:
        self.providers = providers
        self.notifiers = notifiers

    @hookimpl
    def register_providers(self, register: Callable[[CrmProvider], None]) -> None:
        for provider in self.providers:
            register(provider)

    @hookimpl
    def register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        for notifier in self.notifiers:
            register(notifier)


#: The type of the ``crm_hub_server`` fixture, for annotating tests.
CrmHubServer = Callable[..., AbstractAsyncContextManager[RunningHub]]


@pytest.fixture
def crm_hub_server(tmp_path: Path) -> CrmHubServer:
    """``async with crm_hub_server(providers=[...]) as hub`` runs the service for a test.

    Options: ``database_url`` (default: a fresh SQLite file), ``notifiers`` (extra Notifier instances) and
    ``retry`` (a RetryPolicy; e.g. ``RetryPolicy(sleep=record)`` so rate-limit tests don't wait).
    """

    @asynccontextmanager
    async def start(
        *,
        providers: Sequence[CrmProvider],
        database_url: str | None = None,
        notifiers: Sequence[Notifier] = (),
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[RunningHub]:
        from crm_hub.rpc.server import create_server

        data_dir = tmp_path / f"crm-hub-{uuid.uuid4().hex[:8]}"
        url = normalize_database_url(database_url, data_dir=data_dir)
        await upgrade(url)
        host = PluginHost(load_entry_points=False, load_default_plugins=False)
        host.register(_Plugins(providers, notifiers), name="crm-hub-testing-plugins")
        settings = Settings(database_url=url, data_dir=data_dir, jwt_secret=_JWT_SECRET, secret_vault_key=_VAULT_KEY)
        application = Application.from_settings(settings, plugins=host, retry=retry)
        server, port, _ = await create_server(application, "127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield RunningHub(application=application, channel=channel, port=port)
        finally:
            await server.stop(None)
            await application.aclose()

    return start
