"""The server's interceptor: every crm_hub RPC passes the same small steps, in this order.

    access log        one line per RPC (method, team, status code, duration, request id) and its metrics
    error mapping     crm_hub errors become gRPC statuses (``crm_hub.rpc.errors``), never anywhere else
    request guard     a request that does not decode (invalid UTF-8, wrong wire types) or is too large is
                      INVALID_ARGUMENT, not UNKNOWN with a traceback
    authentication    ``authorization: Bearer <JWT>`` → the verified caller (``current_caller()``)
    authorization     the role ``METHOD_POLICY`` names for the method (fail closed: no entry, no call)
    time budget       every CRM retry of the RPC shares the caller's deadline, at most ``RPC_TIME_BUDGET``

Servicers stay thin: they read the caller with ``current_caller()`` and raise crm_hub errors. Unary and
server-streaming RPCs are served alike; client-streaming ones are refused (crm_hub has none).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.core.retry import retry_deadline
from crm_hub.errors import CrmHubError, InvalidArgument, PermissionDenied, Unauthenticated
from crm_hub.observability import metrics
from crm_hub.observability.tracing import current_trace_id
from crm_hub.rpc.auth import TokenVerifier
from crm_hub.rpc.errors import status_code_for, to_grpc_status

__all__ = [
    "MAX_REQUEST_BYTES",
    "MAX_TOKEN_BYTES",
    "METHOD_POLICY",
    "PUBLIC_METHOD_PREFIXES",
    "ServerInterceptor",
    "current_caller",
]

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
    "/crm_hub.v1.IntegrationsService/GetIntegrationSettings": (Role.MEMBER, "read an integration's settings"),
    "/crm_hub.v1.IntegrationsService/UpdateIntegrationSettings": (Role.ADMIN, "change an integration's settings"),
    "/crm_hub.v1.FieldsService/ListFields": (Role.MEMBER, "list fields"),
    "/crm_hub.v1.FieldsService/SaveMapping": (Role.ADMIN, "save a field mapping"),
    "/crm_hub.v1.FieldsService/GetMapping": (Role.MEMBER, "read a field mapping"),
    "/crm_hub.v1.SyncService/SyncLead": (Role.MEMBER, "sync a lead"),
    "/crm_hub.v1.SyncService/SyncLeads": (Role.MEMBER, "start a sync job"),
    "/crm_hub.v1.SyncService/GetSyncJob": (Role.MEMBER, "read a sync job"),
    "/crm_hub.v1.SyncService/ListSyncJobs": (Role.MEMBER, "list sync jobs"),
    "/crm_hub.v1.SyncService/CancelSyncJob": (Role.MEMBER, "cancel a sync job"),
    "/crm_hub.v1.SyncService/ListSyncJobResults": (Role.MEMBER, "read a sync job's results"),
    "/crm_hub.v1.SyncService/WatchSyncJob": (Role.MEMBER, "watch a sync job"),
    "/crm_hub.v1.StatusService/GetStatus": (Role.MEMBER, "read integration status"),
    "/crm_hub.v1.LeadsService/CreateLead": (Role.MEMBER, "create a lead"),
    "/crm_hub.v1.LeadsService/GetLead": (Role.MEMBER, "read a lead"),
    "/crm_hub.v1.LeadsService/UpdateLead": (Role.MEMBER, "update a lead"),
    "/crm_hub.v1.LeadsService/DeleteLead": (Role.ADMIN, "delete a lead"),
    "/crm_hub.v1.LeadsService/ListTimelineEvents": (Role.MEMBER, "read a lead's timeline"),
}

#: Seconds an RPC may spend retrying CRM calls, at most (less when the caller's deadline is nearer): under the
#: gateway's 60 s route timeout, so a REST client hears the real outcome rather than a 504.
RPC_TIME_BUDGET = 50.0
#: Largest request message served (the gateway refuses larger REST bodies with 413 before they get here).
MAX_REQUEST_BYTES = 1024 * 1024
#: Longest ``authorization`` value accepted. The server's metadata limit (64 KiB, ``server.py``) is far
#: above it, so a big token gets this clear UNAUTHENTICATED, never gRPC's random RESOURCE_EXHAUSTED.
MAX_TOKEN_BYTES = 8 * 1024

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_current_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("crm_hub_caller")

Context = grpc.aio.ServicerContext[Any, Any]
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


def current_caller() -> Caller:
    """The verified caller of the RPC being served (set by ServerInterceptor)."""
    return _current_caller.get()


@dataclass(frozen=True)
class _Undecodable:
    """What the guarded deserializer hands on instead of a request it could not read."""

    error: InvalidArgument


@dataclass
class _Call:
    """One RPC being served: what its access-log line says."""

    method: str
    request_id: str
    team_id: str = ""
    code: grpc.StatusCode = grpc.StatusCode.OK
    started: float = field(default_factory=time.perf_counter)


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # stubs lag grpc.aio
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier
        #: The handler served for each registered method, made on its first call: the method's handler is the
        #: same on every call, so neither the lookup nor the wrapping is paid again.
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any] | None] = {}

    async def intercept_service(  # type: ignore[override]  # returning None means "no such method"
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None  # not remembered: a client may name any number of methods that do not exist
        served = self._handlers[method] = self._serving(method, handler)
        return served

    def _serving(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The handler that runs ``method`` through every step of this interceptor."""
        if method.startswith(PUBLIC_METHOD_PREFIXES):
            return handler
        deserializer = _guarded(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),  # type: ignore[arg-type]  # aio handlers are coroutines
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),  # type: ignore[arg-type]
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return None  # fail closed: a client-streaming RPC would bypass these steps (UNIMPLEMENTED)

    def _unary(self, method: str, behavior: UnaryBehavior) -> UnaryBehavior:
        async def serve(request: Any, context: Context) -> Any:
            async with self._served(method, request, context):
                return await behavior(request, context)

        return serve

    def _stream(self, method: str, behavior: StreamBehavior) -> StreamBehavior:
        async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._served(method, request, context):
                async for response in behavior(request, context):
                    yield response

        return serve

    @contextlib.asynccontextmanager
    async def _served(self, method: str, request: Any, context: Context) -> AsyncIterator[None]:
        metadata = dict(context.invocation_metadata() or ())
        call = _Call(method=method, request_id=_request_id(metadata.get("x-request-id")))
        with _access_log(call):
            async with _errors_as_status(call, context):
                if isinstance(request, _Undecodable):
                    raise request.error
                principal = self._authenticate(metadata.get("authorization"))
                call.team_id = principal.team_id
                _authorize(method, principal)
                with _as_current(Caller(principal=principal, request_id=call.request_id)), _time_budget(context):
                    yield
                context.set_trailing_metadata((("x-request-id", call.request_id),))

    def _authenticate(self, authorization: str | bytes | None) -> Principal:
        if not isinstance(authorization, str) or not authorization.strip():
            raise Unauthenticated("Missing 'authorization: Bearer <token>' metadata.", reason="TOKEN_MISSING")
        if len(authorization) > MAX_TOKEN_BYTES:
            raise Unauthenticated(
                f"The authorization metadata is longer than {MAX_TOKEN_BYTES} bytes; no token of ours is that long.",
                reason="TOKEN_TOO_LARGE",
            )
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("The authorization metadata must be 'Bearer <token>'.", reason="TOKEN_MISSING")
        return self._verifier.verify(token.strip())


