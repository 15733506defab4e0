"""Reading settings from the environment, typed and checked by pydantic: the helpers the service's settings
(``crm_hub.service.config``) and the gateway's (``crm_hub.gateway.config``) are built with, and the listener
rule they share. Ground level: it knows no layer of crm_hub."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo

from crm_hub.errors import ConfigurationError

__all__ = [
    "DEFAULT_GRPC_ADDRESS",
    "ListenerPolicy",
    "check_listener_security",
    "invalid_setting",
    "variable",
    "variables_in",
]

DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"


def variable(name: str, default: Any, *, secret: bool = False) -> Any:
    """A setting read from the environment variable ``name`` (``default`` when it is unset or blank); a
    ``secret`` one is left out of ``repr``."""
    return Field(default, validation_alias=name, repr=not secret)


def variables_in(fields: Mapping[str, FieldInfo], environ: Mapping[str, str] | None) -> dict[str, str]:
    """The variables of ``fields`` that ``environ`` (the process environment by default) sets, by name."""
    env = os.environ if environ is None else environ
    names = (str(field.validation_alias) for field in fields.values() if field.validation_alias)
    return {name: env[name] for name in names if name in env}


def invalid_setting(error: ValidationError) -> ConfigurationError:
    """A type pydantic refused before our own checks ran, as the error that names the variable."""
    first = error.errors()[0]
    return ConfigurationError(f"{first['loc'][0]} is not valid: {first['msg']}")


class ListenerPolicy(Protocol):
    """What decides whether a plaintext listener is allowed (the service's Settings)."""

    @property
    def production(self) -> bool: ...

    @property
    def behind_tls_proxy(self) -> bool: ...


def check_listener_security(policy: ListenerPolicy, address: str, *, tls: bool, tls_settings: str) -> None:
    """In production, refuse to listen in plaintext beyond loopback unless a TLS-terminating proxy is declared.

    ``tls_settings`` names the variables that would give this listener TLS, for the error message.
    """
    if not policy.production or tls or policy.behind_tls_proxy:
        return
    if not _is_loopback(address.rpartition(":")[0]):
        raise ConfigurationError(
            f"CRM_HUB_ENV=production refuses to listen in plaintext on {address}: set {tls_settings}, listen on "
            "loopback, or set CRM_HUB_BEHIND_TLS_PROXY=true if a TLS-terminating proxy (the gateway with "
            "CRM_HUB_TLS_CERT, a load balancer) is the only way in."
        )


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or "" (every interface)
