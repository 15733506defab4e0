"""Serving a FakeSalesforce on a real socket with uvicorn: in a running event loop, or as a process.

Serving makes the socket the fake's ``instance_url`` (``http://127.0.0.1:PORT``): it is both the login host
and the instance host, so the token answer sends clients back to it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from crm_hub_salesforce.fake.app import FakeSalesforce

__all__ = ["bind", "serve_forever", "serving"]


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one (read it from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _base_url(host: str, sock: socket.socket) -> str:
    return f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"


def _server(fake: FakeSalesforce, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        fake.app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        # Requests held by timeout_next() must not hold up shutdown for long.
        timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)


@asynccontextmanager
async def serving(fake: FakeSalesforce, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``fake`` in the current event loop; yields its base URL (also its new ``instance_url``)."""
    sock = bind(host, port)
    fake.instance_url = _base_url(host, sock)
    server = _server(fake, "warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped the server
                raise RuntimeError("the fake Salesforce server stopped before it started")
            await asyncio.sleep(0.01)
        yield fake.instance_url
    finally:
        server.should_exit = True
        await task
        sock.close()


def serve_forever(fake: FakeSalesforce, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "info") -> None:
    """Serve until interrupted, printing ``listening on URL`` once the socket accepts connections."""
    sock = bind(host, port)
    fake.instance_url = _base_url(host, sock)
    print(f"fake Salesforce listening on {fake.instance_url}", flush=True)
    asyncio.run(_server(fake, log_level).serve(sockets=[sock]))
