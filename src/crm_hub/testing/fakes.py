"""A toolkit for fake CRMs: recorded calls, fault injection, and serving the fake on a socket.

A provider plugin ships a fake of its CRM (docs/plugins.md, "Writing a faithful fake"): a Starlette app that
enforces what the CRM enforces. What every such fake needs besides the CRM's own rules is here, once:

- ``FakeCrm``, a base class: the OAuth client the fake accepts (``client_id``, ``client_secret``,
  ``redirect_uri``); ``calls`` (every request, as a ``Call``) with ``count`` and ``calls_to``; ``fail_next``
  and ``timeout_next`` (into a ``FaultPlan``); ``recorded(handler)``, the wrapper that records a request,
  applies the injected faults and answers; ``fault_response``, how the CRM answers an injected failure.
- ``FaultPlan`` on its own: queued ``Fault`` s, failures and delays, each for ``n`` requests, optionally only
  under a path prefix and after letting ``skip`` matching requests through.
- ``filter_calls`` and ``parse_body``: the query over recorded calls, and how a request body is recorded.
- ``AuthorizationCode``: what a fake remembers of an authorization code it issued.
- ``serving`` (in a running event loop), ``serve_forever`` (as a process) and ``bind``: uvicorn on a real
  socket, for a ``FakeCrm`` or any ASGI app; ``argument_parser``, ``oauth_client`` and ``serve_command`` for
  the fake's ``python -m crm_hub_<crm>.fake --port N``.

A sketch (docs/plugins.md has a complete fake)::

    class FakeMyCrm(FakeCrm):
        label = "fake MyCRM"

        def __init__(self) -> None:
            super().__init__(redirect_uri="https://crm-hub.test/oauth/mycrm/callback")
            self.app = Starlette(routes=[Route("/v1/contacts", self.recorded(self._contacts), methods=["GET"])])

        def fault_response(self, fault: Fault) -> Response:
            return JSONResponse({"error": "injected"}, fault.status, headers=fault.headers)

    fake = FakeMyCrm()
    fake.fail_next(status=429, retry_after=2, path="/v1/")   # the next /v1/ request: 429, Retry-After: 2
    async with serving(fake) as base_url: ...                # http://127.0.0.1:PORT (uvicorn)
    assert fake.count("/v1/contacts", method="GET") == 1

Importing this module needs neither Starlette nor uvicorn: they are imported when a fake answers or is
served (install ``crm-hub[testing]``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Protocol, TypeAlias, TypedDict, TypeVar
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp

__all__ = [
    "AuthorizationCode",
    "Call",
    "FakeCrm",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Handler",
    "OAuthClient",
    "argument_parser",
    "bind",
    "filter_calls",
    "oauth_client",
    "parse_body",
    "serve_command",
    "serve_forever",
    "serving",
]

#: A Starlette endpoint: what ``FakeCrm.recorded`` wraps and returns.
Handler: TypeAlias = "Callable[[Request], Awaitable[Response]]"
#: ``fail`` answers a request with an injected failure; ``delay`` holds it, then lets it be answered.
#: fail: answer with an error instead of serving; delay: hold, then serve; lose: serve (the write happens),
#: then answer with an error anyway — the CRM did it, but the client never hears so.
FaultKind = Literal["fail", "delay", "lose"]

_FORM = "application/x-www-form-urlencoded"


# -- recorded calls --------------------------------------------------------------------------------------


class Call(NamedTuple):
    """One request the fake received. ``status`` is None while it runs (or if the client gave up).

    ``query`` is the query string as a dict, ``body`` the request body as ``parse_body`` reads it, and ``host``
    the ``Host`` the request was addressed to (``127.0.0.1:8765``): a fake serving several hosts can tell them
    apart.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int | None
    host: str = ""


