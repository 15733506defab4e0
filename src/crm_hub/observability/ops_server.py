"""The operations address (``CRM_HUB_METRICS_ADDRESS``): ``/metrics`` for Prometheus, ``/readyz`` and
``/livez`` for whatever starts and routes to the process (a load balancer, Kubernetes probes).

Served from a thread by the standard library's WSGI server, as prometheus-client's own ``start_http_server``
does, so a scrape never waits for the event loop (nor the event loop for a scrape).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from crm_hub.observability.health import Readiness

__all__ = ["OpsServer"]

StartResponse = Callable[..., Any]


class _IPv6Server(ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a scrape every few seconds is no news
        return None


class OpsServer:
    """Serves ``/metrics``, ``/readyz`` (200 when ready, 503 with the reason) and ``/livez`` on ``host:port``."""

    def __init__(self, host: str, port: int, readiness: Readiness, registry: CollectorRegistry) -> None:
        self._readiness = readiness
        self._metrics = make_wsgi_app(registry)
        server_class = _IPv6Server if ":" in host else ThreadingWSGIServer
        self._server = make_server(host, port, self._app, server_class=server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="crm-hub-ops", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (the one asked for, or the one picked for port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/livez":
            return _text(start_response, "200 OK", "alive")
        if path == "/readyz":
            if self._readiness.ready:
                return _text(start_response, "200 OK", "ready")
            return _text(start_response, "503 Service Unavailable", f"not ready: {self._readiness.reason}")
        return _text(start_response, "404 Not Found", "not found: try /metrics, /readyz or /livez")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = f"{body}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]
