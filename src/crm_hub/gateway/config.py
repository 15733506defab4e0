"""The gateway's settings and the Envoy configuration rendered from them (``envoy.yaml.tmpl`` beside this file).

Variables (all optional):

====================================  ===========================================================================
``CRM_HUB_HTTP_ADDRESS``              where Envoy listens for REST and gRPC clients (default ``127.0.0.1:8080``)
``CRM_HUB_TLS_CERT``                  PEM certificate chain; with ``CRM_HUB_TLS_KEY`` the listener is HTTPS only
``CRM_HUB_TLS_KEY``                   PEM private key of that certificate
``CRM_HUB_GRPC_UPSTREAMS``            comma-separated ``host:port`` of the gRPC replicas (default: CRM_HUB_GRPC_ADDRESS)
``CRM_HUB_GRPC_UPSTREAM_TLS_CA``      PEM CA bundle: talk TLS (h2) to the replicas, calls and health checks alike,
                                      and verify each replica's certificate against it and against the replica's
                                      name as given in CRM_HUB_GRPC_UPSTREAMS (a DNS name, sent as SNI, or an IP
                                      address, matched against the certificate's IP SANs)
``CRM_HUB_GRPC_UPSTREAM_TLS_CERT``    PEM client certificate chain shown to the replicas (mutual TLS); needs
                                      CRM_HUB_GRPC_UPSTREAM_TLS_KEY and CRM_HUB_GRPC_UPSTREAM_TLS_CA
``CRM_HUB_GRPC_UPSTREAM_TLS_KEY``     PEM private key of that client certificate
``CRM_HUB_ENVOY_ADMIN_PORT``          port of Envoy's admin interface, always on 127.0.0.1 (default 0: a free port)
====================================  ===========================================================================

The limits Envoy enforces on REST requests (answered with the gateway's JSON error body) are the constants
below: ``MAX_REQUEST_BODY_BYTES``, ``MAX_URL_BYTES``, ``MAX_REQUEST_HEADERS_KB``, ``REQUEST_TIMEOUT_SECONDS``
and ``REQUEST_HEADERS_TIMEOUT_SECONDS``; ``MAX_UPSTREAM_RESPONSE_HEADERS_KB`` bounds what a replica may answer.
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
from typing import Any

from google.protobuf import descriptor_pb2
from pydantic import ConfigDict, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo

from crm_hub.errors import ConfigurationError
from crm_hub.gateway.descriptors import descriptor_set_path, load_descriptor_set
from crm_hub.gateway.http_rules import http_bindings, path_template_segments, service_names
from crm_hub.settings import DEFAULT_GRPC_ADDRESS, invalid_setting, variable, variables_in

__all__ = [
    "DEFAULT_HTTP_ADDRESS",
    "MAX_REQUEST_BODY_BYTES",
    "MAX_REQUEST_HEADERS_KB",
    "MAX_UPSTREAM_RESPONSE_HEADERS_KB",
    "MAX_URL_BYTES",
    "REQUEST_HEADERS_TIMEOUT_SECONDS",
    "REQUEST_TIMEOUT_SECONDS",
    "GatewaySettings",
    "HostPort",
    "lua_routes",
    "lua_script_path",
    "parse_address",
    "path_variables",
    "render_config",
    "template_path",
]

DEFAULT_HTTP_ADDRESS = "127.0.0.1:8080"

#: A REST request body larger than this is refused with 413 REQUEST_TOO_LARGE (gRPC's own limit is 4 MB).
MAX_REQUEST_BODY_BYTES = 1024 * 1024
#: A REST request whose path and query together are longer than this is refused with 414 URI_TOO_LONG
#: (the longest URL the API serves is well under 300 bytes).
MAX_URL_BYTES = 4096
#: Request headers (HTTP/1.1: with the request line) larger than this are refused with 431 HEADERS_TOO_LARGE.
MAX_REQUEST_HEADERS_KB = 32
#: A request must be received completely (headers and body) within this: else 408 REQUEST_TIMEOUT. The timer
#: stops once the request is in, so it never cuts a slow answer short (the route's 60 s timeout does that).
REQUEST_TIMEOUT_SECONDS = 15.0
#: The request headers must be received within this once they start: else 408 REQUEST_TIMEOUT.
REQUEST_HEADERS_TIMEOUT_SECONDS = 10.0
#: Response headers and trailers a replica may send (Envoy's default is 60 KiB): a gRPC error carries its
#: message and details (google.rpc.Status) in the trailers, and an error must reach the client whole.
MAX_UPSTREAM_RESPONSE_HEADERS_KB = 256
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


@pydantic_dataclass(frozen=True, config=ConfigDict(validate_by_name=True, validate_by_alias=True))
class GatewaySettings:
    """Where Envoy listens, which gRPC replicas it balances over, and the TLS of both sides."""

    http_address: HostPort = variable("CRM_HUB_HTTP_ADDRESS", _DEFAULT_HTTP)
    #: The replicas (``CRM_HUB_GRPC_UPSTREAMS``; by default the one at ``CRM_HUB_GRPC_ADDRESS``).
    upstreams: tuple[HostPort, ...] = variable("CRM_HUB_GRPC_UPSTREAMS", (_DEFAULT_UPSTREAM,))
    tls_cert: Path | None = variable("CRM_HUB_TLS_CERT", None)
    tls_key: Path | None = variable("CRM_HUB_TLS_KEY", None)
    #: CA bundle that verifies the replicas; set, Envoy talks TLS to them.
    upstream_tls_ca: Path | None = variable("CRM_HUB_GRPC_UPSTREAM_TLS_CA", None)
    #: Client certificate and key Envoy shows the replicas (mutual TLS).
    upstream_tls_cert: Path | None = variable("CRM_HUB_GRPC_UPSTREAM_TLS_CERT", None)
    upstream_tls_key: Path | None = variable("CRM_HUB_GRPC_UPSTREAM_TLS_KEY", None)
    admin_port: int = variable("CRM_HUB_ENVOY_ADMIN_PORT", 0)
    #: Seconds between active gRPC health checks of each replica.
    health_check_interval: float = 2.0
    #: Seconds a client has to send its whole request (REQUEST_TIMEOUT_SECONDS; tests shorten it).
    request_timeout: float = REQUEST_TIMEOUT_SECONDS

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            return _GATEWAY_FIELDS[str(info.field_name)].default
        return value.strip() if isinstance(value, str) else value

    @field_validator("http_address", mode="before")
    @classmethod
    def _listener(cls, value: Any) -> Any:
        return parse_address(value, setting="CRM_HUB_HTTP_ADDRESS") if isinstance(value, str) else value

    @field_validator("upstreams", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return tuple(parse_address(item, setting="CRM_HUB_GRPC_UPSTREAMS") for item in value.split(",") if item.strip())

    @field_validator("admin_port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.isdigit():
            raise ConfigurationError(f"CRM_HUB_ENVOY_ADMIN_PORT must be a port number, not {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("Set both CRM_HUB_TLS_CERT and CRM_HUB_TLS_KEY, or neither.")
        if (self.upstream_tls_cert is None) != (self.upstream_tls_key is None):
            raise ConfigurationError(
                "Set both CRM_HUB_GRPC_UPSTREAM_TLS_CERT and CRM_HUB_GRPC_UPSTREAM_TLS_KEY, or neither."
            )
        if self.upstream_tls_cert is not None and self.upstream_tls_ca is None:
            # Never TLS without verifying the replicas: Envoy has no default trust store.
            raise ConfigurationError(
                "CRM_HUB_GRPC_UPSTREAM_TLS_CERT needs CRM_HUB_GRPC_UPSTREAM_TLS_CA (the CA that verifies the replicas)."
            )
        if not self.request_timeout > 0:
            raise ConfigurationError(f"The request timeout must be positive, not {self.request_timeout}")
        if not self.upstreams:
            raise ConfigurationError("The gateway needs at least one gRPC upstream (CRM_HUB_GRPC_UPSTREAMS).")
        if not self.http_address.is_ip and self.http_address.host != "localhost":
            raise ConfigurationError(
                f"CRM_HUB_HTTP_ADDRESS must be an IP address and port (Envoy listens on addresses, not names), "
                f"not {self.http_address}"
            )
        if not 0 <= self.admin_port <= 65535:
            raise ConfigurationError(f"CRM_HUB_ENVOY_ADMIN_PORT must be a port number, not {self.admin_port}")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def upstream_tls(self) -> bool:
        """Envoy talks TLS to the replicas."""
        return self.upstream_tls_ca is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GatewaySettings:
        """The gateway's settings in ``environ`` (the process environment by default)."""
        env = os.environ if environ is None else environ
        values = variables_in(_GATEWAY_FIELDS, env)
        if not values.get("CRM_HUB_GRPC_UPSTREAMS", "").strip():
            # One replica by default: the one this machine's crm-hub serve listens on.
            address = env.get("CRM_HUB_GRPC_ADDRESS", "").strip() or DEFAULT_GRPC_ADDRESS
            values["CRM_HUB_GRPC_UPSTREAMS"] = (parse_address(address, setting="CRM_HUB_GRPC_ADDRESS"),)  # type: ignore[assignment]
        try:
            return _GATEWAY_FROM_ENVIRONMENT.validate_python(values)
        except ValidationError as error:
            raise invalid_setting(error) from None

    def with_upstreams(self, upstreams: Sequence[str | HostPort]) -> GatewaySettings:
        """A copy balancing over ``upstreams`` instead."""
        parsed = tuple(
            item if isinstance(item, HostPort) else parse_address(item, setting="upstream") for item in upstreams
        )
        return dataclasses.replace(self, upstreams=parsed)


