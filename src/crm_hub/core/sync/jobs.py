"""Sync jobs: many leads synced in the background, a batch at a time, at the CRM's batch size.

Starting a job checks what can be checked at once (the provider, the policy, the selection, the connection
and the mapping), snapshots the selected leads as pending results and queues its first batch, all in one
transaction. Each batch then takes the next pending leads and runs them through the sync engine — the same
steps as one ``SyncLead`` — and queues the next batch, until none is left.

The job library only schedules: the job, its results and each lead's sync state are rows of crm_hub's own,
so a worker that dies mid-batch loses nothing — the batch runs again, and an intent it left open is
reconciled (by an email lookup) before anything is written again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.budget import RateBudgets
from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.core.leads import LeadRecord, check_lead_id
from crm_hub.core.sync.engine import (
    INTENT_STALE_SECONDS,
    SYNC_IN_PROGRESS,
    BatchResult,
    SyncEngine,
    checked_target,
    invalid_request,
)
from crm_hub.core.sync.model import DuplicatePolicy, SyncAction, SyncOutcome, fingerprint
from crm_hub.core.sync.writer import WRITE_OUTCOME_UNKNOWN
from crm_hub.errors import (
    CrmHubError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ProviderError,
    RateLimited,
)
from crm_hub.notifications import Notification, NotificationDispatcher
from crm_hub.observability.tracing import traced
from crm_hub.plugins import PluginHost
from crm_hub.storage import Database, IntegrationRepository, LeadRepository, TeamRepository, utcnow
from crm_hub.storage.models import SyncJob, SyncJobResult
from crm_hub.storage.sync import PENDING, JobRepository

__all__ = [
    "MAX_LEAD_IDS",
    "SELECTIONS",
    "BatchStep",
    "JobPage",
    "JobQueue",
    "JobView",
    "QueuedBatch",
    "ResultPage",
    "SyncJobs",
]

logger = logging.getLogger(__name__)

MAX_LEAD_IDS = 10_000
SELECTIONS = ("unsynced", "changed", "failed", "all")
TERMINAL_STATES = ("succeeded", "failed", "cancelled")
UNFINISHED_STATES = ("queued", "running")
#: Leads one batch takes (the provider then sends them at the CRM's batch size, 100 or 200 a request): their
#: intents go in one transaction before, their outcomes in one after — what a batch costs the database is
#: paid once per thousand, and memory stays small.
BATCH_LEADS = 1000
#: A batch whose CRM calls keep failing (outage, timeouts) is tried this many times, then its leads fail.
BATCH_ATTEMPTS = 5
#: How long a job waits when the CRM's quota is spent (a daily limit): it waits, it does not fail.
QUOTA_WAIT_SECONDS = 900.0
#: An automatic job gathers leads until none joined for this long (its first batch is queued this long after
#: its first lead), it holds a full batch, or its first lead has waited GATHER_MAX_SECONDS: a burst and a steady
#: stream alike go out in full batch calls, and no lead waits long for a quiet moment.
GATHER_QUIET_SECONDS = 1.0
GATHER_MAX_SECONDS = 5.0
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
DEFAULT_RESULTS_PAGE, MAX_RESULTS_PAGE = 100, 1000
WATCH_POLL_SECONDS = 0.25
WATCH_KEEPALIVE_SECONDS = 30.0


@dataclass(frozen=True)
class QueuedBatch:
    """What the job library carries: which job, for whose account (its lock), and the how-manieth try."""

    job_id: str
    team_id: str
    provider: str
    attempt: int = 0

    @property
    def lock(self) -> str:
        """At most one batch at a time per (team, provider): two workers never race on one CRM account."""
        return f"crm-hub-sync:{self.team_id}:{self.provider}"


class JobQueue(Protocol):
    """Where batches wait to run: procrastinate on PostgreSQL, this process on SQLite."""

    async def enqueue(
        self, batch: QueuedBatch, *, delay_seconds: float = 0.0, session: AsyncSession | None = None
    ) -> None:
        """Queue ``batch`` to run after ``delay_seconds``; in ``session``'s transaction where the queue can."""


@dataclass(frozen=True)
class BatchStep:
    """What a batch left to do: run again after ``delay_seconds`` (the next batch, or this one once more)."""

    again: bool
    delay_seconds: float = 0.0
    attempt: int = 0


