"""Whether this process can do its work: the database answers, and it is not stopping.

A replica turns this into ``grpc.health.v1`` statuses (Envoy's health checks route around a NOT_SERVING
replica); every process with an operations address answers ``GET /readyz`` from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["DATABASE_CHECK_TIMEOUT_SECONDS", "Readiness"]

logger = logging.getLogger(__name__)

#: A database that has not answered ``SELECT 1`` in this long counts as unreachable.
DATABASE_CHECK_TIMEOUT_SECONDS = 2.0

Listener = Callable[[bool], Awaitable[None]]


@dataclass
class Readiness:
    """Ready while the database answers and the process is not stopping; listeners hear each change."""

    database_ok: bool = True
    stopping: bool = False
    #: Work the process exists for has stopped on its own (a worker's job runner): what stopped.
    broken: str | None = None
    _listeners: list[Listener] = field(default_factory=list, repr=False)

    @property
    def ready(self) -> bool:
        return self.database_ok and not self.stopping and self.broken is None

    @property
    def reason(self) -> str:
        """Why the process is not ready, in a few words ("" when it is)."""
        if self.stopping:
            return "stopping"
        if self.broken is not None:
            return self.broken
        return "" if self.database_ok else "database unreachable"

    def on_change(self, listener: Listener) -> None:
        """``listener(ready)`` is awaited whenever readiness changes."""
        self._listeners.append(listener)

    async def set_stopping(self) -> None:
        await self._set(stopping=True)

    async def set_broken(self, what: str) -> None:
        """Not ready for good: ``what`` stopped (until the process is restarted)."""
        before = self.ready
        self.broken = what
        await self._tell(before)

    async def check_database(self, ping: Callable[[], Awaitable[None]]) -> bool:
        """Ping the database once (bounded by DATABASE_CHECK_TIMEOUT_SECONDS); returns whether it answered."""
        try:
            async with asyncio.timeout(DATABASE_CHECK_TIMEOUT_SECONDS):
                await ping()
            answered = True
        except asyncio.CancelledError:
            raise
        except Exception as error:
            answered = False
            if self.database_ok:
                logger.warning("the database does not answer: not ready", extra={"error": type(error).__name__})
        if answered and not self.database_ok:
            logger.info("the database answers again: ready")
        await self._set(database_ok=answered)
        return answered

    async def watch_database(self, ping: Callable[[], Awaitable[None]], every_seconds: float) -> None:
        """Check the database every ``every_seconds`` (the first time after that long) until cancelled."""
        while True:
            await asyncio.sleep(every_seconds)
            await self.check_database(ping)

    async def _set(self, *, database_ok: bool | None = None, stopping: bool | None = None) -> None:
        before = self.ready
        if database_ok is not None:
            self.database_ok = database_ok
        if stopping is not None:
            self.stopping = stopping
        await self._tell(before)

    async def _tell(self, before: bool) -> None:
        if self.ready != before:
            for listener in self._listeners:
                try:
                    await listener(self.ready)
                except Exception:  # one listener's failure must not stop the watch, nor the others
                    logger.exception("a readiness listener failed")
