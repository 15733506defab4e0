"""crm_hub's exceptions. Every error a user can see is one of these, with a machine-readable reason.

    CrmHubError                      reason, message, field_violations
    ├── InvalidArgument              bad input (INVALID_ARGUMENT)
    │   └── MappingInvalid           a field mapping that cannot be saved
    ├── NotFound                     no such thing for this team (NOT_FOUND)
    ├── AlreadyExists                (ALREADY_EXISTS)
    ├── Unauthenticated              missing or bad token (UNAUTHENTICATED)
    ├── PermissionDenied             role too low (PERMISSION_DENIED)
    ├── FailedPrecondition           e.g. provider not connected (FAILED_PRECONDITION)
    ├── VaultError                   a ciphertext that cannot be opened (INTERNAL; never says why in detail)
    ├── StorageUnavailable           the database is busy (locked) or unreachable: try again (UNAVAILABLE)
    ├── ConfigurationError           the service is set up wrongly (refuses to start)
    └── ProviderError                raised by provider plugins, classified by the CRM's answer
        ├── AuthExpired              the access token is no longer valid: refresh and retry once
        ├── RefreshRejected          the refresh token was refused (invalid_grant): reconnect needed
        ├── RateLimited              429 and friends: retry after `retry_after` seconds
        ├── Rejected                 the CRM refused the data (validation, duplicates): never retried
        ├── AccessDenied             the CRM refuses the connection as set up (client, scopes, permissions)
        └── Unavailable              5xx, timeouts, connection errors: retried with backoff

The mapping onto gRPC status codes lives in one place: ``crm_hub.rpc.errors``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "AccessDenied",
    "AlreadyExists",
    "AuthExpired",
    "ConfigurationError",
    "CrmHubError",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "MappingInvalid",
    "NotFound",
    "PermissionDenied",
    "ProviderError",
    "RateLimited",
    "RefreshRejected",
    "Rejected",
    "StorageUnavailable",
    "Unauthenticated",
    "Unavailable",
    "VaultError",
]


@dataclass(frozen=True)
class FieldViolation:
    """One offending input field and what is wrong with it (rendered as google.rpc.BadRequest)."""

    field: str
    description: str


class CrmHubError(Exception):
    """Base of every error crm_hub raises on purpose."""

    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        field_violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(CrmHubError):
    default_reason = "INVALID_ARGUMENT"


class MappingInvalid(InvalidArgument):
    default_reason = "MAPPING_INVALID"


class NotFound(CrmHubError):
    default_reason = "NOT_FOUND"


class AlreadyExists(CrmHubError):
    default_reason = "ALREADY_EXISTS"


class Unauthenticated(CrmHubError):
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(CrmHubError):
    default_reason = "PERMISSION_DENIED"


class FailedPrecondition(CrmHubError):
    default_reason = "FAILED_PRECONDITION"


class VaultError(CrmHubError):
    default_reason = "VAULT_DECRYPT_FAILED"


class StorageUnavailable(CrmHubError):
    default_reason = "STORAGE_UNAVAILABLE"


class ConfigurationError(CrmHubError):
    default_reason = "CONFIGURATION_ERROR"


class ProviderError(CrmHubError):
    """Raised by provider adapters. ``provider`` names the CRM; ``status`` is its HTTP status, if any.

    ``retryable`` says whether the core may try the call again (only RateLimited and Unavailable are, by
    default); a provider sets it False for, e.g., a daily quota that waiting seconds will not restore.
    ``retry_after`` is how long the CRM asked to wait, when it said (429/503 ``Retry-After``).
    ``maybe_applied`` says the CRM may have carried the request out before failing (a 5xx or a read timeout
    after the request was sent); False when it certainly did not (429, 423, a refused connection). The core
    retries a write that is not idempotent (a create) only when ``maybe_applied`` is False.
    """

    default_reason = "PROVIDER_ERROR"
    retryable: bool = False
    maybe_applied: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        reason: str | None = None,
        field_violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        maybe_applied: bool | None = None,
    ) -> None:
        super().__init__(message, reason=reason, field_violations=field_violations, metadata=metadata)
        self.provider = provider
        self.status = status
        if retryable is not None:
            self.retryable = retryable
        if maybe_applied is not None:
            self.maybe_applied = maybe_applied
        #: Seconds the CRM asked us to wait (Retry-After), if it said; honoured by the core's retries.
        self.retry_after = retry_after


class AuthExpired(ProviderError):
    default_reason = "AUTH_EXPIRED"


class RefreshRejected(ProviderError):
    default_reason = "CREDENTIALS_EXPIRED"


class RateLimited(ProviderError):
    default_reason = "RATE_LIMITED"
    retryable = True


class Rejected(ProviderError):
    default_reason = "REJECTED"


class AccessDenied(ProviderError):
    """The CRM refuses this connection as it is set up — the service's OAuth client, the granted scopes, the
    user's permissions, the org's instance: an admin must fix the integration; other data won't help."""

    default_reason = "CRM_ACCESS_DENIED"


class Unavailable(ProviderError):
    default_reason = "PROVIDER_UNAVAILABLE"
    retryable = True
    maybe_applied = True
