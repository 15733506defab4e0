"""The server's one interceptor: authenticate, authorize by role, map errors, log one line per RPC.

Servicers stay thin: they read the verified caller with ``current_caller()`` and raise crm_hub errors,
which become gRPC statuses here (through ``crm_hub.rpc.errors``), never anywhere else.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from crm_hub.auth import Principal, Role, TokenVerifier
from crm_hub.core.caller import Caller
from crm_hub.core.retry import retry_deadline
from crm_hub.errors import CrmHubError, PermissionDenied, Unauthenticated
from crm_hub.rpc.errors import status_code_for, to_grpc_status

__all__ = ["METHOD_POLICY", "PUBLIC_METHOD_PREFIXES", "ServerInterceptor", "current_caller"]

logger = logging.getLogger("crm_hub.rpc")

#: Services anyone may call without a token: health checks and reflection.
PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

#: Every crm_hub RPC and the role it needs, with the action named in a PERMISSION_DENIED message.
#: A method missing here is refused (fail closed); a test keeps this table in step with the protos.
METHOD_POLICY: dict[str, tuple[Role, str]] = {
    "/crm_hub.v1.IntegrationsService/StartOAuth": (Role.ADMIN, "connect an integration"),
    "/crm_hub.v1.IntegrationsService/CompleteOAuth": (Role.ADMIN, "connect an integration"),
    "/crm_hub.v1.IntegrationsService/Disconnect": (Role.ADMIN, "disconnect an integration"),
    "/crm_hub.v1.FieldsService/ListFields": (Role.MEMBER, "list fields"),
    "/crm_hub.v1.FieldsService/SaveMapping": (Role.ADMIN, "save a field mapping"),
    "/crm_hub.v1.FieldsService/GetMapping": (Role.MEMBER, "read a field mapping"),
    "/crm_hub.v1.SyncService/SyncLead": (Role.MEMBER, "sync a lead"),
    "/crm_hub.v1.StatusService/GetStatus": (Role.MEMBER, "read integration status"),
    "/crm_hub.v1.LeadsService/CreateLead": (Role.MEMBER, "create a lead"),
    "/crm_hub.v1.LeadsService/GetLead": (Role.MEMBER, "read a lead"),
    "/crm_hub.v1.LeadsService/ListTimelineEvents": (Role.MEMBER, "read a lead's timeline"),
}

_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("crm_hub_caller")
#: Seconds an RPC may spend retrying CRM calls, at most (less when the caller's deadline is nearer): under the
#: gateway's 60 s route timeout, so a REST client hears the real outcome rather than a 504.
RPC_TIME_BUDGET = 50.0
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def current_caller() -> Caller:
    """The verified caller of the RPC being served (set by ServerInterceptor)."""
    return _current_caller.get()


Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # stubs lag grpc.aio
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(  # type: ignore[override]  # returning None means "no such method"
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        if handler.unary_unary is None:
            return None  # fail closed: a streaming RPC would bypass authentication here (UNIMPLEMENTED)
        return grpc.unary_unary_rpc_method_handler(
            self._wrap(method, handler.unary_unary),  # type: ignore[arg-type]  # aio handlers are coroutines
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, method: str, behavior: Behavior) -> Behavior:
        async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            metadata = dict(context.invocation_metadata() or ())
            request_id = _request_id(metadata.get("x-request-id"))
            team_id = ""
            code = grpc.StatusCode.OK
            try:
                try:
                    principal = self._authenticate(metadata.get("authorization"))
                    team_id = principal.team_id
                    _authorize(method, principal)
                    token = _current_caller.set(Caller(principal=principal, request_id=request_id))
                    remaining = context.time_remaining()
                    budget = RPC_TIME_BUDGET if remaining is None else min(remaining, RPC_TIME_BUDGET)
                    try:
                        with retry_deadline(time.monotonic() + budget):
                            response = await behavior(request, context)
                    finally:
                        _current_caller.reset(token)
                    context.set_trailing_metadata((("x-request-id", request_id),))
                    return response
                except CrmHubError as error:
                    code = status_code_for(error)
                    status = to_grpc_status(error, request_id=request_id)
                    if code is grpc.StatusCode.INTERNAL:
                        logger.error(
                            "internal error",
                            extra={
                                "method": method,
                                "request_id": request_id,
                                "reason": error.reason,
                                "error": error.message,
                            },
                        )
                    details, trailers = status.details, tuple(status.trailing_metadata)
                except grpc.aio.AbortError:
                    code = context.code()
                    raise
                except Exception:
                    logger.exception("unhandled error", extra={"method": method, "request_id": request_id})
                    code = grpc.StatusCode.INTERNAL
                    details, trailers = f"Internal error; quote request id {request_id}.", ()
                await context.abort(code, details, (*trailers, ("x-request-id", request_id)))
            except BaseException as error:
                if not isinstance(error, grpc.aio.AbortError):
                    code = grpc.StatusCode.CANCELLED
                raise
            finally:
                logger.info(
                    "rpc",
                    extra={
                        "method": method,
                        "team": team_id,
                        "code": code.name,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "request_id": request_id,
                    },
                )

        return serve

    def _authenticate(self, authorization: str | bytes | None) -> Principal:
        if not isinstance(authorization, str) or not authorization.strip():
            raise Unauthenticated("Missing 'authorization: Bearer <token>' metadata.", reason="TOKEN_MISSING")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("The authorization metadata must be 'Bearer <token>'.", reason="TOKEN_MISSING")
        return self._verifier.verify(token.strip())


def _authorize(method: str, principal: Principal) -> None:
    policy = METHOD_POLICY.get(method)
    if policy is None:
        raise PermissionDenied(f"{method} has no access policy.", reason="METHOD_NOT_ALLOWED")
    role, action = policy
    principal.require(role, action)


def _request_id(incoming: str | bytes | None) -> str:
    if isinstance(incoming, str) and _REQUEST_ID.match(incoming):
        return incoming
    return uuid.uuid4().hex
