"""Gateway settings from the environment, and the Envoy configuration rendered from them (checked by Envoy)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from crm_hub.errors import ConfigurationError
from crm_hub.gateway import GatewaySettings, HostPort, render_config
from crm_hub.gateway.config import path_variables
from crm_hub.gateway.descriptors import EXTRA_PROTOS, check, load_descriptor_set
from crm_hub.gateway.http_rules import service_names
from crm_hub.rpc.server import SERVICE_NAMES
from tests.gateway.test_tls import self_signed_certificate

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - only rendered and compared, never bound


def _validate(envoy: Path, config: str, directory: Path) -> subprocess.CompletedProcess[str]:
    path = directory / "envoy.yaml"
    path.write_text(config)
    return subprocess.run(  # noqa: S603 - fixed argv
        [str(envoy), "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_defaults_listen_on_loopback_8080_in_front_of_the_grpc_address() -> None:
    settings = GatewaySettings.from_env({})
    assert settings.http_address == HostPort("127.0.0.1", 8080)
    assert settings.upstreams == (HostPort("127.0.0.1", 50051),)
    assert (settings.tls, settings.scheme, settings.admin_port) == (False, "http", 0)


def test_environment_sets_address_upstreams_tls_and_admin_port(tmp_path: Path) -> None:
    settings = GatewaySettings.from_env(
        {
            "CRM_HUB_HTTP_ADDRESS": "0.0.0.0:443",
            "CRM_HUB_GRPC_UPSTREAMS": "10.0.0.5:50051, replica-2.internal:50051,[::1]:6000",
            "CRM_HUB_TLS_CERT": str(tmp_path / "c.pem"),
            "CRM_HUB_TLS_KEY": str(tmp_path / "k.pem"),
            "CRM_HUB_ENVOY_ADMIN_PORT": "9901",
        }
    )
    assert settings.http_address == HostPort(ALL_INTERFACES, 443)
    assert settings.upstreams == (
        HostPort("10.0.0.5", 50051),
        HostPort("replica-2.internal", 50051),
        HostPort("::1", 6000),
    )
    assert (settings.scheme, settings.admin_port) == ("https", 9901)


def test_upstream_defaults_to_the_grpc_address() -> None:
    settings = GatewaySettings.from_env({"CRM_HUB_GRPC_ADDRESS": "127.0.0.1:6001"})
    assert settings.upstreams == (HostPort("127.0.0.1", 6001),)


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"CRM_HUB_TLS_CERT": "/etc/cert.pem"}, "CRM_HUB_TLS_KEY"),
        ({"CRM_HUB_HTTP_ADDRESS": "8080"}, "CRM_HUB_HTTP_ADDRESS"),
        ({"CRM_HUB_HTTP_ADDRESS": "localhost:99999"}, "CRM_HUB_HTTP_ADDRESS"),
        ({"CRM_HUB_HTTP_ADDRESS": "gateway.internal:8080"}, "CRM_HUB_HTTP_ADDRESS"),
        ({"CRM_HUB_GRPC_UPSTREAMS": "a:1,b"}, "CRM_HUB_GRPC_UPSTREAMS"),
        ({"CRM_HUB_GRPC_UPSTREAMS": " , "}, "CRM_HUB_GRPC_UPSTREAMS"),
        ({"CRM_HUB_ENVOY_ADMIN_PORT": "admin"}, "CRM_HUB_ENVOY_ADMIN_PORT"),
    ],
    ids=[
        "cert-without-key",
        "no-host",
        "port-out-of-range",
        "listen-on-a-name",
        "bad-upstream",
        "empty-upstreams",
        "bad-admin-port",
    ],
)
def test_bad_settings_are_configuration_errors_naming_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        GatewaySettings.from_env(environ)


def test_missing_certificate_file_is_a_configuration_error(tmp_path: Path) -> None:
    settings = GatewaySettings(tls_cert=tmp_path / "missing.crt", tls_key=tmp_path / "missing.key")
    with pytest.raises(ConfigurationError, match="CRM_HUB_TLS_CERT"):
        render_config(settings)


def test_rendered_config_passes_envoy_validation(envoy_binary: Path, tmp_path: Path) -> None:
    settings = GatewaySettings(upstreams=(HostPort("127.0.0.1", 50051), HostPort("127.0.0.1", 50052)))
    result = _validate(envoy_binary, render_config(settings), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_rendered_tls_config_passes_envoy_validation(envoy_binary: Path, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    config = render_config(GatewaySettings(tls_cert=cert, tls_key=key))
    assert "DownstreamTlsContext" in config
    assert "envoy.transport_sockets.raw_buffer" not in config
    result = _validate(envoy_binary, config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_upstream_host_names_are_resolved_by_dns(envoy_binary: Path, tmp_path: Path) -> None:
    config = render_config(GatewaySettings(upstreams=(HostPort("localhost", 50051),)))
    assert "type: STRICT_DNS" in config
    result = _validate(envoy_binary, config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_localhost_listener_binds_loopback(envoy_binary: Path, tmp_path: Path) -> None:
    config = render_config(GatewaySettings.from_env({"CRM_HUB_HTTP_ADDRESS": "localhost:8080"}))
    assert 'socket_address: {address: "127.0.0.1", port_value: 8080}' in config
    result = _validate(envoy_binary, config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_bind_all_grpc_address_is_reached_on_loopback() -> None:
    config = render_config(GatewaySettings(upstreams=(HostPort(ALL_INTERFACES, 50051),)))
    assert '"address": "127.0.0.1", "port_value": 50051' in config
    assert "type: STATIC" in config


def test_transcoder_serves_exactly_the_servers_services() -> None:
    assert sorted(service_names(load_descriptor_set())) == sorted(SERVICE_NAMES)


def test_query_parameters_may_not_name_any_path_variable() -> None:
    assert path_variables(load_descriptor_set()) == ["jobId", "job_id", "kind", "leadId", "lead_id"]


def test_descriptor_set_carries_the_error_detail_types_and_is_current() -> None:
    names = {file.name for file in load_descriptor_set().file}
    assert set(EXTRA_PROTOS) <= names
    assert "google/api/annotations.proto" in names
    assert check() == []