def _guarded(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """The method's request deserializer, turning what it cannot read into an ``_Undecodable``.

    gRPC would answer a deserializer's exception with UNKNOWN and log a traceback; the caller sent bytes that
    are not the request message (a string that is not UTF-8, a wrong wire type), which is INVALID_ARGUMENT.
    """
    if deserializer is None:
        return None

    def deserialize(raw: bytes) -> Any:
        if len(raw) > MAX_REQUEST_BYTES:
            return _Undecodable(
                InvalidArgument(
                    f"The request is {len(raw)} bytes; at most {MAX_REQUEST_BYTES} are accepted.",
                    reason="REQUEST_TOO_LARGE",
                    metadata={"limit_bytes": str(MAX_REQUEST_BYTES)},
                )
            )
        try:
            return deserializer(raw)
        except (DecodeError, UnicodeDecodeError, ValueError):
            return _Undecodable(
                InvalidArgument(
                    "The request could not be read: every string must be valid UTF-8 and every field of its "
                    "declared type.",
                    reason="REQUEST_MALFORMED",
                )
            )

    return deserialize


@contextlib.contextmanager
def _access_log(call: _Call) -> Iterator[None]:
    try:
        yield
    except BaseException as error:
        if not isinstance(error, grpc.aio.AbortError):
            call.code = grpc.StatusCode.CANCELLED  # the client went away (or the server is stopping)
        raise
    finally:
        seconds = time.perf_counter() - call.started
        method = call.method.rpartition(".")[2]  # "/crm_hub.v1.SyncService/SyncLead" -> "SyncService/SyncLead"
        metrics.count_rpc(method, call.code.name, seconds)
        logger.info(
            "rpc",
            extra={
                "method": call.method,
                "team": call.team_id,
                "code": call.code.name,
                "duration_ms": round(seconds * 1000, 2),
                "request_id": call.request_id,
            },
        )


@contextlib.asynccontextmanager
async def _errors_as_status(call: _Call, context: Context) -> AsyncIterator[None]:
    """crm_hub errors → their status (with rich details); anything unexpected → INTERNAL, logged."""
    try:
        yield
        return
    except CrmHubError as error:
        call.code = status_code_for(error)
        status = to_grpc_status(error, request_id=call.request_id)
        if call.code is grpc.StatusCode.INTERNAL:
            logger.error(
                "internal error",
                extra={
                    "method": call.method,
                    "request_id": call.request_id,
                    "reason": error.reason,
                    "error": error.message,
                },
            )
        details, trailers = status.details, tuple(status.trailing_metadata)
    except grpc.aio.AbortError:
        call.code = context.code()
        raise
    except Exception:
        logger.exception("unhandled error", extra={"method": call.method, "request_id": call.request_id})
        call.code = grpc.StatusCode.INTERNAL
        details, trailers = f"Internal error; quote request id {call.request_id}.", ()
    await context.abort(call.code, details, (*trailers, ("x-request-id", call.request_id)))


@contextlib.contextmanager
def _as_current(caller: Caller) -> Iterator[None]:
    token = _current_caller.set(caller)
    try:
        yield
    finally:
        _current_caller.reset(token)


def _time_budget(context: Context) -> contextlib.AbstractContextManager[None]:
    remaining = context.time_remaining()
    budget = RPC_TIME_BUDGET if remaining is None else min(remaining, RPC_TIME_BUDGET)
    return retry_deadline(time.monotonic() + budget)


def _authorize(method: str, principal: Principal) -> None:
    policy = METHOD_POLICY.get(method)
    if policy is None:
        raise PermissionDenied(f"{method} has no access policy.", reason="METHOD_NOT_ALLOWED")
    role, action = policy
    principal.require(role, action)


def _request_id(incoming: str | bytes | None) -> str:
    """The caller's x-request-id if it is a sane one; else the trace's id when tracing (so the timeline and the
    logs lead to the trace), or a new one."""
    if isinstance(incoming, str) and _REQUEST_ID.fullmatch(incoming):
        return incoming
    return current_trace_id() or uuid.uuid4().hex
