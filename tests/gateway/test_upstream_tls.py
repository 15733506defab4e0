"""With CRM_HUB_GRPC_UPSTREAM_TLS_CA the gateway talks TLS to its replicas, verifies them, and can show a client
certificate (CRM_HUB_GRPC_UPSTREAM_TLS_CERT/_KEY) to a replica that asks for one.

The replica is the real crm_hub server (create_server's, over the shared test database) with a TLS port added,
since the server's own TLS settings live on another branch.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crm_hub.gateway import EnvoyGateway, GatewaySettings, HostPort, parse_address
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.v1 import status_pb2, status_pb2_grpc
from tests.gateway.conftest import assert_gateway_error, gateway_settings, grpc_server, headers
from tests.support.app import bearer


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path

    def pem(self) -> tuple[bytes, bytes]:
        return self.key.read_bytes(), self.certificate.read_bytes()


class CertificateAuthority:
    """A throwaway CA in ``directory`` issuing server and client certificates (PEM files), valid for a day."""

    def __init__(self, directory: Path, name: str = "crm-hub test CA") -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            self._builder(self._name, self._key.public_key(), now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.certificate = directory / f"{name.replace(' ', '-')}.crt"
        self.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def pem(self) -> bytes:
        return self.certificate.read_bytes()

    def _builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime.datetime
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, name: str, *, dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), client: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        now = datetime.datetime.now(datetime.UTC)
        builder = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), now)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        certificate = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False).sign(
            self._key, hashes.SHA256()
        )
        issued = Issued(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        issued.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return issued


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("upstream-tls"))


@pytest.fixture(scope="module")
def replica_certificate(ca: CertificateAuthority) -> Issued:
    return ca.issue("replica", dns=("localhost",), ips=("127.0.0.1",))


@pytest.fixture(scope="module")
def gateway_certificate(ca: CertificateAuthority) -> Issued:
    return ca.issue("gateway", dns=("gateway",), client=True)


@asynccontextmanager
async def tls_replica(application: Application, certificate: Issued) -> AsyncIterator[int]:
    """The crm_hub server over ``application``, with a TLS port too; that port."""
    credentials = grpc.ssl_server_credentials([certificate.pem()])
    server, _, _ = await create_server(application, "127.0.0.1:0")
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


class PeerEcho(status_pb2_grpc.StatusServiceServicer):
    """Answers with what the replica saw of the TLS connection: the SNI asked for and the client certificate."""

    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> status_pb2.GetStatusResponse:
        seen = {key: b",".join(values).decode() for key, values in context.auth_context().items() if "pem" not in key}
        return status_pb2.GetStatusResponse(
            success=True, integrations={key: status_pb2.IntegrationStatus(state=value) for key, value in seen.items()}
        )


def _tls_settings(ca: CertificateAuthority, *upstreams: str, client: Issued | None = None) -> GatewaySettings:
    return gateway_settings(
        upstreams=tuple(parse_address(upstream, setting="upstream") for upstream in upstreams),
        upstream_tls_ca=ca.certificate,
        upstream_tls_cert=client.certificate if client else None,
        upstream_tls_key=client.key if client else None,
    )


async def _health_of(gateway: EnvoyGateway) -> list[bool]:
    return [host.healthy for host in await gateway.upstream_requests()]


async def _until_health(gateway: EnvoyGateway, healthy: bool) -> None:
    async with asyncio.timeout(5):
        while True:
            if await _health_of(gateway) == [healthy]:
                return
            await asyncio.sleep(0.05)


async def test_rest_and_grpc_reach_a_replica_over_verified_tls(
    envoy_binary: Path,
    shared_application: Application,
    ca: CertificateAuthority,
    replica_certificate: Issued,
    team_id: str,
) -> None:
    async with (
        tls_replica(shared_application, replica_certificate) as port,
        EnvoyGateway(_tls_settings(ca, f"127.0.0.1:{port}"), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        response = await http.get("/integrations/status", headers=headers(team_id, "member"))
        assert response.status_code == 200, response.text
        assert "memorycrm" in response.json()["integrations"]
        async with grpc.aio.insecure_channel(gateway.grpc_target) as channel:
            native = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(), metadata=bearer(team_id, "member")
            )
        assert native.success is True
        await _until_health(gateway, True)  # the gRPC health checks pass over TLS too


@pytest.mark.parametrize(
    ("name", "dns", "ips"),
    [("another-host", ("replica.example",), ()), ("dns-name-only", ("localhost",), ())],
    ids=["names-another-host", "ip-not-in-certificate"],
)
async def test_a_replica_whose_certificate_does_not_name_it_is_refused(
    envoy_binary: Path,
    shared_application: Application,
    ca: CertificateAuthority,
    team_id: str,
    name: str,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
) -> None:
    async with (
        tls_replica(shared_application, ca.issue(name, dns=dns, ips=ips)) as port,
        EnvoyGateway(_tls_settings(ca, f"127.0.0.1:{port}"), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        response = await http.get("/integrations/status", headers=headers(team_id, "member"))
        assert_gateway_error(response, 503, "UNAVAILABLE")
        await _until_health(gateway, False)


async def test_a_replica_signed_by_another_ca_is_refused(
    envoy_binary: Path,
    shared_application: Application,
    ca: CertificateAuthority,
    tmp_path: Path,
    team_id: str,
) -> None:
    impostor = CertificateAuthority(tmp_path, "another CA").issue("replica", dns=("localhost",), ips=("127.0.0.1",))
    async with (
        tls_replica(shared_application, impostor) as port,
        EnvoyGateway(_tls_settings(ca, f"127.0.0.1:{port}"), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        response = await http.get("/integrations/status", headers=headers(team_id, "member"))
        assert_gateway_error(response, 503, "UNAVAILABLE")


async def test_tls_never_falls_back_to_plaintext(
    envoy_binary: Path, grpc_port: int, ca: CertificateAuthority, team_id: str
) -> None:
    async with (
        EnvoyGateway(_tls_settings(ca, f"127.0.0.1:{grpc_port}"), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        response = await http.get("/integrations/status", headers=headers(team_id, "member"))
        assert_gateway_error(response, 503, "UNAVAILABLE")


async def test_a_replica_named_by_dns_gets_its_name_as_sni(
    envoy_binary: Path, ca: CertificateAuthority, gateway_certificate: Issued
) -> None:
    def register(server: grpc.aio.Server) -> None:
        status_pb2_grpc.add_StatusServiceServicer_to_server(PeerEcho(), server)

    only_by_name = ca.issue("replica-by-name", dns=("localhost",))
    credentials = grpc.ssl_server_credentials([only_by_name.pem()])
    async with (
        grpc_server(register, credentials=credentials) as port,
        EnvoyGateway(_tls_settings(ca, f"localhost:{port}"), envoy=envoy_binary) as gateway,
        httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
    ):
        response = await http.get("/integrations/status")
    assert response.status_code == 200, response.text
    seen = {key: status["state"] for key, status in response.json()["integrations"].items()}
    assert seen["ssl_requested_server_name"] == "localhost"
    assert seen["transport_security_type"] == "ssl"
    assert "x509_common_name" not in seen  # no client certificate unless configured


async def test_mutual_tls_shows_the_client_certificate_to_a_replica_that_requires_one(
    envoy_binary: Path, ca: CertificateAuthority, replica_certificate: Issued, gateway_certificate: Issued
) -> None:
    def register(server: grpc.aio.Server) -> None:
        status_pb2_grpc.add_StatusServiceServicer_to_server(PeerEcho(), server)

    credentials = grpc.ssl_server_credentials(
        [replica_certificate.pem()], root_certificates=ca.pem(), require_client_auth=True
    )
    async with grpc_server(register, credentials=credentials) as port:
        upstream = f"127.0.0.1:{port}"
        async with (
            EnvoyGateway(_tls_settings(ca, upstream, client=gateway_certificate), envoy=envoy_binary) as gateway,
            httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
        ):
            response = await http.get("/integrations/status")
            assert response.status_code == 200, response.text
            assert response.json()["integrations"]["x509_common_name"]["state"] == "gateway"
            await _until_health(gateway, True)
        async with (
            EnvoyGateway(_tls_settings(ca, upstream), envoy=envoy_binary) as gateway,
            httpx.AsyncClient(base_url=gateway.url, trust_env=False) as http,
        ):
            response = await http.get("/integrations/status")
            assert_gateway_error(response, 503, "UNAVAILABLE")


def test_each_replica_gets_its_own_name_as_sni_and_san() -> None:
    settings = GatewaySettings(
        upstreams=(HostPort("10.0.0.5", 50051), HostPort("replica-2.internal", 50051)),
        upstream_tls_ca=Path(__file__),  # any readable file: only rendered here
    )
    from crm_hub.gateway.config import _upstream_transport

    default, matches, endpoints = _upstream_transport(settings, list(settings.upstreams))
    contexts = [match["transport_socket"]["typed_config"] for match in matches]  # type: ignore[index]
    assert [context.get("sni") for context in contexts] == [None, "replica-2.internal"]
    assert [
        context["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] for context in contexts
    ] == [
        [{"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.5"}}],
        [{"san_type": "DNS", "matcher": {"exact": "replica-2.internal"}}],
    ]
    assert [endpoint["metadata"] for endpoint in endpoints] == [
        {"filter_metadata": {"envoy.transport_socket_match": {"upstream": "0"}}},
        {"filter_metadata": {"envoy.transport_socket_match": {"upstream": "1"}}},
    ]
    assert default is not None
    assert "sni" not in default["typed_config"]  # type: ignore[operator]
