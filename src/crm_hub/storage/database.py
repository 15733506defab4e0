"""Database URLs, engines and sessions for the two supported backends: SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import PoolResetState

from crm_hub.errors import ConfigurationError, StorageUnavailable
from crm_hub.observability import metrics

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "Database", "create_engine", "normalize_database_url"]

#: How long an SQLite writer waits for another connection's write lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000

# Scheme as written by the user -> the async driver we run it with.
_ASYNC_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def normalize_database_url(url: str | None, *, data_dir: Path) -> str:
    """Turn a user's ``DATABASE_URL`` into a SQLAlchemy URL with an async driver.

    No URL means the embedded default: an SQLite file ``crm_hub.db`` in ``data_dir`` (created if missing).
    ``sqlite://`` and ``postgres(ql)://`` get their async drivers (aiosqlite, psycopg); explicit async
    drivers pass through. Anything else raises :class:`ConfigurationError`.
    """
    if url is None or not url.strip():
        directory = data_dir.expanduser().resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{directory / 'crm_hub.db'}"
    return _with_async_driver(url.strip())


def _with_async_driver(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    driver = _ASYNC_SCHEMES.get(scheme.lower()) if separator else None
    if driver is None:
        # Never echo the URL itself (nor what may be one without "://"): it may carry a password.
        supported = ", ".join(f"{name}://" for name in _ASYNC_SCHEMES)
        problem = f"scheme {scheme!r} is not supported" if separator else "it is not a URL"
        raise ConfigurationError(f"Bad database URL: {problem}. Use one of {supported}")
    return f"{driver}://{rest}"


def create_engine(url: str) -> AsyncEngine:
    """Create an async engine for ``url`` (any scheme :func:`normalize_database_url` accepts).

    SQLite gets foreign keys on (needed for ON DELETE CASCADE), WAL and a busy timeout, so several tasks and
    processes can share one file: readers never block, writers queue for the write lock instead of failing.
    The sqlite3 driver's default ("legacy") transaction control is kept on purpose: it begins a transaction
    at the first write rather than the first read, so a session that reads then writes never hits the
    unrecoverable SQLITE_BUSY of upgrading a stale read snapshot. Reads before the first write therefore see
    the latest committed data, as under PostgreSQL's default READ COMMITTED. Do not use SAVEPOINTs on SQLite.
    """
    sa_url = make_url(_with_async_driver(url))
    if sa_url.get_backend_name() == "sqlite":
        # hide_parameters: a failing statement's error (which may be logged) must not carry lead data or tokens.
        engine = create_async_engine(sa_url, hide_parameters=True, pool_reset_on_return=None)
        event.listen(engine.sync_engine, "connect", _configure_sqlite_connection)
    else:
        engine = create_async_engine(
            sa_url,
            hide_parameters=True,
            pool_size=10,
            max_overflow=10,
            # No ping before every checkout (a round trip on every session of the sync path): a connection a load
            # balancer or PgBouncer dropped fails its statement, the pool then drops all its connections, and the
            # caller hears UNAVAILABLE (try again) once. Recycling keeps connections younger than such timeouts.
            pool_pre_ping=False,
            pool_recycle=900,
            pool_reset_on_return=None,
        )
    event.listen(engine.sync_engine, "reset", _roll_back_if_in_transaction)
    return engine


def _roll_back_if_in_transaction(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
    """The pool's reset of a connection coming back (``pool_reset_on_return=None`` hands it to us): roll back
    what is still open, as SQLAlchemy's default would — but not after a commit, when the driver says nothing is
    open. SQLAlchemy rolls back regardless, and each aiosqlite rollback is a trip to its thread and back: three
    of a sync's 23. A connection garbage-collected unreturned is not touched (SQLAlchemy's own rule)."""
    if state.transaction_was_reset or not state.asyncio_safe:
        return
    if _in_transaction(record.driver_connection):
        dbapi_connection.rollback()


def _in_transaction(driver_connection: Any) -> bool:
    """Whether the driver's connection has a transaction open (when it cannot tell: assume so)."""
    in_transaction = getattr(driver_connection, "in_transaction", None)  # aiosqlite, as sqlite3
    if isinstance(in_transaction, bool):
        return in_transaction
    status = getattr(getattr(driver_connection, "info", None), "transaction_status", None)
    if status is None:
        return True
    from psycopg.pq import TransactionStatus  # PostgreSQL's driver: not loaded for SQLite

    return bool(status != TransactionStatus.IDLE)  # in a transaction, perhaps a failed one


def _configure_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


class Database:
    """An engine and its session factory: the one handle the rest of crm_hub holds on the database."""

    def __init__(self, url: str) -> None:
        #: The URL the engine was made from (it may carry a password: never log it).
        self.url = url
        self.engine: AsyncEngine = create_engine(url)
        self.sessionmaker: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.engine.dialect.name == "sqlite" else None
        # One read statement needs no transaction around it on PostgreSQL (see ``session``); SQLite's driver
        # begins none for a read anyway.
        self._one_read_sessions = (
            async_sessionmaker(self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
            if self.engine.dialect.name == "postgresql"
            else self.sessionmaker
        )
        event.listen(self.engine.sync_engine, "handle_error", _count_error)
        metrics.observe_pool(self._connections_in_use)

    def _connections_in_use(self) -> int:
        checkedout = getattr(self.engine.sync_engine.pool, "checkedout", None)
        return int(checkedout()) if callable(checkedout) else 0

    async def ping(self) -> None:
        """One round trip (``SELECT 1``) on a pooled connection; raises if the database does not answer."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    @property
    def dialect_name(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, *, writes: bool = False, one_read: bool = False) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block exits normally, rolls back if it raises.

        A database that is locked past the busy timeout (SQLite), in a deadlock or lock timeout (PostgreSQL),
        or unreachable raises StorageUnavailable — a "try again" for the caller, not an internal error.

        ``writes``: the session will write. SQLite has one writer at a time, and a writer that finds the lock
        taken sleeps in steps of up to 100 ms before it tries again; so this process's writers queue here
        instead, in order and without sleeping (PostgreSQL locks rows, not the database: nothing to do).

        ``one_read``: the session runs one read statement and nothing else. On PostgreSQL it runs in autocommit,
        without the BEGIN and COMMIT round trips around it: a single statement sees one snapshot all the same.
        """
        async with contextlib.AsyncExitStack() as stack:
            if writes and self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            sessions = self._one_read_sessions if one_read and not writes else self.sessionmaker
            session = await stack.enter_async_context(sessions())
            try:
                yield session
                await session.commit()
            except OperationalError as error:
                raise StorageUnavailable(
                    "The database is busy or unreachable; try again shortly.", metadata={"dialect": self.dialect_name}
                ) from error

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def _count_error(context: Any) -> None:
    """Every failed statement, by its DBAPI error class (OperationalError, IntegrityError, ...)."""
    metrics.DB_ERRORS.labels(type(context.original_exception).__name__).inc()
