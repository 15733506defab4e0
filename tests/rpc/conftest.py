"""A real grpc.aio server on a free port, over the test database (SQLite and PostgreSQL), and its callers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from tests.support.app import JWT_SECRET, VAULT_KEY, Metadata, bearer

__all__ = ["JWT_SECRET", "VAULT_KEY", "Metadata"]


@pytest.fixture
async def channel(application: Application) -> AsyncIterator[grpc.aio.Channel]:
    server, port, _ = await create_server(application, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


@pytest.fixture
def auth() -> Callable[..., Metadata]:
    """``auth(team, role)`` → call metadata with a freshly minted bearer token."""
    return bearer
