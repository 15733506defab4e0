"""Settings, read once from the environment. Every variable is listed in the README's configuration table."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from crm_hub.errors import ConfigurationError

__all__ = ["DEFAULT_GRPC_ADDRESS", "Settings", "check_listener_security"]

DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _path(environ: Mapping[str, str], name: str) -> Path | None:
    value = _optional(environ, name)
    return Path(value) if value else None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
_N = TypeVar("_N", int, float)


def _number(environ: Mapping[str, str], name: str, default: _N, kind: type[_N]) -> _N:
    value = _optional(environ, name)
    if value is None:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = kind(0)
    if number <= 0:
        raise ConfigurationError(f"{name} must be a positive number, not {value!r}")
    return number


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = environ.get(name, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigurationError(f"{name} must be true or false, not {value!r}")
    return value in _TRUE


@dataclass(frozen=True)
class Settings:
    """Service settings. Secret values are kept out of ``repr`` so a logged Settings leaks nothing."""

    environment: str = "development"
    grpc_address: str = DEFAULT_GRPC_ADDRESS
    data_dir: Path = Path("var")
    database_url: str | None = field(default=None, repr=False)  # may embed a password
    secret_vault_key: str | None = field(default=None, repr=False)
    secret_vault_previous_keys: str | None = field(default=None, repr=False)
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    plugins: tuple[str, ...] | None = None
    log_level: str = "INFO"
    log_format: str = "json"
    #: Library loggers (database drivers, HTTP clients) follow ``log_level`` only when this is set: at DEBUG
    #: they print SQL parameters and request bodies, i.e. lead data. Off, they never log below WARNING.
    log_personal_data: bool = False
    #: PEM certificate chain and key: the gRPC server then listens with TLS only.
    grpc_tls_cert: Path | None = None
    grpc_tls_key: Path | None = None
    #: PEM bundle of the CAs whose client certificates are accepted: mutual TLS, a certificate required.
    grpc_tls_client_ca: Path | None = None
    #: The operator says a TLS-terminating proxy sits in front: production may then listen in plaintext
    #: on an address other than loopback.
    behind_tls_proxy: bool = False
    #: The job library's queue (PostgreSQL): replicas defer to it, workers run it. One per deployment.
    queue_name: str = "crm_hub"
    #: Batches one worker runs at once (each for a different CRM account).
    worker_concurrency: int = 8
    #: How often a worker says it is alive; one silent three times as long counts as gone and its batch reruns.
    worker_heartbeat_seconds: float = 10.0

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        environment = (_optional(env, "CRM_HUB_ENV") or "development").lower()
        if environment not in ("development", "production"):
            raise ConfigurationError(f"CRM_HUB_ENV must be 'development' or 'production', not {environment!r}")
        plugins_value = env.get("CRM_HUB_PLUGINS")
        plugins = (
            None if plugins_value is None else tuple(name.strip() for name in plugins_value.split(",") if name.strip())
        )
        log_level = (_optional(env, "CRM_HUB_LOG_LEVEL") or "INFO").upper()
        if log_level not in logging.getLevelNamesMapping():
            raise ConfigurationError(
                f"CRM_HUB_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {log_level!r}"
            )
        log_format = (_optional(env, "CRM_HUB_LOG_FORMAT") or "json").lower()
        if log_format not in ("json", "text"):
            raise ConfigurationError(f"CRM_HUB_LOG_FORMAT must be 'json' or 'text', not {log_format!r}")
        cert, key, client_ca = (
            _path(env, name) for name in ("CRM_HUB_GRPC_TLS_CERT", "CRM_HUB_GRPC_TLS_KEY", "CRM_HUB_GRPC_TLS_CLIENT_CA")
        )
        if (cert is None) != (key is None):
            raise ConfigurationError("Set both CRM_HUB_GRPC_TLS_CERT and CRM_HUB_GRPC_TLS_KEY, or neither.")
        if client_ca is not None and cert is None:
            raise ConfigurationError("CRM_HUB_GRPC_TLS_CLIENT_CA needs CRM_HUB_GRPC_TLS_CERT and CRM_HUB_GRPC_TLS_KEY.")
        return cls(
            environment=environment,
            grpc_address=_optional(env, "CRM_HUB_GRPC_ADDRESS") or DEFAULT_GRPC_ADDRESS,
            data_dir=Path(_optional(env, "CRM_HUB_DATA_DIR") or "var"),
            database_url=_optional(env, "DATABASE_URL"),
            secret_vault_key=_optional(env, "SECRET_VAULT_KEY"),
            secret_vault_previous_keys=_optional(env, "SECRET_VAULT_PREVIOUS_KEYS"),
            jwt_secret=_optional(env, "JWT_SECRET"),
            jwt_public_key=_optional(env, "JWT_PUBLIC_KEY"),
            jwt_issuer=_optional(env, "JWT_ISSUER"),
            jwt_audience=_optional(env, "JWT_AUDIENCE"),
            plugins=plugins,
            log_level=log_level,
            log_format=log_format,
            log_personal_data=_flag(env, "CRM_HUB_LOG_PERSONAL_DATA"),
            grpc_tls_cert=cert,
            grpc_tls_key=key,
            grpc_tls_client_ca=client_ca,
            behind_tls_proxy=_flag(env, "CRM_HUB_BEHIND_TLS_PROXY"),
            queue_name=_optional(env, "CRM_HUB_QUEUE") or "crm_hub",
            worker_concurrency=_number(env, "CRM_HUB_WORKER_CONCURRENCY", 8, int),
            worker_heartbeat_seconds=_number(env, "CRM_HUB_WORKER_HEARTBEAT_SECONDS", 10.0, float),
        )


def check_listener_security(settings: Settings, address: str, *, tls: bool, tls_settings: str) -> None:
    """In production, refuse to listen in plaintext beyond loopback unless a TLS-terminating proxy is declared.

    ``tls_settings`` names the variables that would give this listener TLS, for the error message.
    """
    if not settings.production or tls or settings.behind_tls_proxy:
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