_GATEWAY_FIELDS: dict[str, FieldInfo] = GatewaySettings.__pydantic_fields__  # type: ignore[attr-defined]
_GATEWAY_FROM_ENVIRONMENT = TypeAdapter(GatewaySettings)


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
        for path_variable in binding.path_variables:
            top = path_variable.split(".")[0]
            names.update((top, json_names.get(top, top)))
    return sorted(names)


def _message_index(files: descriptor_pb2.FileDescriptorSet) -> dict[str, descriptor_pb2.DescriptorProto]:
    index: dict[str, descriptor_pb2.DescriptorProto] = {}

    def add(scope: str, message: descriptor_pb2.DescriptorProto) -> None:
        index[f"{scope}.{message.name}"] = message
        for nested in message.nested_type:
            add(f"{scope}.{message.name}", nested)

    for file in files.file:
        for message in file.message_type:
            add(file.package, message)
    return index


_JSON_TYPE_NAMES = {
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "a string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "a base64 string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "true or false",
    descriptor_pb2.FieldDescriptorProto.TYPE_ENUM: "an enum name",
}


def _scalar_maps(
    message: descriptor_pb2.DescriptorProto | None, index: dict[str, descriptor_pb2.DescriptorProto]
) -> dict[str, str]:
    """The map fields of ``message`` whose values are scalars, by proto and JSON name -> the JSON type expected.

    The transcoder turns a JSON object given as such a value into a corrupt protobuf instead of refusing it
    (``{"fields": {"email": {"a": 1}}}``), so the Lua filter refuses it first.
    """
    found: dict[str, str] = {}
    for field in message.field if message is not None else ():
        entry = index.get(field.type_name.lstrip(".")) if field.type_name else None
        if entry is None or not entry.options.map_entry:
            continue
        value = next(f for f in entry.field if f.name == "value")
        if value.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE:
            continue
        expected = _JSON_TYPE_NAMES.get(value.type, "a number")
        found[field.name] = found[field.json_name] = expected
    return found


