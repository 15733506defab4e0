"""The one place where crm_hub's errors become gRPC statuses.

Every error carries a google.rpc.ErrorInfo (domain ``crm_hub``, a machine-readable ``reason``), plus a
google.rpc.BadRequest when specific fields are at fault and a google.rpc.RetryInfo when the CRM said how
long to wait. The message is written for a person and never contains a secret.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from crm_hub import errors

__all__ = ["ERROR_DOMAIN", "status_code_for", "to_grpc_status"]

ERROR_DOMAIN = "crm_hub"

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
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))]
    if error.field_violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.field_violations
                    ]
                )
            )
        )
    retry_after = error.retry_after if isinstance(error, errors.ProviderError) else None
    if retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int(retry_after * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)
