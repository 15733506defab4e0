"""Sync-job batches as tasks of this process: the embedded SQLite default, where no job library runs.

procrastinate — the job library crm_hub runs on PostgreSQL — needs PostgreSQL (LISTEN/NOTIFY, SKIP LOCKED,
PL/pgSQL), and has no SQLite connector. On the embedded default there is one process anyway, so the same
batch code runs here as asyncio tasks, with the same rule: one batch at a time per (team, provider), batches
of several jobs taking turns. Nothing is kept only here: the jobs and their pending leads are rows, so
``recover()`` re-queues every unfinished job when the server starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.sync.jobs import BatchStep, QueuedBatch

__all__ = ["InProcessQueue"]

logger = logging.getLogger(__name__)

#: A batch that raised (a bug, the database away) is tried again after this long, doubling, this many times.
_CRASH_BACKOFF_SECONDS = 1.0
_CRASH_ATTEMPTS = 8


class InProcessQueue:
    """A ``JobQueue`` running batches in this process, in turns per account lock."""

    def __init__(self, run_batch: Callable[[QueuedBatch], Awaitable[BatchStep]]) -> None:
        self._run_batch = run_batch
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def enqueue(
        self, batch: QueuedBatch, *, delay_seconds: float = 0.0, session: AsyncSession | None = None
    ) -> None:
        if session is None:
            self._start(batch, delay_seconds)
            return
        # The job's rows are not committed yet: start it once they are (and never if they roll back).
        loop = asyncio.get_running_loop()

        def after_commit(_: object) -> None:
            loop.call_soon_threadsafe(self._start, batch, delay_seconds)

        event.listen(session.sync_session, "after_commit", after_commit, once=True)

    def _start(self, batch: QueuedBatch, delay_seconds: float) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._run(batch, delay_seconds), name=f"sync-job-{batch.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: QueuedBatch, delay_seconds: float) -> None:
        crashes = 0
        while True:
            if delay_seconds:
                await asyncio.sleep(delay_seconds)
            lock = self._locks.setdefault(batch.lock, asyncio.Lock())
            async with lock:  # one batch per account at a time; waiters are served in order, so jobs take turns
                try:
                    step = await self._run_batch(batch)
                    crashes = 0
                except Exception:
                    crashes += 1
                    logger.exception("sync batch crashed", extra={"job_id": batch.job_id, "crashes": crashes})
                    if crashes >= _CRASH_ATTEMPTS:
                        return  # left for recover() at the next start
                    step = BatchStep(
                        again=True, delay_seconds=_CRASH_BACKOFF_SECONDS * 2**crashes, attempt=batch.attempt
                    )
            if not step.again:
                return
            batch = dataclasses.replace(batch, attempt=step.attempt)
            delay_seconds = step.delay_seconds
            await asyncio.sleep(0)  # let a job waiting for the lock go first

    async def close(self) -> None:
        """Stop every batch. One stopped mid-write left its intents open: they are reconciled next time."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def idle(self) -> None:
        """Until no batch is queued or running (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
