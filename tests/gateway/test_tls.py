"""With CRM_HUB_TLS_CERT and CRM_HUB_TLS_KEY the gateway speaks HTTPS (and gRPC over TLS) only."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crm_hub.gateway import EnvoyGateway
from crm_hub.v1 import status_pb2, status_pb2_grpc
from tests.gateway.conftest import gateway_settings, headers
from tests.support.app import bearer


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crm-hub test gateway")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "gateway.crt", directory / "gateway.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
async def tls_gateway(
    envoy_binary: Path, grpc_port: int, certificate: tuple[Path, Path]
) -> AsyncIterator[EnvoyGateway]:
    cert, key = certificate
    settings = gateway_settings(grpc_port, tls_cert=cert, tls_key=key)
    async with EnvoyGateway(settings, envoy=envoy_binary) as gateway:
        yield gateway


async def test_serves_https_with_the_configured_certificate(
    tls_gateway: EnvoyGateway, certificate: tuple[Path, Path], team_id: str
) -> None:
    assert tls_gateway.url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    async with httpx.AsyncClient(base_url=tls_gateway.url, verify=trust, trust_env=False) as https:
        response = await https.get("/integrations/status", headers=headers(team_id, "member"))
        missing = await https.get("/nope")
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert missing.status_code == 404
    assert missing.json()["success"] is False


async def test_refuses_plain_http(tls_gateway: EnvoyGateway, team_id: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as plain:
        with pytest.raises(httpx.TransportError):
            await plain.get(f"http://{tls_gateway.grpc_target}/integrations/status", headers=headers(team_id))


async def test_serves_grpc_over_tls(tls_gateway: EnvoyGateway, certificate: tuple[Path, Path], team_id: str) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certificate[0].read_bytes())
    async with grpc.aio.secure_channel(tls_gateway.grpc_target, credentials) as channel:
        response = await status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=bearer(team_id, "member")
        )
    assert response.success is True
