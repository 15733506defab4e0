"""Settings, read once from the environment by pydantic: each field names its variable (the README's
configuration table lists them all), its type and its checks; a wrong value stops the start with a
``ConfigurationError`` naming the variable. Blank values count as unset."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from crm_hub.errors import ConfigurationError
from crm_hub.settings import DEFAULT_GRPC_ADDRESS, check_listener_security, invalid_setting, variable, variables_in

__all__ = ["DEFAULT_GRPC_ADDRESS", "DEFAULT_METRICS_ADDRESS", "Settings", "check_listener_security"]

#: Where ``crm-hub up`` serves metrics and readiness unless CRM_HUB_METRICS_ADDRESS says otherwise.
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


@dataclass(frozen=True, config=ConfigDict(validate_by_name=True, validate_by_alias=True))
class Settings:
    """Service settings. Secret values are kept out of ``repr`` so a logged Settings leaks nothing."""

    environment: str = variable("CRM_HUB_ENV", "development")
    grpc_address: str = variable("CRM_HUB_GRPC_ADDRESS", DEFAULT_GRPC_ADDRESS)
    data_dir: Path = variable("CRM_HUB_DATA_DIR", Path("var"))
    database_url: str | None = variable("DATABASE_URL", None, secret=True)  # may embed a password
    secret_vault_key: str | None = variable("SECRET_VAULT_KEY", None, secret=True)
    secret_vault_previous_keys: str | None = variable("SECRET_VAULT_PREVIOUS_KEYS", None, secret=True)
    jwt_secret: str | None = variable("JWT_SECRET", None, secret=True)
    jwt_public_key: str | None = variable("JWT_PUBLIC_KEY", None, secret=True)
    jwt_issuer: str | None = variable("JWT_ISSUER", None)
    jwt_audience: str | None = variable("JWT_AUDIENCE", None)
    #: The plugins to load (distribution or entry point names); None loads every installed one, () none.
    plugins: tuple[str, ...] | None = variable("CRM_HUB_PLUGINS", None)
    log_level: str = variable("CRM_HUB_LOG_LEVEL", "INFO")
    log_format: str = variable("CRM_HUB_LOG_FORMAT", "json")
    #: Library loggers (database drivers, HTTP clients) follow ``log_level`` only when this is set: at DEBUG
    #: they print SQL parameters and request bodies, i.e. lead data. Off, they never log below WARNING.
    log_personal_data: bool = variable("CRM_HUB_LOG_PERSONAL_DATA", False)
    #: PEM certificate chain and key: the gRPC server then listens with TLS only.
    grpc_tls_cert: Path | None = variable("CRM_HUB_GRPC_TLS_CERT", None)
    grpc_tls_key: Path | None = variable("CRM_HUB_GRPC_TLS_KEY", None)
    #: PEM bundle of the CAs whose client certificates are accepted: mutual TLS, a certificate required.
    grpc_tls_client_ca: Path | None = variable("CRM_HUB_GRPC_TLS_CLIENT_CA", None)
    #: The operator says a TLS-terminating proxy sits in front: production may then listen in plaintext
    #: on an address other than loopback.
    behind_tls_proxy: bool = variable("CRM_HUB_BEHIND_TLS_PROXY", False)
    #: The job library's queue (PostgreSQL): replicas defer to it, workers run it. One per deployment.
    queue_name: str = variable("CRM_HUB_QUEUE", "crm_hub")
    #: Batches one worker runs at once (each for a different CRM account).
    worker_concurrency: int = variable("CRM_HUB_WORKER_CONCURRENCY", 8)
    #: How often a worker says it is alive; one silent three times as long counts as gone and its batch reruns.
    worker_heartbeat_seconds: float = variable("CRM_HUB_WORKER_HEARTBEAT_SECONDS", 10.0)
    #: On SIGTERM, a replica reports NOT_SERVING and keeps serving this long before it stops taking calls, so the
    #: load balancer's health checks take it out of rotation first (behind Envoy: a little over 2 checks).
    drain_seconds: float = variable("CRM_HUB_DRAIN_SECONDS", 0.0)
    #: host:port of the operations address (/metrics, /readyz, /livez); unset or "off" serves none. ``crm-hub up``
    #: serves it on DEFAULT_METRICS_ADDRESS unless told "off".
    metrics_address: str | None = variable("CRM_HUB_METRICS_ADDRESS", None)
    #: Also count syncs and leads by team (crm_hub_team_* families): one series per team.
    metrics_team_labels: bool = variable("CRM_HUB_METRICS_TEAM_LABELS", False)
    #: How often the database is pinged for readiness (NOT_SERVING while it does not answer).
    health_check_seconds: float = variable("CRM_HUB_HEALTH_CHECK_SECONDS", 5.0)

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def __str__(self) -> str:
        return repr(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings in ``environ`` (the process environment by default); other variables are ignored."""
        try:
            return _FROM_ENVIRONMENT.validate_python(variables_in(_FIELDS, environ))
        except ValidationError as error:
            raise invalid_setting(error) from None

    # -- checks, for values from the environment and from code alike ---------------------------------

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        value = value.strip()
        if value or info.field_name == "plugins":  # CRM_HUB_PLUGINS="" means: load none
            return value
        return _FIELDS[str(info.field_name)].default

    @field_validator("environment", mode="after")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        value = value.lower()
        if value not in ("development", "production"):
            raise ConfigurationError(f"CRM_HUB_ENV must be 'development' or 'production', not {value!r}")
        return value

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_list(cls, value: Any) -> Any:
        return tuple(name.strip() for name in value.split(",") if name.strip()) if isinstance(value, str) else value

    @field_validator("log_level", mode="after")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.upper()
        if value not in logging.getLevelNamesMapping():
            raise ConfigurationError(
                f"CRM_HUB_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, not {value!r}"
            )
        return value

    @field_validator("log_format", mode="after")
    @classmethod
    def _known_format(cls, value: str) -> str:
        value = value.lower()
        if value not in ("json", "text"):
            raise ConfigurationError(f"CRM_HUB_LOG_FORMAT must be 'json' or 'text', not {value!r}")
        return value

    @field_validator("log_personal_data", "behind_tls_proxy", "metrics_team_labels", mode="before")
    @classmethod
    def _flag(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        if value.lower() not in _TRUE + _FALSE:
            raise ConfigurationError(f"{_VARIABLES[str(info.field_name)]} must be true or false, not {value!r}")
        return value.lower() in _TRUE

    @field_validator("worker_concurrency", "worker_heartbeat_seconds", "health_check_seconds", mode="before")
    @classmethod
    def _positive(cls, value: Any, info: ValidationInfo) -> Any:
        kind = int if info.field_name == "worker_concurrency" else float
        try:
            number = kind(value)
        except (TypeError, ValueError):
            number = 0
        if number <= 0:
            raise ConfigurationError(f"{_VARIABLES[str(info.field_name)]} must be a positive number, not {value!r}")
        return number

    @field_validator("drain_seconds", mode="before")
    @classmethod
    def _not_negative(cls, value: Any) -> Any:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = -1.0
        if not 0 <= seconds <= 300:
            raise ConfigurationError(f"CRM_HUB_DRAIN_SECONDS must be a number of seconds from 0 to 300, not {value!r}")
        return seconds

    @field_validator("metrics_address", mode="after")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is None or value.lower() == "off":
            return None if value is None else "off"
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigurationError(f"CRM_HUB_METRICS_ADDRESS must be host:port or off, not {value!r}")
        return value

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        """Where the operations address is served, or None."""
        if self.metrics_address is None or self.metrics_address == "off":
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.strip("[]"), int(port)

    @model_validator(mode="after")
    def _tls_in_pairs(self) -> Settings:
        if (self.grpc_tls_cert is None) != (self.grpc_tls_key is None):
            raise ConfigurationError("Set both CRM_HUB_GRPC_TLS_CERT and CRM_HUB_GRPC_TLS_KEY, or neither.")
        if self.grpc_tls_client_ca is not None and self.grpc_tls_cert is None:
            raise ConfigurationError("CRM_HUB_GRPC_TLS_CLIENT_CA needs CRM_HUB_GRPC_TLS_CERT and CRM_HUB_GRPC_TLS_KEY.")
        return self


_FIELDS: dict[str, FieldInfo] = Settings.__pydantic_fields__  # type: ignore[attr-defined]  # made by pydantic
#: Each setting's environment variable, by field name.
_VARIABLES: dict[str, str] = {name: str(field.validation_alias) for name, field in _FIELDS.items()}
_FROM_ENVIRONMENT = TypeAdapter(Settings)
