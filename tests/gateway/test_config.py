"""Gateway settings from the environment, and the Envoy configuration rendered from them (checked by Envoy)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from crm_hub.errors import ConfigurationError
from crm_hub.gateway import GatewaySettings, HostPort, render_config
from crm_hub.gateway.config import (
    MAX_REQUEST_BODY_BYTES,
    MAX_REQUEST_HEADERS_KB,
    MAX_UPSTREAM_RESPONSE_HEADERS_KB,
    MAX_URL_BYTES,
    REQUEST_TIMEOUT_SECONDS,
    lua_routes,
    path_variables,
)
from crm_hub.gateway.descriptors import EXTRA_PROTOS, check, load_descriptor_set
from crm_hub.gateway.http_rules import http_bindings, path_template_segments, service_names
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


# -- upstream TLS, limits and the REST paths for the Lua filter ----------------------------------------------


def test_environment_sets_upstream_tls(tmp_path: Path) -> None:
    settings = GatewaySettings.from_env(
        {
            "CRM_HUB_GRPC_UPSTREAM_TLS_CA": str(tmp_path / "ca.pem"),
            "CRM_HUB_GRPC_UPSTREAM_TLS_CERT": str(tmp_path / "client.pem"),
            "CRM_HUB_GRPC_UPSTREAM_TLS_KEY": str(tmp_path / "client.key"),
        }
    )
    assert settings.upstream_tls
    assert (settings.upstream_tls_ca, settings.upstream_tls_cert, settings.upstream_tls_key) == (
        tmp_path / "ca.pem",
        tmp_path / "client.pem",
        tmp_path / "client.key",
    )
    assert not GatewaySettings.from_env({}).upstream_tls


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        (
            {"CRM_HUB_GRPC_UPSTREAM_TLS_CA": "/ca", "CRM_HUB_GRPC_UPSTREAM_TLS_CERT": "/c"},
            "CRM_HUB_GRPC_UPSTREAM_TLS_KEY",
        ),
        (
            {"CRM_HUB_GRPC_UPSTREAM_TLS_CERT": "/c", "CRM_HUB_GRPC_UPSTREAM_TLS_KEY": "/k"},
            "CRM_HUB_GRPC_UPSTREAM_TLS_CA",
        ),
    ],
    ids=["client-cert-without-key", "client-cert-without-ca"],
)
def test_bad_upstream_tls_settings_name_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        GatewaySettings.from_env(environ)


def test_missing_upstream_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="CRM_HUB_GRPC_UPSTREAM_TLS_CA"):
        render_config(GatewaySettings(upstream_tls_ca=tmp_path / "missing.pem"))


def test_rendered_upstream_tls_config_passes_envoy_validation(envoy_binary: Path, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    settings = GatewaySettings(
        upstreams=(HostPort("127.0.0.1", 50051), HostPort("localhost", 50052)),
        upstream_tls_ca=cert,
        upstream_tls_cert=cert,
        upstream_tls_key=key,
    )
    config = render_config(settings)
    assert config.count("UpstreamTlsContext") == 3  # one per replica, and the cluster's default
    assert '"alpn_protocols": ["h2"]' in config
    assert "envoy.transport_sockets.raw_buffer" in config  # the listener stays plain HTTP
    result = _validate(envoy_binary, config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plaintext_upstreams_have_no_tls_context() -> None:
    config = render_config(GatewaySettings())
    assert "UpstreamTlsContext" not in config
    assert "transport_socket: null" in config


def test_limits_are_rendered_into_the_envoy_configuration() -> None:
    config = render_config(GatewaySettings())
    assert REQUEST_TIMEOUT_SECONDS == 15.0
    assert "request_timeout: 15.000s" in config
    assert "request_headers_timeout: 10.000s" in config
    assert f"max_request_headers_kb: {MAX_REQUEST_HEADERS_KB}" in config
    assert f"max_request_bytes: {MAX_REQUEST_BODY_BYTES}" in config
    assert f"per_connection_buffer_limit_bytes: {MAX_REQUEST_BODY_BYTES}" in config
    assert f"max_response_headers_kb: {MAX_UPSTREAM_RESPONSE_HEADERS_KB}" in config
    assert f'"max_url_bytes": {MAX_URL_BYTES}' in config
    assert (MAX_REQUEST_BODY_BYTES, MAX_URL_BYTES, MAX_REQUEST_HEADERS_KB) == (1024 * 1024, 4096, 32)


def test_lua_knows_every_rest_path_with_its_verbs() -> None:
    files = load_descriptor_set()
    routes = {"/" + "/".join(route["segments"]): route["methods"] for route in lua_routes(files)}  # type: ignore[arg-type]
    served: dict[str, set[str]] = {}
    for binding in http_bindings(files):
        template = "/" + "/".join(path_template_segments(binding.path))
        served.setdefault(template, set()).add(binding.verb)
    assert {template: set(methods) for template, methods in routes.items()} == served
    assert routes["/integrations/*/mapping"] == {
        "GET": {"scalar_maps": {}},
        "POST": {"scalar_maps": {"mapping": "a string"}},
    }
    assert routes["/leads"] == {"POST": {"scalar_maps": {"fields": "a string"}}}


@pytest.mark.parametrize(
    ("template", "segments"),
    [
        ("/leads", ["leads"]),
        ("/leads/{lead_id}/timeline", ["leads", "*", "timeline"]),
        ("/a/{x=*}/b", ["a", "*", "b"]),
        ("/files/{path=**}", ["files", "**"]),
    ],
)
def test_path_templates_become_segments_to_match(template: str, segments: list[str]) -> None:
    assert path_template_segments(template) == segments


@pytest.mark.parametrize("template", ["/a/{x=shelves/*}", "/a/b:publish", "/a/**/b", "leads"])
def test_path_templates_the_lua_matcher_cannot_match_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="unsupported path template"):
        path_template_segments(template)