@dataclass(frozen=True)
class JobView:
    """A job as its team sees it."""

    id: str
    provider: str
    duplicate_policy: str
    dry_run: bool
    selection: str
    force: bool
    state: str
    total: int
    counts: dict[str, int]
    crm_calls: int
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_reason: str | None
    cancel_requested: bool

    @property
    def processed(self) -> int:
        return self.total - self.counts.get(PENDING, 0)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def of(cls, job: SyncJob, counts: dict[str, int]) -> JobView:
        return cls(
            id=job.id,
            provider=job.provider,
            duplicate_policy=job.duplicate_policy,
            dry_run=job.dry_run,
            selection=job.selection,
            force=job.force,
            state=job.state,
            total=job.total,
            counts=counts,
            crm_calls=job.crm_calls,
            created_by=job.actor,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            error_reason=job.error_reason,
            cancel_requested=job.cancel_requested_at is not None,
        )


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobView]
    next_page_token: str


@dataclass(frozen=True)
class ResultView:
    lead_id: str
    outcome: str
    contact_id: str | None
    other_contact_ids: list[str]
    error_reason: str | None
    message: str | None

    @classmethod
    def of(cls, row: SyncJobResult) -> ResultView:
        return cls(
            lead_id=row.lead_id,
            outcome=row.outcome,
            contact_id=row.contact_id,
            other_contact_ids=list(row.other_contact_ids or ()),
            error_reason=row.error_reason,
            message=row.message,
        )


@dataclass(frozen=True)
class ResultPage:
    results: list[ResultView]
    next_page_token: str


