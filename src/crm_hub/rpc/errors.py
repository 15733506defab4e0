"""The one place where crm_hub's errors become gRPC statuses.

Every error carries a google.rpc.ErrorInfo (domain ``crm_hub``, a machine-readable ``reason``), plus a
google.rpc.BadRequest when specific fields are at fault and a google.rpc.RetryInfo when the CRM said how
long to wait. The message is written for a person and never contains a secret.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from crm_hub import errors

__all__ = ["ERROR_DOMAIN", "status_code_for", "to_grpc_status"]

ERROR_DOMAIN = "crm_hub"
#: The message and details travel in the trailers (grpc-message, grpc-status-details-bin), and every hop
#: caps them: gRPC clients refuse trailers over 8 KiB by default (at random above it), Envoy too. So an error
#: stays small whatever the request was (a 10,000-entry mapping has 10,000 faults): at most this many field
#: violations, within a byte budget, each text clipped.
MAX_FIELD_VIOLATIONS = 50
MAX_DETAILS_BYTES = 3000
MAX_MESSAGE_LENGTH = 600
_MAX_DETAIL_TEXT = 200

# Most specific first: the first matching class wins.
_STATUS_CODES: tuple[tuple[type[errors.CrmHubError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RefreshRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.AuthExpired, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.RateLimited, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Rejected, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.AccessDenied, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ProviderError, grpc.StatusCode.UNAVAILABLE),
    (errors.StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.VaultError, grpc.StatusCode.INTERNAL),
    (errors.ConfigurationError, grpc.StatusCode.INTERNAL),
)


def status_code_for(error: errors.CrmHubError) -> grpc.StatusCode:
    for error_type, code in _STATUS_CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_grpc_status(error: errors.CrmHubError, *, request_id: str = "") -> grpc.Status:
    """A grpc.Status whose trailing metadata carries the rich details (grpc-status-details-bin).

    INTERNAL errors (a ciphertext that won't open, a misconfiguration) say nothing beyond their reason: their
    messages are for the operator's log, not the caller (key ids, file paths).
    """
    code = status_code_for(error)
    if code is grpc.StatusCode.INTERNAL:
        error = errors.CrmHubError(f"Internal error; quote request id {request_id}.", reason=error.reason)
    metadata = {_clip(key): _clip(value) for key, value in error.metadata.items()}
    violations = _within_budget(error.field_violations)
    omitted = len(error.field_violations) - len(violations.field_violations)
    if omitted > 0:
        metadata["field_violations_omitted"] = str(omitted)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if violations.field_violations:
        details.append(_pack(violations))
    retry_after = error.retry_after if isinstance(error, errors.ProviderError) else None
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    message = _clip(error.message, MAX_MESSAGE_LENGTH)
    if omitted > 0:
        message += f" ({omitted} more problems are not listed in the details.)"
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return rpc_status.to_status(status)


def _within_budget(violations: Sequence[errors.FieldViolation]) -> error_details_pb2.BadRequest:
    """The first violations, as many as fit MAX_FIELD_VIOLATIONS and MAX_DETAILS_BYTES."""
    bad_request = error_details_pb2.BadRequest()
    for violation in violations[:MAX_FIELD_VIOLATIONS]:
        bad_request.field_violations.add(field=_clip(violation.field), description=_clip(violation.description))
        if bad_request.ByteSize() > MAX_DETAILS_BYTES:
            del bad_request.field_violations[-1]
            break
    return bad_request


def _clip(text: str, limit: int = _MAX_DETAIL_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