class _Routed(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...


_C = TypeVar("_C", bound=_Routed)


def filter_calls(calls: Iterable[_C], path_prefix: str = "", method: str | None = None) -> list[_C]:
    """The calls to a path starting with ``path_prefix`` (and with ``method``, in any case, if given), in order.

    Works on anything with a ``method`` and a ``path``: ``Call``, or a fake's own record type.
    """
    wanted = method.upper() if method is not None else None
    return [call for call in calls if call.path.startswith(path_prefix) and (wanted is None or call.method == wanted)]


def parse_body(raw: bytes, content_type: str = "", *, keep_blank_values: bool = False) -> Any:
    """A request body as a test wants to read it: None when empty, a dict for a form (``a=1&b=2``), the
    decoded JSON when it parses, else the text (undecodable bytes replaced). ``keep_blank_values`` keeps
    a form's empty values (``a=&b=1`` gives ``{"a": "", "b": "1"}`` rather than ``{"b": "1"}``)."""
    if not raw:
        return None
    if content_type.startswith(_FORM):
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=keep_blank_values))
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


# -- fault injection -------------------------------------------------------------------------------------


@dataclass
class Fault:
    """One injection: fail (or delay) the next ``remaining`` requests under ``path`` (any path if None),
    after letting ``skip`` of them through.

    A ``fail`` fault answers with ``status`` (and ``body``, ``retry_after`` as the fake's ``fault_response``
    decides) instead of serving the request; a ``delay`` fault holds the request for ``delay`` seconds of real
    time, then lets it be answered (or failed, if a ``fail`` fault matches too).
    """

    kind: FaultKind
    remaining: int
    path: str | None = None
    status: int = 500
    retry_after: float | None = None
    body: Any = None
    delay: float = 0.0
    skip: int = 0

    def applies_to(self, path: str) -> bool:
        """Whether this fault is still live and matches a request to ``path``."""
        return self.remaining > 0 and (self.path is None or path.startswith(self.path))

    @property
    def headers(self) -> dict[str, str]:
        """``{"Retry-After": "2"}`` when ``retry_after`` is set (``0.5`` gives ``"0.5"``), else ``{}``."""
        return {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else {}


class FaultPlan:
    """Faults queued for the requests to come, oldest first.

    Each request takes at most one delay, then at most one failure, each from the oldest injection of its kind
    that matches the request's path. An injection with ``skip`` left lets that request through and counts it
    down instead (the request is then not matched against younger injections of that kind).
    """

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        """Queue ``fault`` behind the others; returns it. ``plan.add(Fault("fail", 2, "/v1/", status=429))``
        fails the next two requests under ``/v1/``; ``plan.add(Fault("delay", 1, delay=5.0))`` holds the next
        request for 5 s."""
        self._faults.append(fault)
        return fault

    def take(self, kind: FaultKind, path: str) -> Fault | None:
        """The fault of ``kind`` a request to ``path`` gets, used up by one; None if none applies (or it skips)."""
        fault = next((f for f in self._faults if f.kind == kind and f.applies_to(path)), None)
        if fault is None:
            return None
        if fault.skip > 0:
            fault.skip -= 1
            return None
        fault.remaining -= 1
        self._faults = [f for f in self._faults if f.remaining > 0]
        return fault

    async def apply(self, path: str) -> Fault | None:
        """For a request to ``path``: wait out its delay, if one applies, then return the failure to answer
        with, or None to serve the request normally."""
        delay = self.take("delay", path)
        if delay is not None:
            await asyncio.sleep(delay.delay)
        return self.take("fail", path)

    @property
    def pending(self) -> list[Fault]:
        """The faults still queued, oldest first (a copy)."""
        return list(self._faults)

    def clear(self) -> None:
        """Forget every queued fault."""
        self._faults.clear()


# -- OAuth -----------------------------------------------------------------------------------------------


class OAuthClient(TypedDict):
    """The OAuth client a fake accepts, as constructor keywords: ``FakeMyCrm(**oauth_client(args))``."""

    client_id: str
    client_secret: str
    redirect_uri: str


@dataclass
class AuthorizationCode:
    """What a fake remembers of an authorization code it issued: the redirect URI it was issued for (the token
    request must repeat it), the scopes granted, the PKCE challenge (None without PKCE) and when it expires
    (on the fake's clock, in seconds)."""

    redirect_uri: str
    scopes: tuple[str, ...]
    code_challenge: str | None
    expires_at: float


# -- the base class --------------------------------------------------------------------------------------


class FakeCrm:
    """A fake CRM's test-double machinery: the OAuth client it accepts, recorded calls and injected faults.

    A subclass calls ``super().__init__(client_id=..., client_secret=..., redirect_uri=...)``, builds its
    Starlette app as ``self.app`` with every endpoint wrapped in ``self.recorded(...)``, and overrides
    ``fault_response`` to answer failures as its CRM does.
    """

    #: How messages name the fake: ``fake HubSpot listening on http://127.0.0.1:8765``.
    label: ClassVar[str] = "fake CRM"
    #: Whether a recorded form body keeps empty values (see ``parse_body``).
    keep_blank_form_values: ClassVar[bool] = False
    #: The ASGI app: set it in ``__init__``.
    app: ASGIApp

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 - the fake's own test credential
        redirect_uri: str = "http://127.0.0.1/oauth/callback",
    ) -> None:
        #: The OAuth client the fake accepts: its id and secret, and its one registered redirect URI.
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        #: Every request received, in order (see ``Call``).
        self.calls: list[Call] = []
        #: The injected faults still to come (``fail_next``, ``timeout_next``).
        self.faults = FaultPlan()

    # -- what tests look at ----------------------------------------------------------------------------

    def count(self, path_prefix: str = "", method: str | None = None) -> int:
        """How many requests hit a path starting with ``path_prefix`` (and ``method``, if given)."""
        return len(self.calls_to(path_prefix, method))

    def calls_to(self, path_prefix: str = "", method: str | None = None) -> list[Call]:
        """The requests to a path starting with ``path_prefix`` (and with ``method``, if given), in order."""
        return filter_calls(self.calls, path_prefix, method)

    # -- what tests poke -------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        retry_after: float | None = None,
        body: Any = None,
        path: str | None = None,
        skip: int = 0,
    ) -> None:
        """Answer the next ``n`` requests (under ``path``, if given; after letting ``skip`` of them through)
        with ``status`` and the CRM's body for it (``fault_response``), or ``body``, plus ``Retry-After`` if
        ``retry_after``."""
        self.faults.add(Fault("fail", n, path, status=status, retry_after=retry_after, body=body, skip=skip))

    def timeout_next(self, n: int = 1, *, delay: float = 30.0, path: str | None = None, skip: int = 0) -> None:
        """Hold the next ``n`` requests for ``delay`` seconds (real time) before answering them normally."""
        self.faults.add(Fault("delay", n, path, delay=delay, skip=skip))

    def lose_answer_next(
        self, n: int = 1, *, status: int = 502, body: Any = None, path: str | None = None, skip: int = 0
    ) -> None:
        """Serve the next ``n`` requests (under ``path``) as usual — writes happen — but answer them with
        ``status`` (``fault_response``, or ``body``): a gateway that lost the CRM's answer."""
        self.faults.add(Fault("lose", n, path, status=status, body=body, skip=skip))

    # -- what subclasses use and override --------------------------------------------------------------

    def recorded(self, handler: Handler) -> Handler:
        """``handler`` as an endpoint that records the call, applies injected faults, then answers."""

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body = parse_body(
                raw, request.headers.get("content-type", ""), keep_blank_values=self.keep_blank_form_values
            )
            index = len(self.calls)
            self.calls.append(
                Call(request.method, request.url.path, dict(request.query_params), body, None, request.url.netloc)
            )
            failure = await self.faults.apply(request.url.path)
            response = self.fault_response(failure) if failure is not None else await handler(request)
            if failure is None and (lost := self.faults.take("lose", request.url.path)) is not None:
                response = self.fault_response(lost)
            self.answered(request, response)
            self.calls[index] = self.calls[index]._replace(status=response.status_code)
            return response

        return endpoint

    def fault_response(self, fault: Fault) -> Response:
        """The answer to an injected failure. This default sends ``fault.body`` as JSON with ``fault.status``
        and ``fault.headers``; override it to answer as the CRM does (its error body for each status)."""
        from starlette.responses import JSONResponse

        return JSONResponse(fault.body, status_code=fault.status, headers=fault.headers)

    def answered(self, request: Request, response: Response) -> None:
        """Called with every answer of a recorded endpoint, injected failures included, before it is sent:
        add the headers the CRM puts on every answer here. Does nothing by default."""

    def served_at(self, base_url: str) -> None:
        """Called by ``serving`` and ``serve_forever`` once the socket is bound, before any request: where the
        fake is (``http://127.0.0.1:PORT``). Does nothing by default."""


