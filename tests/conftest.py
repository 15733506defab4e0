"""Database fixtures: every test that asks for ``database_url`` or ``database`` runs on SQLite and PostgreSQL.

The schema is made by the Alembic migrations (as in production), once per backend per test session. Tests
share that database and keep apart by using their own team ids.

PostgreSQL comes from ``CRM_HUB_TEST_DATABASE_URL`` if set (CI points it at a fresh database). Otherwise a
throwaway database ``crm_hub_test_<random>`` is created through ``CRM_HUB_TEST_POSTGRES_ADMIN_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``) and dropped at the end. If PostgreSQL cannot be
reached the PostgreSQL tests are skipped, except under ``CI=true``, where they fail: CI must never pass
without having run them.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from crm_hub.plugins import PluginHost
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import Database, normalize_database_url, upgrade
from tests.support.app import JWT_SECRET, VAULT_KEY
from tests.support.memory_crm import MemoryCrm, MemoryCrmPlugin

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_CONNECT_TIMEOUT_SECONDS = 5


@pytest.fixture(
    scope="session",
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ],
)
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A URL (async driver) of a database migrated to the latest schema, for each backend in turn."""
    if request.param == "sqlite":
        url = normalize_database_url(None, data_dir=tmp_path_factory.mktemp("sqlite"))
        await upgrade(url)
        yield url
        return
    async with _postgres_database() as url:
        await upgrade(url)
        yield url


@pytest.fixture(scope="session")
async def database(database_url: str) -> AsyncIterator[Database]:
    """A :class:`Database` on the migrated test database, closed at the end of the session."""
    db = Database(database_url)
    try:
        yield db
    finally:
        await db.close()


@asynccontextmanager
async def _postgres_database() -> AsyncIterator[str]:
    if given := os.environ.get("CRM_HUB_TEST_DATABASE_URL"):
        url = _with_async_driver(given)
        # Only a probe: an unreachable server must say so (skip, or fail in CI), not error in every test.
        await (await _connect(url, "CRM_HUB_TEST_DATABASE_URL")).close()
        yield url
        return
    admin_url = _with_async_driver(os.environ.get("CRM_HUB_TEST_POSTGRES_ADMIN_URL", DEFAULT_POSTGRES_ADMIN_URL))
    name = f"crm_hub_test_{uuid.uuid4().hex[:12]}"
    async with await _connect(admin_url, "CRM_HUB_TEST_POSTGRES_ADMIN_URL") as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            # FORCE: a test that leaked a connection must not leave the database behind.
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def _connect(url: str, setting: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit psycopg connection to ``url``, or a skip (a failure under CI=true) if it cannot be made."""
    # libpq takes plain postgresql:// URIs, not SQLAlchemy's postgresql+psycopg://.
    libpq_url = make_url(url).set(drivername="postgresql")
    try:
        return await psycopg.AsyncConnection.connect(
            libpq_url.render_as_string(hide_password=False), autocommit=True, connect_timeout=_CONNECT_TIMEOUT_SECONDS
        )
    except psycopg.OperationalError as error:
        _postgres_unavailable(f"cannot reach {libpq_url.render_as_string(hide_password=True)} (set {setting}): {error}")


def _postgres_unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI (CI=true) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


def _with_async_driver(url: str) -> str:
    # A non-empty URL never touches the data directory.
    return normalize_database_url(url, data_dir=Path())


# -- The application over the test database (core and RPC tests) ---------------------------------


@pytest.fixture
def team_id() -> str:
    """A team id no other test uses (tests share one database per backend)."""
    return f"team-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def memory_crm() -> MemoryCrm:
    """A throwaway in-memory provider, registered as plugin ``memorycrm`` in ``application``."""
    return MemoryCrm()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path,
        jwt_secret=JWT_SECRET,
        secret_vault_key=VAULT_KEY,
        grpc_address="127.0.0.1:0",
        queue_name=f"test-{uuid.uuid4().hex[:12]}",
        worker_heartbeat_seconds=1.0,
    )


@pytest.fixture
async def application(settings: Settings, memory_crm: MemoryCrm) -> AsyncIterator[Application]:
    """The composed service (no entry-point plugins: just ``memory_crm``), on SQLite and PostgreSQL."""
    host = PluginHost(load_entry_points=False)
    host.register(MemoryCrmPlugin(memory_crm), name="memorycrm", distribution="crm-hub-memorycrm", version="0.0.1")
    application = Application.from_settings(settings, plugins=host)
    try:
        yield application
    finally:
        await application.aclose()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests of ``crm-hub`` commands: main() points the root logger at the (captured) stderr of the moment;
    pytest's handlers are put back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