def lua_routes(files: descriptor_pb2.FileDescriptorSet) -> list[dict[str, object]]:
    """The REST paths for the Lua filter: template segments and, per verb, what its JSON body must not hold.

    ``[{"segments": ["leads", "*"], "methods": {"GET": {"scalar_maps": {}}}}, ...]``, one entry per path
    template (see ``http_rules.path_template_segments``). Lua answers 405 with ``Allow`` for a path that
    matches a template but not with the request's verb, and refuses JSON objects as values of the
    ``scalar_maps`` of the request body (``""`` names the body itself, for ``body: "<a map field>"``).
    """
    index = _message_index(files)
    routes: dict[str, dict[str, object]] = {}
    for binding in http_bindings(files):
        request = index.get(binding.input_type)
        scalar_maps: dict[str, str] = {}
        if binding.body == "*":
            scalar_maps = _scalar_maps(request, index)
        elif binding.body and request is not None:
            body_field = next(f for f in request.field if f.name == binding.body)
            target = index.get(body_field.type_name.lstrip(".")) if body_field.type_name else None
            if target is not None and target.options.map_entry:
                whole_body = _scalar_maps(request, index).get(binding.body)
                scalar_maps = {"": whole_body} if whole_body else {}
            else:
                scalar_maps = _scalar_maps(target, index)
        route = routes.setdefault(binding.path, {"segments": path_template_segments(binding.path), "methods": {}})
        methods = route["methods"]
        assert isinstance(methods, dict)
        methods[binding.verb] = {"scalar_maps": scalar_maps}
    return list(routes.values())