# -- serving on a socket ---------------------------------------------------------------------------------


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. Without it, uvicorn serving a socket it was handed answers a reused
    # keep-alive connection only after the client's delayed ACK: 40 ms on every request after the first.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _base_url(host: str, sock: socket.socket) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"


def _bound(
    fake: FakeCrm | ASGIApp, host: str, port: int, on_bound: Callable[[str], None] | None
) -> tuple[ASGIApp, socket.socket, str]:
    """The app to serve, its bound socket and its base URL, told to the fake (``served_at``) and ``on_bound``."""
    sock = bind(host, port)
    url = _base_url(host, sock)
    app: ASGIApp
    if isinstance(fake, FakeCrm):
        fake.served_at(url)
        app = fake.app
    else:
        app = fake
    if on_bound is not None:
        on_bound(url)
    return app, sock, url


def _name(fake: FakeCrm | ASGIApp, name: str | None) -> str:
    if name is not None:
        return name
    return fake.label if isinstance(fake, FakeCrm) else FakeCrm.label


def _server(app: ASGIApp, log_level: str) -> uvicorn.Server:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # Requests held by timeout_next() must not hold up shutdown for long.
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serving(
    fake: FakeCrm | ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_bound: Callable[[str], None] | None = None,
    name: str | None = None,
    log_level: str = "warning",
) -> AsyncIterator[str]:
    """Serve a fake (or any ASGI app) with uvicorn in the current event loop; yields its base URL
    (``http://127.0.0.1:PORT``; port 0 picks a free one). Once the socket is bound, and before it serves, the
    URL goes to ``fake.served_at`` and ``on_bound``. On exit the server stops, giving held requests 1 s.
    ``name`` (default: the fake's ``label``) names the server in errors."""
    app, sock, url = _bound(fake, host, port, on_bound)
    server = _server(app, log_level)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped the server
                raise RuntimeError(f"the {_name(fake, name)} server stopped before it started")
            await asyncio.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()


