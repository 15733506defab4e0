"""The gateway's settings and the Envoy configuration rendered from them (``envoy.yaml.tmpl`` beside this file).

Variables (all optional):

==============================  =================================================================================
``CRM_HUB_HTTP_ADDRESS``        where Envoy listens for REST and gRPC clients (default ``127.0.0.1:8080``)
``CRM_HUB_TLS_CERT``            PEM certificate chain; with ``CRM_HUB_TLS_KEY`` the listener is HTTPS only
``CRM_HUB_TLS_KEY``             PEM private key of that certificate
``CRM_HUB_GRPC_UPSTREAMS``      comma-separated ``host:port`` of the gRPC replicas (default: CRM_HUB_GRPC_ADDRESS)
``CRM_HUB_ENVOY_ADMIN_PORT``    port of Envoy's admin interface, always on 127.0.0.1 (default 0: a free port)
==============================  =================================================================================
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

from crm_hub.config import DEFAULT_GRPC_ADDRESS
from crm_hub.errors import ConfigurationError
from crm_hub.gateway.descriptors import descriptor_set_path, load_descriptor_set
from crm_hub.gateway.http_rules import http_bindings, service_names

__all__ = [
    "DEFAULT_HTTP_ADDRESS",
    "GatewaySettings",
    "HostPort",
    "lua_script_path",
    "parse_address",
    "path_variables",
    "render_config",
    "template_path",
]

DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"
_TEMPLATE = "envoy.yaml.tmpl"
_LUA_SCRIPT = "error_body.lua"


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str, *, setting: str) -> HostPort:
    """``host:port``, ``[v6]:port`` → HostPort; a ConfigurationError naming ``setting`` otherwise."""
    text = value.strip()
    host, separator, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not separator or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigurationError(f"{setting} must be host:port (e.g. 127.0.0.1:8080), not {value!r}")
    return HostPort(host, int(port_text))


def _connectable(address: HostPort) -> HostPort:
    """A server bound to every interface is reached on loopback."""
    if address.host in ("0.0.0.0", ""):  # noqa: S104 - recognising a bind-all address, not binding one
        return HostPort("127.0.0.1", address.port)
    if address.host == "::":
        return HostPort("::1", address.port)
    return address


_DEFAULT_HTTP = parse_address(DEFAULT_HTTP_ADDRESS, setting="CRM_HUB_HTTP_ADDRESS")
_DEFAULT_UPSTREAM = parse_address(DEFAULT_GRPC_ADDRESS, setting="CRM_HUB_GRPC_ADDRESS")


@dataclass(frozen=True)
class GatewaySettings:
    """Where Envoy listens, which gRPC replicas it balances over, and its TLS certificate."""

    http_address: HostPort = _DEFAULT_HTTP
    upstreams: tuple[HostPort, ...] = (_DEFAULT_UPSTREAM,)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    admin_port: int = 0
    #: Seconds between active gRPC health checks of each replica.
    health_check_interval: float = 2.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("Set both CRM_HUB_TLS_CERT and CRM_HUB_TLS_KEY, or neither.")
        if not self.upstreams:
            raise ConfigurationError("The gateway needs at least one gRPC upstream (CRM_HUB_GRPC_UPSTREAMS).")
        if not self.http_address.is_ip and self.http_address.host != "localhost":
            raise ConfigurationError(
                f"CRM_HUB_HTTP_ADDRESS must be an IP address and port (Envoy listens on addresses, not names), "
                f"not {self.http_address}"
            )
        if not 0 <= self.admin_port <= 65535:
            raise ConfigurationError(f"CRM_HUB_ENVOY_ADMIN_PORT must be a port number, not {self.admin_port}")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if environ is None else environ

        def value(name: str) -> str | None:
            return env.get(name, "").strip() or None

        upstreams_text = value("CRM_HUB_GRPC_UPSTREAMS")
        if upstreams_text is not None:
            upstreams = tuple(
                parse_address(item, setting="CRM_HUB_GRPC_UPSTREAMS")
                for item in upstreams_text.split(",")
                if item.strip()
            )
        else:
            upstreams = (
                parse_address(value("CRM_HUB_GRPC_ADDRESS") or DEFAULT_GRPC_ADDRESS, setting="CRM_HUB_GRPC_ADDRESS"),
            )
        admin_port_text = value("CRM_HUB_ENVOY_ADMIN_PORT") or "0"
        if not admin_port_text.isdigit():
            raise ConfigurationError(f"CRM_HUB_ENVOY_ADMIN_PORT must be a port number, not {admin_port_text!r}")
        cert, key = value("CRM_HUB_TLS_CERT"), value("CRM_HUB_TLS_KEY")
        return cls(
            http_address=parse_address(
                value("CRM_HUB_HTTP_ADDRESS") or DEFAULT_HTTP_ADDRESS, setting="CRM_HUB_HTTP_ADDRESS"
            ),
            upstreams=upstreams,
            tls_cert=Path(cert) if cert else None,
            tls_key=Path(key) if key else None,
            admin_port=int(admin_port_text),
        )

    def with_upstreams(self, upstreams: Sequence[str | HostPort]) -> GatewaySettings:
        """A copy balancing over ``upstreams`` instead."""
        parsed = tuple(
            item if isinstance(item, HostPort) else parse_address(item, setting="upstream") for item in upstreams
        )
        return dataclasses.replace(self, upstreams=parsed)


def template_path() -> Path:
    return Path(str(resources.files("crm_hub.gateway").joinpath(_TEMPLATE)))


def lua_script_path() -> Path:
    return Path(str(resources.files("crm_hub.gateway").joinpath(_LUA_SCRIPT)))


def path_variables(files: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """Every path variable of the HTTP rules, by proto name and JSON name (the transcoder accepts both)."""
    messages = {f"{file.package}.{message.name}": message for file in files.file for message in file.message_type}
    names: set[str] = set()
    for binding in http_bindings(files):
        request = messages.get(binding.input_type)
        json_names = {f.name: f.json_name for f in request.field} if request is not None else {}
        for variable in binding.path_variables:
            top = variable.split(".")[0]
            names.update((top, json_names.get(top, top)))
    return sorted(names)


def _json(value: object) -> str:
    # JSON is YAML flow syntax: quoted strings and inline lists/maps drop into the template safely.
    return json.dumps(value)


def _socket_address(address: HostPort) -> dict[str, object]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _transport_socket(settings: GatewaySettings) -> dict[str, object]:
    if settings.tls_cert is None or settings.tls_key is None:
        return {
            "name": "envoy.transport_sockets.raw_buffer",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
        }
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
                # h2 first: gRPC clients need it; REST clients may use either.
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(settings.tls_cert.resolve())},
                        "private_key": {"filename": str(settings.tls_key.resolve())},
                    }
                ],
            },
        },
    }


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def render_config(
    settings: GatewaySettings,
    *,
    descriptor_set: Path | None = None,
    lua_script: Path | None = None,
) -> str:
    """The Envoy bootstrap YAML for ``settings``; the descriptor set and Lua script are referenced by path."""
    descriptor = (descriptor_set or descriptor_set_path()).resolve()
    script = (lua_script or lua_script_path()).resolve()
    if settings.tls_cert is not None and settings.tls_key is not None:
        for path, name in ((settings.tls_cert, "CRM_HUB_TLS_CERT"), (settings.tls_key, "CRM_HUB_TLS_KEY")):
            if not path.is_file():
                raise ConfigurationError(f"{name} names no readable file: {path}")
    upstreams = [_connectable(address) for address in settings.upstreams]
    files = load_descriptor_set(descriptor)
    template = string.Template(template_path().read_text())
    return template.substitute(
        admin_port=settings.admin_port,
        http_host=_json("127.0.0.1" if settings.http_address.host == "localhost" else settings.http_address.host),
        http_port=settings.http_address.port,
        downstream_transport_socket=_json(_transport_socket(settings)),
        lua_path=_json(str(script)),
        path_variables=_json(path_variables(files)),
        descriptor_path=_json(str(descriptor)),
        services=_json(service_names(files)),
        # STATIC needs IP addresses; names (a Kubernetes service, a compose host) are resolved and re-resolved.
        cluster_type="STATIC" if all(address.is_ip for address in upstreams) else "STRICT_DNS",
        upstream_endpoints=_json([{"endpoint": {"address": _socket_address(address)}} for address in upstreams]),
        health_check_interval=_duration(settings.health_check_interval),
    )
