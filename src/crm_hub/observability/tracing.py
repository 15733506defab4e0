"""Traces (OpenTelemetry), opt-in: on when an OTLP endpoint is set in the standard OTel variables.

One trace per RPC and per job batch: the RPC's span (the maintained gRPC instrumentation), the core use
case's (``tracer`` below), each CRM request's (``crm <operation>``, with the provider and the operation) with
the HTTP call inside it (the httpx instrumentation) and each database statement (the SQLAlchemy
instrumentation). Spans carry no token, email or payload: HTTP spans keep only the CRM's origin of the URL
(a path or query may carry a token or a SOQL query full of emails), statements their placeholders.
"""

from __future__ import annotations

import contextvars
import functools
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from opentelemetry import context, trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from crm_hub.observability.metrics import crm_outcome
from crm_hub.providers import CrmOperation, CrmRequest, observe_every_request

__all__ = [
    "CrmRequestSpans",
    "configure_tracing",
    "current_trace_id",
    "flush_traces",
    "grpc_server_interceptors",
    "instrument_database",
    "traced",
    "tracer",
    "tracing_requested",
]

#: The variables that name where traces go; any of them set turns tracing on.
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DEFAULT_SERVICE_NAME = "crm-hub"

_provider: Any = None  # the SDK's TracerProvider once configured (the SDK is imported only then)


#: Until a tracer provider is installed this proxy hands out no-op spans; from then on, the provider's.
_TRACER = trace.get_tracer("crm_hub")


def tracer() -> Tracer:
    """crm_hub's tracer (a no-op one until tracing is configured)."""
    return _TRACER


def _spans_recorded() -> bool:
    """Whether a tracer provider is installed — ours (``configure_tracing``) or one the host process set: until
    then every span is a no-op, and a decorated use case need not make one."""
    return _provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracing_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTel variables ask for traces (an OTLP endpoint, and the SDK not disabled)."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def configure_tracing(*, exporter: Any = None, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for the process if the environment asks (or ``exporter`` is given: tests pass an
    in-memory one, exported at once). Returns whether it is on. Once per process: the tracer provider is global.
    """
    global _provider
    if _provider is not None:
        return True
    if exporter is None and not tracing_requested(environ):
        return False
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    env = os.environ if environ is None else environ
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider, async_request_hook=_origin_only)
    observe_every_request(CrmRequestSpans())
    _provider = provider
    return True


def flush_traces() -> None:
    """Send the spans still buffered (an application closing; the provider stays for the rest of the process)."""
    if _provider is not None:
        _provider.force_flush()


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    """The OTLP exporter the standard variables ask for: http/protobuf (the default) or grpc."""
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip() or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def grpc_server_interceptors() -> list[Any]:
    """The gRPC instrumentation's server interceptor when tracing is on (health checks are left out)."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    interceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]  # the instrumentation is untyped
        tracer_provider=_provider, filter_=filters.negate(filters.health_check())
    )
    return [interceptor]


def instrument_database(sync_engine: Any) -> None:
    """Trace the statements of this engine when tracing is on."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()  # the instrumentor holds one set of engines: the newest application's
    # Its declared range stops below SQLAlchemy 2.1, whose engine events it uses are unchanged (the tracing test
    # proves the statements are traced): the check would switch it off.
    instrumentor.instrument(engine=sync_engine, tracer_provider=_provider, skip_dep_check=True)


def current_trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside a recorded span."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


async def _origin_only(span: Span, request: Any) -> None:
    """Keep only scheme, host and port of a CRM URL: its path or query may carry a token or emails."""
    attributes = getattr(span, "attributes", None) or {}
    for key in ("url.full", "http.url"):
        if key in attributes:
            parts = urlsplit(str(attributes[key]))
            span.set_attribute(key, f"{parts.scheme}://{parts.netloc}")


_open_spans: contextvars.ContextVar[tuple[tuple[Span, object], ...]] = contextvars.ContextVar(
    "crm_hub_crm_request_spans", default=()
)


class CrmRequestSpans:
    """A span around each CRM request (its HTTP call becomes the child), named by the operation."""

    async def started(self, provider: str, operation: CrmOperation) -> None:
        span = tracer().start_span(
            f"crm {operation}",
            kind=trace.SpanKind.CLIENT,
            attributes={"crm.provider": provider, "crm.operation": operation},
        )
        token = context.attach(trace.set_span_in_context(span))
        _open_spans.set((*_open_spans.get(), (span, token)))

    def finished(self, provider: str, operation: CrmOperation, request: CrmRequest) -> None:
        opened = _open_spans.get()
        if not opened:
            return
        (span, token), rest = opened[-1], opened[:-1]
        _open_spans.set(rest)
        outcome = crm_outcome(request)
        span.set_attribute("crm.outcome", outcome)
        if request.status is not None:
            span.set_attribute("http.response.status_code", request.status)
        if outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
        context.detach(token)  # type: ignore[arg-type]  # the token attach gave


_Function = TypeVar("_Function", bound=Callable[..., Awaitable[Any]])


def traced(name: str, *, attributes: Sequence[str] = (), root: bool = False) -> Callable[[_Function], _Function]:
    """Run the decorated coroutine function in a span ``name`` (a core use case); the keyword arguments named in
    ``attributes`` that are short strings (a provider's name, a kind) become ``crm_hub.<name>`` attributes.
    No lead data: name only arguments that never carry any. A ``root`` span starts a trace of its own (a job's
    batch, whichever task or process runs it)."""

    def decorate(function: _Function) -> _Function:
        @functools.wraps(function)
        async def run(*args: Any, **kwargs: Any) -> Any:
            if not _spans_recorded():  # a no-op span still costs ~10 µs to make, enter and leave
                return await function(*args, **kwargs)
            found = {f"crm_hub.{key}": kwargs[key] for key in attributes if isinstance(kwargs.get(key), str)}
            parent = context.Context() if root else None
            with _TRACER.start_as_current_span(name, context=parent, attributes=found):
                return await function(*args, **kwargs)

        return run  # type: ignore[return-value]  # same signature, wrapped

    return decorate
