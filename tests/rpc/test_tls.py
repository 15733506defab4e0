"""The gRPC server speaks TLS (and mutual TLS) when configured, and production refuses plaintext beyond loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crm_hub.errors import ConfigurationError
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings, check_listener_security
from crm_hub.v1 import status_pb2, status_pb2_grpc
from tests.support.app import bearer
from tests.support.certificates import ThrowawayAuthority


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayAuthority:
    return ThrowawayAuthority.create(tmp_path_factory.mktemp("grpc-tls"))


async def _serving(application: Application) -> AsyncIterator[int]:
    server, port, _ = await create_server(application, "127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@pytest.fixture
async def tls_port(application: Application, authority: ThrowawayAuthority) -> AsyncIterator[int]:
    issued = authority.issue("replica")
    application.settings = dataclasses.replace(
        application.settings, grpc_tls_cert=issued.certificate, grpc_tls_key=issued.key
    )
    async for port in _serving(application):
        yield port


@pytest.fixture
async def mtls_port(application: Application, authority: ThrowawayAuthority) -> AsyncIterator[int]:
    issued = authority.issue("replica")
    application.settings = dataclasses.replace(
        application.settings,
        grpc_tls_cert=issued.certificate,
        grpc_tls_key=issued.key,
        grpc_tls_client_ca=authority.certificate,
    )
    async for port in _serving(application):
        yield port


def _tls_channel(port: int, authority: ThrowawayAuthority, client: tuple[Path, Path] | None = None) -> grpc.aio.Channel:
    chain = key = None
    if client is not None:
        chain, key = client[0].read_bytes(), client[1].read_bytes()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=authority.certificate.read_bytes(), private_key=key, certificate_chain=chain
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


async def test_a_server_with_a_certificate_answers_over_tls(
    tls_port: int, authority: ThrowawayAuthority, team_id: str
) -> None:
    async with _tls_channel(tls_port, authority) as channel:
        status = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=bearer(team_id, "member")
        )
    assert status.success is True


async def test_a_server_with_a_certificate_refuses_plaintext(tls_port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_accepts_a_client_certificate_of_the_configured_authority(
    mtls_port: int, authority: ThrowawayAuthority
) -> None:
    client = authority.issue("internal-service", client=True)
    async with _tls_channel(mtls_port, authority, (client.certificate, client.key)) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_port: int, authority: ThrowawayAuthority) -> None:
    async with _tls_channel(mtls_port, authority) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_certificate_of_another_authority(
    mtls_port: int, authority: ThrowawayAuthority, tmp_path: Path
) -> None:
    stranger = ThrowawayAuthority.create(tmp_path / "other-ca", name="another CA").issue("intruder", client=True)
    async with _tls_channel(mtls_port, authority, (stranger.certificate, stranger.key)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("address", ["0.0.0.0:50051", "10.0.0.5:50051", "[::]:50051", "crm-hub:50051"])
def test_production_refuses_a_plaintext_listener_beyond_loopback(address: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_listener_security(Settings(environment="production"), address, tls=False, tls_settings="CRM_HUB_X")
    assert "CRM_HUB_X" in caught.value.message
    assert "CRM_HUB_BEHIND_TLS_PROXY" in caught.value.message


@pytest.mark.parametrize("address", ["127.0.0.1:50051", "[::1]:50051", "localhost:50051", "127.0.0.9:1"])
def test_production_may_listen_in_plaintext_on_loopback(address: str) -> None:
    check_listener_security(Settings(environment="production"), address, tls=False, tls_settings="")


def test_production_may_listen_in_plaintext_behind_a_declared_tls_proxy() -> None:
    check_listener_security(
        Settings(environment="production", behind_tls_proxy=True), "0.0.0.0:50051", tls=False, tls_settings=""
    )
    check_listener_security(Settings(environment="production"), "0.0.0.0:1", tls=True, tls_settings="")


def test_development_may_listen_in_plaintext_anywhere() -> None:
    check_listener_security(Settings(), "0.0.0.0:50051", tls=False, tls_settings="")


async def test_create_server_refuses_a_production_plaintext_listener_before_binding(application: Application) -> None:
    application.settings = dataclasses.replace(application.settings, environment="production")
    with pytest.raises(ConfigurationError):
        await create_server(application, "0.0.0.0:0")


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"CRM_HUB_GRPC_TLS_CERT": "/c.pem"}, "both"),
        ({"CRM_HUB_GRPC_TLS_KEY": "/k.pem"}, "both"),
        ({"CRM_HUB_GRPC_TLS_CLIENT_CA": "/ca.pem"}, "CRM_HUB_GRPC_TLS_CERT"),
        ({"CRM_HUB_BEHIND_TLS_PROXY": "maybe"}, "true or false"),
    ],
)
def test_tls_settings_that_do_not_fit_together_are_configuration_errors(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(environ)
    assert problem in caught.value.message


def test_tls_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CRM_HUB_GRPC_TLS_CERT": "/etc/crm-hub/tls.crt",
            "CRM_HUB_GRPC_TLS_KEY": "/etc/crm-hub/tls.key",
            "CRM_HUB_GRPC_TLS_CLIENT_CA": "/etc/crm-hub/clients.pem",
            "CRM_HUB_BEHIND_TLS_PROXY": "true",
        }
    )
    assert settings.grpc_tls_cert == Path("/etc/crm-hub/tls.crt")
    assert settings.grpc_tls_key == Path("/etc/crm-hub/tls.key")
    assert settings.grpc_tls_client_ca == Path("/etc/crm-hub/clients.pem")
    assert settings.behind_tls_proxy is True


def test_a_certificate_file_that_cannot_be_read_is_a_configuration_error_naming_the_setting(tmp_path: Path) -> None:
    from crm_hub.rpc.server import server_credentials

    settings = Settings(grpc_tls_cert=tmp_path / "missing.crt", grpc_tls_key=tmp_path / "missing.key")
    with pytest.raises(ConfigurationError) as caught:
        server_credentials(settings)
    assert "CRM_HUB_GRPC_TLS_" in caught.value.message