class SyncJobs:
    def __init__(
        self,
        database: Database,
        plugins: PluginHost,
        engine: SyncEngine,
        notifications: NotificationDispatcher,
        queue: JobQueue | None = None,
        budgets: RateBudgets | None = None,
        batch_leads: int = BATCH_LEADS,
        queue_name: str | None = None,
    ) -> None:
        self.batch_leads = batch_leads
        #: The job library's queue this deployment's jobs go to (CRM_HUB_QUEUE), recorded on each job.
        self.queue_name = queue_name
        self._database = database
        self._budgets = budgets or RateBudgets(database)
        self._plugins = plugins
        self._engine = engine
        #: The engine the jobs' batches run on.
        self.engine = engine
        self._notifications = notifications
        self.queue = queue

    # -- the team's side -----------------------------------------------------------------------------

    @traced("start sync job", attributes=("provider",))
    async def start(
        self,
        caller: Caller,
        *,
        provider: str,
        duplicate_policy: str = "",
        lead_ids: Sequence[str] = (),
        selection: str = "",
        force: bool = False,
        dry_run: bool = False,
    ) -> JobView:
        """Check the request, snapshot its leads and queue the job's first batch; the job, at once."""
        policy, selection = _validated(provider, duplicate_policy, lead_ids, selection)
        crm = self._plugins.providers().get(provider)
        for lead_id in lead_ids:
            check_lead_id(lead_id)
        if self.queue is None:
            raise FailedPrecondition("This process runs no sync jobs.", reason="JOBS_UNAVAILABLE")
        async with self._database.session() as session:
            await TeamRepository(session).ensure(caller.team_id)
            integration = await IntegrationRepository(session).get(caller.team_id, crm.name)
            mapping = self._engine.check_gate(crm, integration)
            jobs = JobRepository(session)
            if lead_ids:
                existing = await jobs.existing_leads(caller.team_id, lead_ids)
                unknown = [lead_id for lead_id in dict.fromkeys(lead_ids) if lead_id not in existing]
                if unknown:
                    raise NotFound(
                        f"{len(unknown)} of the lead ids are not leads of your team, e.g. {unknown[0]}; "
                        "nothing was started.",
                        reason="LEAD_NOT_FOUND",
                        metadata={"lead_ids": ",".join(unknown[:10]), "unknown": str(len(unknown))},
                    )
            job = await jobs.create(
                SyncJob(
                    team_id=caller.team_id,
                    provider=crm.name,
                    duplicate_policy=policy.value,
                    dry_run=dry_run,
                    force=force,
                    selection=selection,
                    state="queued",
                    total=0,
                    actor=caller.actor,
                    request_id=caller.request_id,
                    created_at=utcnow(),
                    queue=self.queue_name,
                )
            )
            job.total = await jobs.select_leads(job, lead_ids=lead_ids, mapping_fingerprint=fingerprint(mapping))
            if job.total == 0:
                job.state, job.started_at, job.finished_at = "succeeded", job.created_at, job.created_at
            else:
                await self.queue.enqueue(QueuedBatch(job.id, job.team_id, job.provider), session=session)
            await session.flush()
            view = JobView.of(job, {PENDING: job.total} if job.total else {})
        logger.info(
            "sync job started",
            extra={"job_id": view.id, "team": caller.team_id, "provider": crm.name, "leads": view.total},
        )
        return view

    async def get(self, caller: Caller, job_id: str) -> JobView:
        async with self._database.session() as session:
            return await _view(JobRepository(session), caller, job_id)

    async def list(self, caller: Caller, *, page_size: int = 0, page_token: str = "") -> JobPage:
        limit = _page_size(page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = _decode_position(page_token) if page_token else None
        async with self._database.session() as session:
            jobs = JobRepository(session)
            rows = await jobs.page(caller.team_id, limit + 1, before)
            counts = await jobs.counts([row.id for row in rows[:limit]])
        views = [JobView.of(row, counts[row.id]) for row in rows[:limit]]
        token = _encode_position(rows[limit - 1].created_at, rows[limit - 1].id) if len(rows) > limit else ""
        return JobPage(views, token)

    async def cancel(self, caller: Caller, job_id: str) -> tuple[JobView, str]:
        """Stop the job: leads it has not reached end as cancelled. A batch under way still finishes."""
        async with self._database.session() as session:
            jobs = JobRepository(session)
            job = await _job(jobs, caller, job_id)
            if job.state in TERMINAL_STATES:
                message = f"The job had already {job.state}; nothing to cancel."
            else:
                now = utcnow()
                cancelled = await jobs.close_pending(
                    job, SyncAction.CANCELLED, reason=None, message="The job was cancelled."
                )
                await jobs.update_job(
                    job.id, only_from=UNFINISHED_STATES, state="cancelled", cancel_requested_at=now, finished_at=now
                )
                message = f"Cancelled: {cancelled} lead(s) the job had not reached will not be synced."
            view = await _view(jobs, caller, job_id)
        return view, message

    async def results(
        self, caller: Caller, job_id: str, *, page_size: int = 0, page_token: str = "", outcome: str = ""
    ) -> ResultPage:
        limit = _page_size(page_size, DEFAULT_RESULTS_PAGE, MAX_RESULTS_PAGE)
        after = _decode_lead_position(page_token) if page_token else ""
        async with self._database.session() as session:
            jobs = JobRepository(session)
            job = await _job(jobs, caller, job_id)
            rows = await jobs.results(job, limit + 1, after, outcome or None)
        token = _encode_lead_position(rows[limit - 1].lead_id) if len(rows) > limit else ""
        return ResultPage([ResultView.of(row) for row in rows[:limit]], token)

    async def watch(
        self, caller: Caller, job_id: str, *, poll_seconds: float = WATCH_POLL_SECONDS
    ) -> AsyncIterator[JobView]:
        """The job now, then again whenever it moved (a batch recorded, a state changed) — and at least every
        ``WATCH_KEEPALIVE_SECONDS`` while it waits (for a budget, say), so proxies keep the stream — until it ended."""
        last: tuple[str, int, int] | None = None
        loop = asyncio.get_running_loop()
        sent_at = loop.time()
        while True:
            view = await self.get(caller, job_id)
            now = (view.state, view.processed, view.crm_calls)
            if now != last or loop.time() - sent_at >= WATCH_KEEPALIVE_SECONDS:
                yield view
                last, sent_at = now, loop.time()
            if view.finished:
                return
            await asyncio.sleep(poll_seconds)

    # -- the worker's side ---------------------------------------------------------------------------

    async def unfinished_batches(self) -> builtins.list[QueuedBatch]:
        """A batch for every job that is queued or running (the job library dedups those already waiting)."""
        async with self._database.session() as session:
            unfinished = await JobRepository(session).unfinished(queue=self.queue_name)
        return [QueuedBatch(job.id, job.team_id, job.provider) for job in unfinished]

    async def recover(self) -> int:
        """Queue again every job that is queued or running (the embedded queue forgets them on a restart),
        and reconcile the writes single syncs left open. Returns how many jobs were queued."""
        if self.queue is None:
            return 0
        unfinished = await self.unfinished_batches()
        for batch in unfinished:
            await self.queue.enqueue(batch)
        await self._engine.reconcile_interrupted()
        return len(unfinished)

    @traced("sync job batch", root=True)
    async def run_batch(self, batch: QueuedBatch) -> BatchStep:
        """Sync the job's next pending leads; what is left to do. Safe to run again after a crash."""
        async with self._database.session() as session:
            jobs = JobRepository(session)
            job = await jobs.get_for_worker(batch.job_id)
            if job is None or job.state in TERMINAL_STATES:
                return BatchStep(again=False)
            if job.state == "queued":
                if job.selection == "auto" and (wait := gathering_wait(job, self.batch_leads, utcnow())):
                    return BatchStep(again=True, delay_seconds=wait, attempt=batch.attempt)
                if not await jobs.update_job(job.id, only_from=("queued",), state="running", started_at=utcnow()):
                    return BatchStep(again=False)  # cancelled a moment ago
            integration = await IntegrationRepository(session).get(job.team_id, job.provider)
            lead_ids = await jobs.pending(job.id, self.batch_leads)
        caller = Caller(Principal(subject=job.actor, team_id=job.team_id, role=Role.MEMBER), request_id=job.request_id)
        if not lead_ids:
            await self._finish(caller, job)
            return BatchStep(again=False)
        try:
            crm = self._plugins.providers().get(job.provider)
            target = await self._engine.target(caller, crm, integration)
        except CrmHubError as error:  # disconnected, credentials expired, mapping removed, plugin uninstalled
            await self._fail(caller, job, error)
            return BatchStep(again=False)
        if (spent := await self._budgets.spent_allowance(job.team_id, job.provider)) is not None:
            # The account's daily allowance is nearly spent: wait for it, leaving the rest to interactive syncs.
            return BatchStep(again=True, delay_seconds=spent.retry_after or QUOTA_WAIT_SECONDS, attempt=batch.attempt)
        size = self.batch_leads
        async with self._database.session() as session:
            rows = await LeadRepository(session).get_many(job.team_id, lead_ids[:size])
        leads = [LeadRecord.of(row) for row in rows]
        gone = NotFound("The lead was deleted before the job reached it.", reason="LEAD_NOT_FOUND")
        missing = {
            lead_id: SyncOutcome(SyncAction.FAILED, gone.message, {}, job.dry_run, error=gone)
            for lead_id in set(lead_ids[:size]) - {lead.id for lead in leads}
        }
        result = await self._engine.sync_batch(
            caller,
            target,
            leads,
            DuplicatePolicy(job.duplicate_policy),
            dry_run=job.dry_run,
            force=job.force,
            job=job,
            decided=missing,
            # Leads an outage left without an outcome stay pending: the batch runs again (see _after_batch).
            keep_unfinished=True,
        )
        return await self._after_batch(caller, job, batch, result)

    async def _after_batch(self, caller: Caller, job: SyncJob, batch: QueuedBatch, result: BatchResult) -> BatchStep:
        error = result.error
        if error is None:
            return BatchStep(again=True)
        if isinstance(error, RateLimited):
            # A spent quota makes work wait, never fail: this batch runs again once the CRM allows it.
            return BatchStep(again=True, delay_seconds=error.retry_after or QUOTA_WAIT_SECONDS, attempt=batch.attempt)
        if error.reason in (SYNC_IN_PROGRESS, WRITE_OUTCOME_UNKNOWN):
            # A write still in flight: come back once it surely arrived (or never will), then reconcile it.
            delay = (
                error.retry_after if isinstance(error, ProviderError) and error.retry_after else INTENT_STALE_SECONDS
            )
            return BatchStep(again=True, delay_seconds=delay, attempt=batch.attempt)
        transient = isinstance(error, ProviderError) and error.retryable
        if transient and batch.attempt + 1 < BATCH_ATTEMPTS:
            return BatchStep(again=True, delay_seconds=min(300.0, 5.0 * 2**batch.attempt), attempt=batch.attempt + 1)
        await self._engine.record_failed(caller, result, error, dry_run=job.dry_run, job=job)
        if transient:
            return BatchStep(again=True)  # those leads failed after every try: go on with the next ones
        await self._fail(caller, job, error)  # credentials expired, access denied: the whole job stops
        return BatchStep(again=False)

    async def _finish(self, caller: Caller, job: SyncJob) -> None:
        async with self._database.session() as session:
            jobs = JobRepository(session)
            counts = (await jobs.counts([job.id]))[job.id]
            summary = _summary(await jobs.failure_reasons(job.id))
            ended = await jobs.update_job(
                job.id, only_from=UNFINISHED_STATES, state="succeeded", finished_at=utcnow(), error=summary
            )
        if ended:  # not cancelled meanwhile
            self._notify_finished(caller, job, "succeeded", counts, summary, None)

    async def _fail(self, caller: Caller, job: SyncJob, error: CrmHubError) -> None:
        async with self._database.session() as session:
            jobs = JobRepository(session)
            await jobs.close_pending(job, SyncAction.FAILED, reason=error.reason, message=error.message)
            ended = await jobs.update_job(
                job.id,
                only_from=UNFINISHED_STATES,
                state="failed",
                finished_at=utcnow(),
                error=error.message,
                error_reason=error.reason,
            )
            counts = (await jobs.counts([job.id]))[job.id]
        if ended:
            self._notify_finished(caller, job, "failed", counts, error.message, error.reason)

    def _notify_finished(
        self, caller: Caller, job: SyncJob, state: str, counts: dict[str, int], summary: str | None, reason: str | None
    ) -> None:
        shown = ", ".join(f"{count} {outcome}" for outcome, count in sorted(counts.items()) if count)
        message = f"Sync job {job.id} {state}: {shown or 'no leads'}." + (f" {summary}" if summary else "")
        logger.info("sync job finished", extra={"job_id": job.id, "state": state, "counts": counts})
        if job.selection == "auto" and state == "succeeded" and not summary:
            return  # automatic sync runs every few seconds: Slack hears of it only when something went wrong
        self._notifications.publish(
            Notification(
                kind="sync_job_finished",
                team_id=job.team_id,
                provider=job.provider,
                message=message,
                reason=reason,
                request_id=caller.request_id,
                job_id=job.id,
            )
        )


def gathering_wait(job: SyncJob, batch_leads: int, now: datetime) -> float:
    """How much longer an automatic job that is still gathering waits for more leads; 0 to start now."""
    if job.total >= batch_leads:
        return 0.0
    since_last = (now - (job.gathered_at or job.created_at)).total_seconds()
    since_first = (now - job.created_at).total_seconds()
    wait = min(GATHER_QUIET_SECONDS - since_last, GATHER_MAX_SECONDS - since_first)
    return max(wait, 0.1) if wait > 0 else 0.0  # not a flurry of tiny waits


def _summary(failures: dict[str, int]) -> str | None:
    """E.g. "12 leads failed: REQUIRED_FIELD_MISSING (10), FIELD_VALUE_INVALID (2)." — None when none did."""
    if not failures:
        return None
    total = sum(failures.values())
    reasons = sorted(failures.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{reason} ({count})" for reason, count in reasons[:3])
    more = f" and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    return f"{total} lead{'s' if total != 1 else ''} failed: {shown}{more}."


def _validated(
    provider: str, duplicate_policy: str, lead_ids: Sequence[str], selection: str
) -> tuple[DuplicatePolicy, str]:
    policy, violations = checked_target(provider, duplicate_policy)
    if lead_ids and selection:
        violations.append(FieldViolation("selection", "give either leadIds or a selection, not both"))
    elif not lead_ids and not selection:
        violations.append(FieldViolation("selection", f"give leadIds, or a selection: {', '.join(SELECTIONS)}"))
    elif selection and selection not in SELECTIONS:
        violations.append(FieldViolation("selection", f"must be one of {', '.join(SELECTIONS)}"))
    if len(lead_ids) > MAX_LEAD_IDS:
        violations.append(FieldViolation("leadIds", f"at most {MAX_LEAD_IDS} lead ids per job; use a selection"))
    if violations:
        raise invalid_request("The sync job", violations)
    return policy, selection or "ids"


async def _job(jobs: JobRepository, caller: Caller, job_id: str) -> SyncJob:
    job = await jobs.get(caller.team_id, job_id) if _looks_like_id(job_id) else None
    if job is None:
        # The same answer for "missing" and "someone else's": ids must not reveal other teams' jobs.
        raise NotFound(f"Sync job {job_id[:64]!r} not found.", reason="SYNC_JOB_NOT_FOUND")
    return job


async def _view(jobs: JobRepository, caller: Caller, job_id: str) -> JobView:
    job = await _job(jobs, caller, job_id)
    return JobView.of(job, (await jobs.counts([job.id]))[job.id])


def _looks_like_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def _page_size(page_size: int, default: int, maximum: int) -> int:
    if page_size < 0:
        raise InvalidArgument(
            "pageSize must not be negative.",
            field_violations=[FieldViolation("page_size", f"must be between 1 and {maximum}, or 0 for {default}")],
        )
    return min(page_size or default, maximum)


def _encode_position(created_at: datetime, row_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def _decode_position(token: str) -> tuple[datetime, str]:
    try:
        created_at, _, row_id = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().partition("|")
        return datetime.fromisoformat(created_at), row_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_token() from None


def _encode_lead_position(lead_id: str) -> str:
    return base64.urlsafe_b64encode(lead_id.encode()).decode().rstrip("=")


def _decode_lead_position(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_token() from None


def _bad_token() -> InvalidArgument:
    return InvalidArgument(
        "pageToken is not valid; pass the nextPageToken of the previous page.",
        reason="PAGE_TOKEN_INVALID",
        field_violations=[FieldViolation("page_token", "not a token this service issued")],
    )