def serve_forever(
    fake: FakeCrm | ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "info",
    on_bound: Callable[[str], None] | None = None,
    name: str | None = None,
) -> None:
    """Serve until interrupted, printing ``NAME listening on URL`` once the socket accepts connections
    (``name`` defaults to the fake's ``label``)."""
    app, sock, url = _bound(fake, host, port, on_bound)
    print(f"{_name(fake, name)} listening on {url}", flush=True)
    asyncio.run(_server(app, log_level).serve(sockets=[sock]))


# -- python -m crm_hub_<crm>.fake -------------------------------------------------------------------------


def argument_parser(prog: str, description: str, *, redirect_uri: str) -> argparse.ArgumentParser:
    """The command line of a fake: ``--host``, ``--port`` and the OAuth client it accepts (``--client-id``,
    ``--client-secret``, ``--redirect-uri``, defaulting to ``redirect_uri``). ``description`` is shown by its
    first line: pass the ``__main__`` module's ``__doc__``. Add the fake's own options, then call
    ``serve_command``."""
    parser = argparse.ArgumentParser(prog=prog, description=description.splitlines()[0] if description else None)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default 0: any free port)")
    parser.add_argument("--client-id", default="fake-client-id")
    parser.add_argument("--client-secret", default="fake-client-secret")
    parser.add_argument("--redirect-uri", default=redirect_uri)
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds every request is held before it is answered (default 0)"
    )
    return parser


def oauth_client(args: argparse.Namespace) -> OAuthClient:
    """The OAuth client options ``argument_parser`` added, parsed: ``FakeMyCrm(**oauth_client(args), ...)``."""
    return OAuthClient(client_id=args.client_id, client_secret=args.client_secret, redirect_uri=args.redirect_uri)


def serve_command(
    parser: argparse.ArgumentParser,
    make_fake: Callable[[argparse.Namespace], FakeCrm | ASGIApp],
    argv: Sequence[str] | None = None,
) -> None:
    """Adds ``--log-level`` (last), parses ``argv`` (default: the process's arguments), and serves
    ``make_fake(args)`` on ``--host`` and ``--port`` until interrupted (``serve_forever``)."""
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    fake = make_fake(args)
    if getattr(args, "latency", 0.0) and isinstance(fake, FakeCrm):
        fake.timeout_next(sys.maxsize, delay=args.latency)  # a CRM that answers this much later, every time
    serve_forever(fake, host=args.host, port=args.port, log_level=args.log_level)
