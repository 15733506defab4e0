"""One sync per CRM contact at a time, across every process on the database.

Two syncs that could both create a contact for one email — two replicas, or a replica and a worker — must take
turns, or a CRM that accepts several contacts per email (Salesforce) ends up with two. Within a process an
asyncio lock per (team, provider, email) orders them. Across processes, on PostgreSQL, a session-level
advisory lock per key does. Each process keeps one connection for those locks alone and takes them with
``pg_try_advisory_lock``:

* a sync never blocks a connection while it waits (it polls);
* holding a lock costs no pooled connection, so syncs waiting for the pool while holding locks cannot deadlock;
* a process that dies lets go of its locks with its connection.

SQLite is one process (its file has one writer at a time): the asyncio locks are all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_hub.errors import StorageUnavailable
from crm_hub.storage.database import Database

__all__ = ["ContactLocks"]

logger = logging.getLogger(__name__)

_TRY_LOCKS = text("SELECT k, pg_try_advisory_lock(k) FROM unnest(:keys) AS k").bindparams(
    bindparam("keys", type_=ARRAY(BIGINT))
)
_UNLOCK = text("SELECT pg_advisory_unlock(k) FROM unnest(:keys) AS k").bindparams(
    bindparam("keys", type_=ARRAY(BIGINT))
)
#: The first and the longest pause between two tries at locks another process holds.
_FIRST_POLL_SECONDS = 0.01
_MAX_POLL_SECONDS = 0.2


class ContactLocks:
    def __init__(self, database: Database) -> None:
        self._database = database
        # Weak values: a lock lives only while a sync holds or waits for it, so the map does not grow.
        self._local: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        self._shared = database.dialect_name == "postgresql"
        self._connection: AsyncConnection | None = None
        self._connection_lock = asyncio.Lock()
        self._releasing: set[asyncio.Future[None]] = set()

    @contextlib.asynccontextmanager
    async def holding(self, team_id: str, provider: str, keys: Iterable[str]) -> AsyncIterator[bool]:
        """Hold the contacts ``keys`` (emails, or lead ids for leads without one) of a team's CRM account.
        Yields whether another sync held one of them up — what was read before may be stale."""
        ordered = sorted(set(keys))  # in order: two syncs of overlapping contacts never deadlock
        waited = False
        async with contextlib.AsyncExitStack() as stack:
            for key in ordered:
                lock = self._local.setdefault((team_id, provider, key), asyncio.Lock())
                waited = waited or lock.locked()
                await stack.enter_async_context(lock)
            if self._shared and ordered:
                ids = sorted({_lock_id(team_id, provider, key) for key in ordered})
                waited = await self._acquire(ids) or waited
                stack.push_async_callback(self._release, ids)
            yield waited

    async def aclose(self) -> None:
        """Close the lock connection — for real, not back into the pool, where its locks would live on."""
        async with self._connection_lock:
            if self._connection is not None:
                await self._connection.invalidate()
                await self._connection.close()
                self._connection = None

    async def _acquire(self, ids: Sequence[int]) -> bool:
        """Take every lock of ``ids``, or none while waiting for those held elsewhere. True if it had to wait."""
        pause = _FIRST_POLL_SECONDS
        waited = False
        while True:
            taken = await self._try_locks(ids)
            if len(taken) == len(ids):
                return waited
            if taken:
                await self._release(taken)  # never hold some while waiting for others: no deadlock across processes
            waited = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, _MAX_POLL_SECONDS)

    async def _try_locks(self, ids: Sequence[int]) -> list[int]:
        # Shielded: if the caller is cancelled (a gRPC deadline) the statement still ends, and what it took is
        # let go of — a lock taken by an answer nobody waits for would be held until the process ends.
        statement = asyncio.ensure_future(self._execute(_TRY_LOCKS, ids))
        try:
            rows = await asyncio.shield(statement)
        except asyncio.CancelledError:
            statement.add_done_callback(self._release_taken)
            raise
        return _taken(rows)

    def _release_taken(self, statement: asyncio.Future[list[tuple[Any, ...]]]) -> None:
        if statement.cancelled() or statement.exception() is not None:
            return
        if taken := _taken(statement.result()):
            release = asyncio.ensure_future(self._release(taken))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)

    async def _release(self, ids: Sequence[int]) -> None:
        with contextlib.suppress(StorageUnavailable):  # the connection is gone, and its locks with it
            await asyncio.shield(self._execute(_UNLOCK, ids))

    async def _execute(self, statement: TextClause, ids: Sequence[int]) -> list[tuple[Any, ...]]:
        async with self._connection_lock:
            try:
                if self._connection is None:
                    connection = await self._database.engine.connect()
                    self._connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
                return [tuple(row) for row in await self._connection.execute(statement, {"keys": list(ids)})]
            except (DBAPIError, OSError) as error:
                # The locks of a broken connection are gone with it; the next call opens another.
                if self._connection is not None:
                    with contextlib.suppress(Exception):
                        await self._connection.invalidate()
                    self._connection = None
                logger.warning("contact lock connection lost", extra={"error": type(error).__name__})
                raise StorageUnavailable("The database is unreachable; try again shortly.") from error


def _taken(rows: Sequence[tuple[Any, ...]]) -> list[int]:
    return [int(row[0]) for row in rows if row[1]]


def _lock_id(team_id: str, provider: str, key: str) -> int:
    """A signed 64-bit advisory lock key for one contact. Two contacts that share a key only take turns."""
    digest = hashlib.blake2b(f"crm_hub\0{team_id}\0{provider}\0{key.lower()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
