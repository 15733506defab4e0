"""A TCP proxy on 127.0.0.1 in front of a fake CRM that can drop a chosen request's connection.

The fakes' own fault injection answers with an HTTP status (``fail_next``, ``lose_answer_next``) or late
(``timeout_next``); a connection that just goes away — no status line at all — needs something between the
provider and the fake. ``DroppingProxy`` relays bytes both ways and reads the HTTP/1.1 requests going up (request
line, headers, ``Content-Length`` body: what httpx sends), so it can pick one out by method and path and:

- ``applied=False``: close the client's connection without sending the request on (the CRM never saw it);
- ``applied=True``: send it on, wait for the CRM's first bytes of answer (it has done the work), then close the
  client's connection without relaying them (the answer is lost with the connection).

Either way the client sees the connection closed under it (httpx: ``RemoteProtocolError``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["DroppingProxy", "serving_proxy"]

_MAX_HEAD_BYTES = 64 * 1024


@dataclass
class _Drop:
    method: str
    path: str
    applied: bool
    remaining: int = 1

    def matches(self, method: str, path: str) -> bool:
        return self.remaining > 0 and method == self.method and path.startswith(self.path)


@dataclass
class _Connection:
    """One client connection: whether the CRM's bytes still reach the client, and when the CRM answered."""

    relaying: bool = True
    answered: asyncio.Event = field(default_factory=asyncio.Event)


class DroppingProxy:
    """Relays 127.0.0.1:<port> to the upstream fake; ``drop_next`` picks the requests whose connection dies."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._drops: list[_Drop] = []
        #: (method, path, applied) of every request whose connection was dropped, in order.
        self.dropped: list[tuple[str, str, bool]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def drop_next(self, method: str, path: str, *, applied: bool, n: int = 1) -> None:
        """Drop the connection of the next ``n`` ``method`` requests to a path starting with ``path``."""
        self._drops.append(_Drop(method.upper(), path, applied, n))

    def drops_pending(self) -> list[str]:
        """The drops no request has run into yet, e.g. ``["POST /crm/v3/... (applied)"]``."""
        return [
            f"{d.method} {d.path} ({'applied' if d.applied else 'not applied'})" for d in self._drops if d.remaining
        ]

    def _take(self, method: str, path: str) -> _Drop | None:
        drop = next((d for d in self._drops if d.matches(method, path)), None)
        if drop is not None:
            drop.remaining -= 1
        return drop

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(client_writer)
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        self._writers.add(upstream_writer)
        connection = _Connection()
        downstream = asyncio.create_task(self._relay_answers(upstream_reader, client_writer, connection))
        try:
            while True:
                request = await _read_request(client_reader)
                if request is None:
                    return
                head, body, method, path = request
                drop = self._take(method, path)
                if drop is None:
                    upstream_writer.write(head + body)
                    await upstream_writer.drain()
                    continue
                self.dropped.append((method, path, drop.applied))
                if drop.applied:
                    connection.relaying = False
                    upstream_writer.write(head + body)
                    await upstream_writer.drain()
                    await asyncio.wait_for(connection.answered.wait(), timeout=30)
                return
        finally:
            downstream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await downstream
            for writer in (client_writer, upstream_writer):
                writer.transport.abort()
                self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)

    async def _relay_answers(
        self, upstream: asyncio.StreamReader, client: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        while chunk := await upstream.read(65536):
            if not connection.relaying:
                connection.answered.set()
                continue
            client.write(chunk)
            await client.drain()

    async def aclose(self) -> None:
        """Close every connection still open; their handlers then end on their own (cancelling the task of a
        ``start_server`` callback makes asyncio log it as an error)."""
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, str, str] | None:
    """The next request on the connection (head, body, method, path), or None once the client closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    except asyncio.LimitOverrunError as error:
        raise ValueError(f"request head over {_MAX_HEAD_BYTES} bytes") from error
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    length = 0
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        if name.strip().lower() == "transfer-encoding":
            raise ValueError("chunked request bodies are not supported by this proxy")
    body = await reader.readexactly(length) if length else b""
    return head, body, method.upper(), target.split("?", 1)[0]


@asynccontextmanager
async def serving_proxy(upstream_url: str) -> AsyncIterator[tuple[DroppingProxy, str]]:
    """A DroppingProxy on a free 127.0.0.1 port in front of ``upstream_url`` (``http://127.0.0.1:PORT``)."""
    host, _, port = upstream_url.removeprefix("http://").rstrip("/").partition(":")
    proxy = DroppingProxy(host, int(port))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, limit=_MAX_HEAD_BYTES)
    try:
        yield proxy, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await proxy.aclose()
        await server.wait_closed()