def _json(value: object) -> str:
    # JSON is YAML flow syntax: quoted strings and inline lists/maps drop into the template safely.
    return json.dumps(value)


def _socket_address(address: HostPort) -> dict[str, object]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


_RAW_BUFFER: dict[str, object] = {
    "name": "envoy.transport_sockets.raw_buffer",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
}
#: The endpoint metadata key that picks an upstream's transport socket (Cluster.transport_socket_matches).
_TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"


def _downstream_transport_socket(settings: GatewaySettings) -> dict[str, object]:
    if settings.tls_cert is None or settings.tls_key is None:
        return _RAW_BUFFER
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


def _upstream_tls_context(settings: GatewaySettings, hosts: Sequence[HostPort]) -> dict[str, object]:
    """TLS to replicas named ``hosts``: h2, the CA, and a certificate that names one of them.

    A DNS name is also sent as SNI (an IP address may not be) and matched against the DNS SANs; an IP
    address is matched against the IP SANs.
    """
    assert settings.upstream_tls_ca is not None
    names = [
        {"san_type": "IP_ADDRESS" if host.is_ip else "DNS", "matcher": {"exact": host.host}}
        for host in dict.fromkeys(HostPort(h.host, 0) for h in hosts)
    ]
    common: dict[str, object] = {
        # Envoy's upstream default stops at TLS 1.2.
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "alpn_protocols": ["h2"],  # gRPC servers require ALPN h2
        "validation_context": {
            "trusted_ca": {"filename": str(settings.upstream_tls_ca.resolve())},
            "match_typed_subject_alt_names": names,
        },
    }
    if settings.upstream_tls_cert is not None and settings.upstream_tls_key is not None:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(settings.upstream_tls_cert.resolve())},
                "private_key": {"filename": str(settings.upstream_tls_key.resolve())},
            }
        ]
    context: dict[str, object] = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": common,
    }
    if len(hosts) == 1 and not hosts[0].is_ip:
        context["sni"] = hosts[0].host
    return {"name": "envoy.transport_sockets.tls", "typed_config": context}


