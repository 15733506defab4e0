"""Sync-job batches on procrastinate, the PostgreSQL job library: any number of ``crm-hub worker`` processes,
on any machine, sharing one database.

    crm_hub.sync_batch        one batch of a job, under the job's account lock (one batch at a time per team
                              and provider); queues the job's next batch as it ends
    crm_hub.resume_jobs       every 30 s: a job that is queued or running but has no batch waiting (its worker
                              was stopped mid-batch, a batch was aborted) gets one again
    crm_hub.retry_stalled     every 15 s (half the stall time): a batch whose worker stopped sending heartbeats
                              (``kill -9``, a lost machine) is queued again, which also frees its account lock
    crm_hub.reconcile         every minute: writes single syncs left open (the process died mid-write)

At most one batch of a job waits at a time (a queueing lock per job), so a job never runs twice in parallel;
a batch run twice (a worker thought dead while it was not) is harmless, since each lead's outcome is recorded
once and an open intent is reconciled before anything is written again. The queue library only schedules:
the jobs, their pending leads and every lead's sync state are crm_hub's own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
from procrastinate import exceptions
from procrastinate.jobs import Status
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.sync.jobs import BatchStep, QueuedBatch

__all__ = ["ProcrastinateQueue", "WorkerOptions"]

logger = logging.getLogger(__name__)

_BATCH_TASK = "crm_hub.sync_batch"
#: How long one task runs a job's batches back to back before it queues the rest and gives the account's lock up.
_SLICE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs: batches at once, and how soon a silent worker counts as gone."""

    concurrency: int = 8
    #: A worker says it is alive this often; one silent for three times as long counts as gone.
    heartbeat_seconds: float = 10.0
    #: On SIGTERM, a batch under way gets this long to finish; then it is handed back (queued again).
    shutdown_grace_seconds: float = 20.0

    @property
    def stalled_seconds(self) -> float:
        return 3 * self.heartbeat_seconds


class ProcrastinateQueue:
    """A ``JobQueue`` on procrastinate: defers from any process, runs batches in ``run_worker``."""

    def __init__(
        self,
        database_url: str,
        *,
        run_batch: Callable[[QueuedBatch], Awaitable[BatchStep]],
        unfinished: Callable[[], Awaitable[list[QueuedBatch]]],
        reconcile: Callable[[], Awaitable[object]],
        queue: str = "crm_hub",
        options: WorkerOptions | None = None,
    ) -> None:
        self.queue = queue
        self.options = options or WorkerOptions()
        self._run_batch = run_batch
        self._unfinished = unfinished
        self._reconcile = reconcile
        connector = procrastinate.PsycopgConnector(conninfo=_libpq(database_url), min_size=1, max_size=4)
        self.app = procrastinate.App(connector=connector)
        self._opened = False
        self._register_tasks()

    def _register_tasks(self) -> None:
        app, queue, options = self.app, self.queue, self.options

        @app.task(name=_BATCH_TASK, queue=queue)
        async def sync_batch(job_id: str, team_id: str, provider: str, attempt: int = 0) -> None:
            batch = QueuedBatch(job_id, team_id, provider, attempt)
            # Batches follow each other within one task for a while: a new task per batch would wait for the
            # next poll each time (procrastinate notifies no one when a lock frees). After the slice, the task
            # hands over, so another job of the same account gets its turn.
            deadline = asyncio.get_running_loop().time() + _SLICE_SECONDS
            while True:
                step = await self._run_batch(batch)
                batch = dataclasses.replace(batch, attempt=step.attempt)
                if not step.again or step.delay_seconds or asyncio.get_running_loop().time() >= deadline:
                    break
            if step.again:
                await self.enqueue(batch, delay_seconds=step.delay_seconds)

        @app.periodic(cron="* * * * * */30", periodic_id=queue)  # croniter: seconds are the 6th field
        @app.task(name="crm_hub.resume_jobs", queue=queue, queueing_lock=f"{queue}:resume_jobs")
        async def resume_jobs(timestamp: int) -> None:
            for batch in await self._unfinished():
                await self.enqueue(batch)

        sweep_every = max(1, round(options.stalled_seconds / 2))

        @app.periodic(cron=f"* * * * * */{sweep_every}", periodic_id=queue)
        @app.task(name="crm_hub.retry_stalled", queue=queue, queueing_lock=f"{queue}:retry_stalled", pass_context=True)
        async def retry_stalled(context: procrastinate.JobContext, timestamp: int) -> None:
            manager = context.app.job_manager
            for job in await manager.get_stalled_jobs(queue=queue, seconds_since_heartbeat=options.stalled_seconds):
                if job.id is None:
                    continue
                try:
                    await manager.retry_job(job)
                    logger.warning("batch of a stalled worker queued again", extra={"queue_job": job.id})
                except exceptions.UniqueViolation:
                    # The job's next batch is queued already: this one is done with.
                    await manager.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)

        @app.periodic(cron="* * * * *", periodic_id=queue)  # every minute
        @app.task(name="crm_hub.reconcile", queue=queue, queueing_lock=f"{queue}:reconcile")
        async def reconcile(timestamp: int) -> None:
            await self._reconcile()

        del sync_batch, resume_jobs, retry_stalled, reconcile  # registered on the app by the decorators

    async def open(self) -> None:
        if not self._opened:
            await self.app.open_async()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.app.close_async()
            self._opened = False

    async def enqueue(
        self, batch: QueuedBatch, *, delay_seconds: float = 0.0, session: AsyncSession | None = None
    ) -> None:
        await self.open()
        options: dict[str, Any] = {
            "lock": batch.lock,
            # At most one batch of a job waits at a time: a job never runs in two chains.
            "queueing_lock": f"{self.queue}:job:{batch.job_id}",
        }
        if delay_seconds:
            options["schedule_in"] = {"seconds": delay_seconds}
        if session is not None:
            # Deferred in the caller's transaction: the job and its first batch commit (or vanish) together.
            connection = await (await session.connection()).get_raw_connection()
            options["connection"] = connection.driver_connection
        task = self.app.tasks[_BATCH_TASK]
        with contextlib.suppress(exceptions.AlreadyEnqueued):  # the job's next batch is queued already
            await task.configure(**options).defer_async(
                job_id=batch.job_id, team_id=batch.team_id, provider=batch.provider, attempt=batch.attempt
            )

    async def run_worker(self, *, name: str | None = None) -> None:
        """Run batches until cancelled (SIGTERM): a batch under way gets the grace period, then is handed back.

        procrastinate stops a worker whose database went away; it is started again here, with backoff.
        """
        await self.open()
        backoff = 1.0
        while True:
            try:
                await self.app.run_worker_async(
                    queues=[self.queue],
                    name=name or f"crm-hub-worker@{socket.gethostname()}",
                    concurrency=self.options.concurrency,
                    wait=True,
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=self.options.shutdown_grace_seconds,
                    fetch_job_polling_interval=1.0,
                    listen_notify=True,
                    delete_jobs="successful",
                    update_heartbeat_interval=self.options.heartbeat_seconds,
                    stalled_worker_timeout=self.options.stalled_seconds,
                )
                logger.warning("worker stopped on its own; starting it again", extra={"after_seconds": backoff})
            except exceptions.ConnectorException:
                logger.warning("worker lost the database; starting it again", extra={"after_seconds": backoff})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


def _libpq(url: str) -> str:
    """libpq takes plain postgresql:// URLs, not SQLAlchemy's postgresql+psycopg://."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
