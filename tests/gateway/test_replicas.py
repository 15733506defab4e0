"""Several gRPC replicas sharing one database behind one Envoy: calls spread round robin and survive a replica."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest

from crm_hub.gateway import EnvoyGateway
from crm_hub.rpc.server import create_server
from tests.gateway.conftest import gateway_settings, headers, make_application
from tests.support.memory_crm import MemoryCrm
from tests.support.tcp_relay import relaying


@pytest.fixture
async def replicas(database_url: str, tmp_path: Path) -> AsyncIterator[list[tuple[grpc.aio.Server, int]]]:
    """Two servers, each with its own Application, over the same test database."""
    applications = [make_application(database_url, tmp_path / f"replica-{n}", MemoryCrm()) for n in range(2)]
    servers = []
    try:
        for application in applications:
            server, port, _ = await create_server(application, "127.0.0.1:0")
            await server.start()
            servers.append((server, port))
        yield servers
    finally:
        for server, _ in servers:
            await server.stop(None)
        for application in applications:
            await application.aclose()


async def _requests_by_replica(gateway: EnvoyGateway) -> dict[str, int]:
    return {host.address: host.total for host in await gateway.upstream_requests()}


async def test_calls_are_balanced_and_survive_a_stopped_replica(
    envoy_binary: Path, replicas: list[tuple[grpc.aio.Server, int]], team_id: str
) -> None:
    (_, first_port), (second, second_port) = replicas
    async with (
        EnvoyGateway(gateway_settings(first_port, second_port), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        created = await http.post("/leads", json={"fields": {"email": "r@example.com"}}, headers=headers(team_id))
        lead_id = created.json()["lead"]["id"]
        for _ in range(20):
            # Whichever replica serves it, the lead written through the other one is there: one database.
            response = await http.get(f"/leads/{lead_id}", headers=headers(team_id))
            assert response.status_code == 200, response.text
        counts = await _requests_by_replica(gateway)
        assert set(counts) == {f"127.0.0.1:{first_port}", f"127.0.0.1:{second_port}"}
        assert all(count >= 8 for count in counts.values()), counts  # round robin: ~half each

        await second.stop(None)
        statuses = [(await http.get(f"/leads/{lead_id}", headers=headers(team_id))).status_code for _ in range(20)]
        assert statuses == [200] * 20  # connect failures are retried on the other replica

        # Active gRPC health checks take the stopped replica out of the rotation.
        async with asyncio.timeout(5):
            while True:
                health = {host.address: host.healthy for host in await gateway.upstream_requests()}
                if health == {f"127.0.0.1:{first_port}": True, f"127.0.0.1:{second_port}": False}:
                    break
                await asyncio.sleep(0.05)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_replica_whose_database_is_unreachable_is_routed_around_until_it_is_back(
    envoy_binary: Path, database_url: str, tmp_path: Path, team_id: str
) -> None:
    url = httpx.URL(database_url.replace("postgresql+psycopg://", "postgresql://"))
    upstream = f"{url.host}:{url.port or 5432}"
    async with relaying(url.host, url.port or 5432) as relay:
        applications = [
            make_application(database_url, tmp_path / "healthy", MemoryCrm(), health_check_seconds=0.1),
            make_application(
                database_url.replace(upstream, f"127.0.0.1:{relay.port}", 1),
                tmp_path / "cut-off",
                MemoryCrm(),
                health_check_seconds=0.1,
            ),
        ]
        servers: list[grpc.aio.Server] = []
        try:
            ports = []
            for application in applications:
                server, port, _ = await create_server(application, "127.0.0.1:0")
                await server.start()
                await application.start_background()  # the readiness watch
                servers.append(server)
                ports.append(port)
            healthy, cut_off = (f"127.0.0.1:{port}" for port in ports)
            async with (
                EnvoyGateway(gateway_settings(*ports), envoy=envoy_binary) as gateway,
                httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
            ):
                created = await http.post(
                    "/leads", json={"fields": {"email": "db@example.com"}}, headers=headers(team_id)
                )
                lead_id = created.json()["lead"]["id"]
                await until_health(gateway, {healthy: True, cut_off: True})

                relay.cut()
                await until_health(gateway, {healthy: True, cut_off: False})
                before = await _requests_by_replica(gateway)
                statuses = [
                    (await http.get(f"/leads/{lead_id}", headers=headers(team_id))).status_code for _ in range(20)
                ]
                after = await _requests_by_replica(gateway)
                assert statuses == [200] * 20
                assert (after[healthy] - before[healthy], after[cut_off] - before[cut_off]) == (20, 0)

                relay.mend()
                await until_health(gateway, {healthy: True, cut_off: True})
                # Back in the rotation (Envoy's workers take the news within a moment): calls reach it again.
                async with asyncio.timeout(10):
                    while (await _requests_by_replica(gateway))[cut_off] == after[cut_off]:
                        response = await http.get(f"/leads/{lead_id}", headers=headers(team_id))
                        assert response.status_code == 200
                        await asyncio.sleep(0.05)
        finally:
            for server in servers:
                await server.stop(None)
            for application in applications:
                await application.aclose()


async def until_health(gateway: EnvoyGateway, expected: dict[str, bool], seconds: float = 10.0) -> None:
    """Wait until Envoy's health checks see each replica as ``expected``."""
    async with asyncio.timeout(seconds):
        while {host.address: host.healthy for host in await gateway.upstream_requests()} != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
