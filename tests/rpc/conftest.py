"""A real grpc.aio server on a free port, over the test database (SQLite and PostgreSQL), and its callers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest

from crm_hub.application import Application
from crm_hub.auth import mint_token
from crm_hub.config import Settings
from crm_hub.plugins import PluginHost
from crm_hub.rpc.server import create_server
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin

JWT_SECRET = "test-jwt-secret-that-is-long-enough"
VAULT_KEY = "test-vault-key-that-is-long-enough"

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def memory_crm() -> MemoryCrm:
    return MemoryCrm()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        jwt_secret=JWT_SECRET,
        secret_vault_key=VAULT_KEY,
        grpc_address="127.0.0.1:0",
    )


@pytest.fixture
async def application(settings: Settings, memory_crm: MemoryCrm) -> AsyncIterator[Application]:
    host = PluginHost(load_entry_points=False)
    host.register(MemoryCrmPlugin(memory_crm), name="memorycrm", distribution="crm-hub-memorycrm", version="0.0.1")
    application = Application.from_settings(settings, plugins=host)
    try:
        yield application
    finally:
        await application.aclose()


@pytest.fixture
async def channel(application: Application) -> AsyncIterator[grpc.aio.Channel]:
    server, port, _ = await create_server(application, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@pytest.fixture
def team_id() -> str:
    return f"team-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def auth() -> Callable[..., Metadata]:
    """``auth(team, role)`` → call metadata with a freshly minted bearer token."""

    def make(team: str, role: str = "admin", **claims: object) -> Metadata:
        token = mint_token(JWT_SECRET, team_id=team, role=role, subject=f"user-of-{team}")
        return (("authorization", f"Bearer {token}"),)

    return make