def _upstream_transport(
    settings: GatewaySettings, upstreams: Sequence[HostPort]
) -> tuple[dict[str, object] | None, list[dict[str, object]], list[dict[str, object]]]:
    """The cluster's transport socket (None: plaintext), its transport socket matches, and its endpoints.

    With TLS each replica gets its own context (its name as SNI and the one SAN accepted), picked by the
    endpoint's metadata; health checks use the same. The cluster-wide default, never picked in practice,
    still verifies against the CA and accepts any of the replicas' names: never plaintext.
    """
    endpoints: list[dict[str, object]] = []
    matches: list[dict[str, object]] = []
    for number, address in enumerate(upstreams):
        endpoint: dict[str, object] = {"endpoint": {"address": _socket_address(address), "hostname": address.host}}
        if settings.upstream_tls:
            key = {"upstream": str(number)}
            endpoint["metadata"] = {"filter_metadata": {_TRANSPORT_SOCKET_MATCH: key}}
            matches.append(
                {
                    "name": f"upstream-{number}",
                    "match": key,
                    "transport_socket": _upstream_tls_context(settings, [address]),
                }
            )
        endpoints.append(endpoint)
    # null: the cluster's default, plaintext.
    default = _upstream_tls_context(settings, upstreams) if settings.upstream_tls else None
    return default, matches, endpoints


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _check_files(settings: GatewaySettings) -> None:
    files = (
        (settings.tls_cert, "CRM_HUB_TLS_CERT"),
        (settings.tls_key, "CRM_HUB_TLS_KEY"),
        (settings.upstream_tls_ca, "CRM_HUB_GRPC_UPSTREAM_TLS_CA"),
        (settings.upstream_tls_cert, "CRM_HUB_GRPC_UPSTREAM_TLS_CERT"),
        (settings.upstream_tls_key, "CRM_HUB_GRPC_UPSTREAM_TLS_KEY"),
    )
    for path, name in files:
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{name} names no readable file: {path}")


def render_config(
    settings: GatewaySettings,
    *,
    descriptor_set: Path | None = None,
    lua_script: Path | None = None,
) -> str:
    """The Envoy bootstrap YAML for ``settings``; the descriptor set and Lua script are referenced by path."""
    descriptor = (descriptor_set or descriptor_set_path()).resolve()
    script = (lua_script or lua_script_path()).resolve()
    _check_files(settings)
    upstreams = [_connectable(address) for address in settings.upstreams]
    files = load_descriptor_set(descriptor)
    upstream_transport_socket, transport_socket_matches, upstream_endpoints = _upstream_transport(settings, upstreams)
    template = string.Template(template_path().read_text())
    return template.substitute(
        admin_port=settings.admin_port,
        http_host=_json("127.0.0.1" if settings.http_address.host == "localhost" else settings.http_address.host),
        http_port=settings.http_address.port,
        downstream_transport_socket=_json(_downstream_transport_socket(settings)),
        max_request_body_bytes=MAX_REQUEST_BODY_BYTES,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        request_timeout=_duration(settings.request_timeout),
        request_headers_timeout=_duration(REQUEST_HEADERS_TIMEOUT_SECONDS),
        lua_path=_json(str(script)),
        lua_metadata=_json(
            {
                "path_variables": path_variables(files),
                "routes": lua_routes(files),
                "max_url_bytes": MAX_URL_BYTES,
                "max_body_bytes": MAX_REQUEST_BODY_BYTES,
            }
        ),
        descriptor_path=_json(str(descriptor)),
        services=_json(service_names(files)),
        # STATIC needs IP addresses; names (a Kubernetes service, a compose host) are resolved and re-resolved.
        cluster_type="STATIC" if all(address.is_ip for address in upstreams) else "STRICT_DNS",
        max_upstream_response_headers_kb=MAX_UPSTREAM_RESPONSE_HEADERS_KB,
        upstream_transport_socket=_json(upstream_transport_socket),
        transport_socket_matches=_json(transport_socket_matches),
        upstream_endpoints=_json(upstream_endpoints),
        health_check_interval=_duration(settings.health_check_interval),
    )
