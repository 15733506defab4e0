"""Team-scoped access to the sync engine's rows: each lead's sync state, sync jobs and their per-lead results.

Writes come in batches (a job writes a batch of leads in one statement each), so these repositories speak
plain dictionaries and multi-row statements rather than one ORM object per row.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Float,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.storage.models import (
    GATHERING,
    Base,
    Credential,
    Integration,
    Lead,
    LeadSyncState,
    RateBudget,
    SyncJob,
    SyncJobResult,
    TimelineEvent,
    UTCDateTime,
    new_id,
    utcnow,
)
from crm_hub.storage.repositories import _dialect_insert, _insert

__all__ = [
    "PENDING",
    "TIMELINE",
    "JobRepository",
    "RateBudgetRepository",
    "ResultRow",
    "StateChange",
    "SyncStateRepository",
    "TimelineRow",
    "timeline_rows",
]

#: The outcome of a job's lead that the job has not reached yet.
PENDING = "pending"


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


def _intents_upsert(dialect: str) -> Any:
    statement = _dialect_insert(dialect, _STATES)
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["team_id", "provider", "lead_id"],
        set_={
            "status": new.status,
            "intent_at": new.intent_at,
            "intent_action": new.intent_action,
            "intent_seen": new.intent_seen,
            "job_id": new.job_id,
            "updated_at": new.updated_at,
        },
    )


def _outcomes_upsert(dialect: str) -> Any:
    statement = _dialect_insert(dialect, _STATES)
    states = _STATES.c
    new = statement.excluded
    failed = new.status != "synced"
    # A change to "pending" (a write whose outcome is not known yet) leaves its intent open, to be reconciled.
    still_open = new.status == PENDING
    return statement.on_conflict_do_update(
        index_elements=["team_id", "provider", "lead_id"],
        set_={
            "status": new.status,
            "contact_id": func.coalesce(new.contact_id, states.contact_id),
            "payload_fingerprint": func.coalesce(new.payload_fingerprint, states.payload_fingerprint),
            "mapping_fingerprint": func.coalesce(new.mapping_fingerprint, states.mapping_fingerprint),
            "last_action": new.last_action,
            "last_synced_at": func.coalesce(new.last_synced_at, states.last_synced_at),
            "last_attempt_at": new.last_attempt_at,
            "attempts": states.attempts + 1,
            "failures": case((failed, states.failures + 1), else_=0),
            "error_reason": new.error_reason,
            "error": new.error,
            "intent_at": case((still_open, states.intent_at), else_=None),
            "intent_action": case((still_open, states.intent_action), else_=None),
            "intent_seen": case((still_open, states.intent_seen), else_=None),
            "job_id": new.job_id,
            "updated_at": new.updated_at,
        },
    )


def _results_upsert(dialect: str) -> Any:
    statement = _dialect_insert(dialect, _table(SyncJobResult))
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["job_id", "lead_id"],
        set_={
            "outcome": new.outcome,
            "contact_id": new.contact_id,
            "other_contact_ids": new.other_contact_ids,
            "error_reason": new.error_reason,
            "message": new.message,
            "updated_at": new.updated_at,
        },
    )


def _reserve_upsert(dialect: str) -> Any:
    table = _table(RateBudget)
    now, cost, early, within = (
        bindparam(name, type_=Float()) for name in ("now_ms", "cost_ms", "early_ms", "within_ms")
    )
    due = case((table.c.tat_ms > now, table.c.tat_ms), else_=now)  # max(tat, now)
    starts = case((table.c.tat_ms - early > now, table.c.tat_ms - early), else_=now)
    granted = (starts - now) <= within
    statement = _dialect_insert(dialect, table).values(
        team_id=bindparam("team_id"),
        provider=bindparam("provider"),
        name=bindparam("name"),
        tat_ms=bindparam("first_tat_ms"),
        granted=True,
        updated_at=bindparam("at"),
    )
    return statement.on_conflict_do_update(
        index_elements=["team_id", "provider", "name"],
        set_={
            "tat_ms": case((granted, due + cost), else_=table.c.tat_ms),
            "granted": granted,
            "updated_at": bindparam("at"),
        },
    ).returning(table.c.tat_ms, table.c.granted)


def _sync_context() -> Any:
    lead, integration, state, credential = Lead, Integration, LeadSyncState, Credential
    team: Any = bindparam("team_id")
    provider: Any = bindparam("provider")
    lead_id: Any = bindparam("lead_id")
    return (
        select(lead, integration, state, credential)
        .outerjoin(integration, and_(integration.team_id == lead.team_id, integration.provider == provider))
        .outerjoin(state, and_(state.team_id == lead.team_id, state.provider == provider, state.lead_id == lead.id))
        .outerjoin(credential, and_(credential.team_id == lead.team_id, credential.provider == provider))
        .where(lead.team_id == team, lead.id == lead_id)
    )


_STATES = _table(LeadSyncState)
#: The timeline's table, for plain multi-row INSERTs of events.
TIMELINE = _table(TimelineEvent)
_SYNC_CONTEXT = _sync_context()


_BUILDERS = {
    "intents": _intents_upsert,
    "outcomes": _outcomes_upsert,
    "results": _results_upsert,
    "reserve": _reserve_upsert,
}
_BUILT: dict[tuple[str, str], Any] = {}


def _statement(session: AsyncSession, name: str) -> Any:
    """One of the sync path's upserts for the session's dialect, built once: each use only binds values, so
    neither building nor compiling it is paid again."""
    dialect = session.get_bind().dialect.name
    statement = _BUILT.get((name, dialect))
    if statement is None:
        statement = _BUILT[(name, dialect)] = _BUILDERS[name](dialect)
    return statement


@dataclass(frozen=True)
class StateChange:
    """What one sync attempt did to a lead's sync state (``status`` synced or failed)."""

    lead_id: str
    status: str
    action: str
    contact_id: str | None = None
    #: Set when a payload was written (created, updated): what was sent, and with which mapping.
    payload_fingerprint: str | None = None
    mapping_fingerprint: str | None = None
    error_reason: str | None = None
    error: str | None = None
    job_id: str | None = None


@dataclass(frozen=True)
class TimelineRow:
    lead_id: str | None
    action: str
    message: str
    contact_id: str | None = None
    dry_run: bool = False
    error_reason: str | None = None
    duration_ms: int = 0


class SyncStateRepository:
    """Each lead's sync state per provider, for one team at a time."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get_many(self, team_id: str, provider: str, lead_ids: Sequence[str]) -> dict[str, LeadSyncState]:
        if not lead_ids:
            return {}
        statement = select(LeadSyncState).where(
            LeadSyncState.team_id == team_id,
            LeadSyncState.provider == provider,
            LeadSyncState.lead_id.in_(lead_ids),
        )
        return {row.lead_id: row for row in await self._session.scalars(statement)}

    async def sync_context(
        self, team_id: str, provider: str, lead_id: str
    ) -> tuple[Lead, Integration | None, LeadSyncState | None, Credential | None] | None:
        """What one lead's sync reads, in one statement: the lead, the team's connection to ``provider``, the
        lead's sync state with it and the stored credentials. None if the team has no such lead."""
        parameters = {"team_id": team_id, "provider": provider, "lead_id": lead_id}
        statement = _SYNC_CONTEXT
        row = (await self._session.execute(statement, parameters)).one_or_none()
        return None if row is None else (row[0], row[1], row[2], row[3])

    async def for_lead(self, team_id: str, lead_id: str) -> builtins.list[LeadSyncState]:
        """The lead's state with every provider it was ever synced to, by provider."""
        statement = (
            select(LeadSyncState)
            .where(LeadSyncState.team_id == team_id, LeadSyncState.lead_id == lead_id)
            .order_by(LeadSyncState.provider)
        )
        return builtins.list(await self._session.scalars(statement))

    async def record_intents(
        self,
        team_id: str,
        provider: str,
        intents: Iterable[tuple[str, str, Sequence[str] | None]],
        *,
        job_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Before writes are sent: each ``(lead_id, action, seen contact ids)`` is pending, its intent open."""
        at = at or utcnow()
        rows = [
            {
                "id": new_id(),
                "team_id": team_id,
                "provider": provider,
                "lead_id": lead_id,
                "status": PENDING,
                "intent_at": at,
                "intent_action": action,
                "intent_seen": list(seen) if seen is not None else None,
                "job_id": job_id,
                "updated_at": at,
            }
            for lead_id, action, seen in intents
        ]
        if rows:
            await self._session.execute(_statement(self._session, "intents"), rows)

    async def record_outcomes(
        self, team_id: str, provider: str, changes: Sequence[StateChange], *, at: datetime | None = None
    ) -> None:
        """After the CRM answered: each lead's new state, its intent closed. Fingerprints and the contact are
        kept from before when a change leaves them out (a failure, a skip)."""
        if not changes:
            return
        at = at or utcnow()
        rows = [
            {
                "id": new_id(),
                "team_id": team_id,
                "provider": provider,
                "lead_id": change.lead_id,
                "status": change.status,
                "contact_id": change.contact_id,
                "payload_fingerprint": change.payload_fingerprint,
                "mapping_fingerprint": change.mapping_fingerprint,
                "last_action": change.action,
                "last_synced_at": at if change.status == "synced" else None,
                "last_attempt_at": at,
                "attempts": 1,
                "failures": 0 if change.status == "synced" else 1,
                "error_reason": change.error_reason,
                "error": change.error,
                "intent_at": None,
                "intent_action": None,
                "intent_seen": None,
                "job_id": change.job_id,
                "updated_at": at,
            }
            for change in changes
        ]
        await self._session.execute(_statement(self._session, "outcomes"), rows)

    async def counts(self, team_id: str) -> dict[str, dict[str, int]]:
        """Per provider: how many of the team's leads are synced, pending and failed."""
        statement = (
            select(LeadSyncState.provider, LeadSyncState.status, func.count())
            .where(LeadSyncState.team_id == team_id)
            .group_by(LeadSyncState.provider, LeadSyncState.status)
        )
        counts: dict[str, dict[str, int]] = {}
        for provider, status, count in await self._session.execute(statement):
            counts.setdefault(provider, {})[status] = int(count)
        return counts

    async def last_synced(self, team_id: str, providers: Iterable[str]) -> dict[str, datetime]:
        """Per provider: when the team's newest successful sync was."""
        newest: dict[str, datetime] = {}
        for provider in providers:  # one index range each: (team_id, provider, last_synced_at)
            statement = select(func.max(LeadSyncState.last_synced_at)).where(
                LeadSyncState.team_id == team_id, LeadSyncState.provider == provider
            )
            if (at := await self._session.scalar(statement)) is not None:
                newest[provider] = at
        return newest

    async def count_unsynced(self, team_id: str, provider: str) -> int:
        """How many of the team's leads were never synced to ``provider``."""
        statement = (
            select(func.count())
            .select_from(Lead)
            .outerjoin(LeadSyncState, and_(LeadSyncState.lead_id == Lead.id, LeadSyncState.provider == provider))
            .where(_selection_filter("unsynced", team_id, provider, ""))
        )
        return int(await self._session.scalar(statement) or 0)

    async def open_intents(
        self, older_than: datetime, limit: int = 500
    ) -> builtins.list[tuple[str, str, builtins.list[tuple[str, str]]]]:
        """ADMIN ONLY, for recovery across teams: per ``(team_id, provider)``, the ``(lead id, intent action)``
        of writes started before ``older_than`` and never recorded (the process died in between) — but for
        those of jobs still running, which reconcile their own."""
        running = select(SyncJob.id).where(SyncJob.state.in_(("queued", "running")))
        statement = (
            select(LeadSyncState.team_id, LeadSyncState.provider, LeadSyncState.lead_id, LeadSyncState.intent_action)
            .where(
                LeadSyncState.intent_at.is_not(None),
                LeadSyncState.intent_at < older_than,
                or_(LeadSyncState.job_id.is_(None), LeadSyncState.job_id.not_in(running)),
            )
            .order_by(LeadSyncState.team_id, LeadSyncState.provider)
            .limit(limit)
        )
        grouped: dict[tuple[str, str], builtins.list[tuple[str, str]]] = {}
        for team_id, provider, lead_id, action in await self._session.execute(statement):
            grouped.setdefault((team_id, provider), []).append((lead_id, action or ""))
        return [(team, provider, leads) for (team, provider), leads in grouped.items()]


def _selection_filter(selection: str, team_id: str, provider: str, mapping_fingerprint: str) -> ColumnElement[bool]:
    """The leads of ``team_id`` that ``selection`` picks, over ``leads`` outer-joined with their state."""
    state = LeadSyncState
    if selection == "all":
        return Lead.team_id == team_id
    if selection == "unsynced":  # never synced successfully (no state yet, or pending or failed so far)
        return and_(Lead.team_id == team_id, state.last_synced_at.is_(None))
    if selection == "failed":
        return and_(Lead.team_id == team_id, state.status == "failed")
    if selection == "changed":
        # Synced before, and the lead or the mapping changed since; the payload's fingerprint decides per lead.
        return and_(
            Lead.team_id == team_id,
            state.last_synced_at.is_not(None),
            or_(Lead.updated_at > state.last_synced_at, state.mapping_fingerprint != mapping_fingerprint),
        )
    raise ValueError(f"unknown selection {selection!r}")


@dataclass(frozen=True)
class ResultRow:
    """A lead's outcome in a job, as the job records it."""

    lead_id: str
    outcome: str
    contact_id: str | None = None
    other_contact_ids: Sequence[str] = ()
    error_reason: str | None = None
    message: str | None = None


#: The columns a job is made with (the rest have defaults).
_JOB_COLUMNS = (
    "team_id",
    "provider",
    "duplicate_policy",
    "dry_run",
    "force",
    "selection",
    "state",
    "total",
    "actor",
    "request_id",
    "created_at",
    "queue",
)


class JobRepository:
    """Sync jobs and their per-lead results. Reads that serve a team take its ``team_id``."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, job: SyncJob) -> SyncJob:
        self._session.add(job)
        await self._session.flush()
        return job

    async def get(self, team_id: str, job_id: str) -> SyncJob | None:
        """The team's job ``job_id``; None for another team's (or none at all)."""
        return await self._session.scalar(select(SyncJob).where(SyncJob.team_id == team_id, SyncJob.id == job_id))

    async def get_for_worker(self, job_id: str, *, lock: bool = False) -> SyncJob | None:
        """The job a queued task names, whatever its team (the worker then acts for ``job.team_id``)."""
        statement = select(SyncJob).where(SyncJob.id == job_id)
        if lock:
            statement = statement.with_for_update()
        return await self._session.scalar(statement, execution_options={"populate_existing": True})

    async def page(
        self, team_id: str, limit: int, before: tuple[datetime, str] | None = None
    ) -> builtins.list[SyncJob]:
        """Up to ``limit`` of the team's jobs, newest first, after the page position ``before``."""
        statement = select(SyncJob).where(SyncJob.team_id == team_id)
        if before is not None:
            statement = statement.where(tuple_(SyncJob.created_at, SyncJob.id) < tuple_(*before))
        statement = statement.order_by(SyncJob.created_at.desc(), SyncJob.id.desc()).limit(limit)
        return builtins.list(await self._session.scalars(statement))

    async def existing_leads(self, team_id: str, lead_ids: Sequence[str]) -> set[str]:
        """Which of ``lead_ids`` are the team's leads."""
        found: set[str] = set()
        unique = builtins.list(dict.fromkeys(lead_ids))
        for start in range(0, len(unique), 1000):
            statement = select(Lead.id).where(Lead.team_id == team_id, Lead.id.in_(unique[start : start + 1000]))
            found.update(await self._session.scalars(statement))
        return found

    async def select_leads(self, job: SyncJob, *, lead_ids: Sequence[str] = (), mapping_fingerprint: str = "") -> int:
        """Snapshot the job's leads as pending results — ``lead_ids``, or its selection — and say how many."""
        if job.selection == "ids":
            rows = [
                {"job_id": job.id, "team_id": job.team_id, "lead_id": lead_id, "outcome": PENDING}
                for lead_id in dict.fromkeys(lead_ids)
            ]
            for start in range(0, len(rows), 1000):
                await self._session.execute(insert(_table(SyncJobResult)), rows[start : start + 1000])
            return len(rows)
        state = LeadSyncState
        chosen = (
            select(literal(job.id), Lead.team_id, Lead.id, literal(PENDING))
            .select_from(Lead)
            .outerjoin(state, and_(state.lead_id == Lead.id, state.provider == job.provider))
            .where(_selection_filter(job.selection, job.team_id, job.provider, mapping_fingerprint))
        )
        await self._session.execute(
            insert(SyncJobResult).from_select(["job_id", "team_id", "lead_id", "outcome"], chosen)
        )
        # Counted, not read off rowcount: drivers disagree on it for INSERT ... SELECT.
        count = select(func.count()).where(SyncJobResult.job_id == job.id)
        return int(await self._session.scalar(count) or 0)

    async def gathering_job(self, template: SyncJob) -> tuple[SyncJob, bool]:
        """The account's gathering job — automatic, not started yet, so new leads still join it — locked until
        the transaction ends (its worker waits to start it meanwhile); made from ``template`` if there is none.
        Returns it and whether it is new."""
        for _ in range(3):  # the job found a moment ago may have started since: then gather a new one
            inserted = await self._session.scalar(
                _insert(self._session, SyncJob)
                .values(**{column: getattr(template, column) for column in _JOB_COLUMNS}, id=new_id())
                .on_conflict_do_nothing(index_elements=["team_id", "provider"], index_where=text(GATHERING))
                .returning(SyncJob.id)
            )
            statement = select(SyncJob).where(
                SyncJob.team_id == template.team_id,
                SyncJob.provider == template.provider,
                SyncJob.selection == "auto",
                SyncJob.state == "queued",
            )
            job = await self._session.scalar(statement.with_for_update(), execution_options={"populate_existing": True})
            if job is not None:
                return job, job.id == inserted
        raise RuntimeError("no gathering sync job could be made or found")  # pragma: no cover

    async def add_leads(self, job: SyncJob, lead_ids: Sequence[str]) -> int:
        """Add pending results for those of ``lead_ids`` the job does not have yet; how many were added."""
        rows = [
            {"job_id": job.id, "team_id": job.team_id, "lead_id": lead_id, "outcome": PENDING}
            for lead_id in dict.fromkeys(lead_ids)
        ]
        statement = (
            _insert(self._session, SyncJobResult)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["job_id", "lead_id"])
            .returning(SyncJobResult.lead_id)
        )
        added = len((await self._session.execute(statement)).all())
        if added:
            await self._session.execute(
                update(SyncJob).where(SyncJob.id == job.id).values(total=SyncJob.total + added, gathered_at=utcnow())
            )
        return added

    def _new_id(self) -> ColumnElement[str]:
        """A fresh row id made by the database (32 hex characters, like ``new_id``), for INSERT ... SELECT."""
        if self._session.get_bind().dialect.name == "sqlite":
            return func.lower(func.hex(func.randomblob(16)))
        return func.md5(func.cast(func.random(), Text) + func.cast(func.clock_timestamp(), Text))

    async def pending(self, job_id: str, limit: int) -> builtins.list[str]:
        """The next ``limit`` lead ids the job has not reached, in id order."""
        statement = (
            select(SyncJobResult.lead_id)
            .where(SyncJobResult.job_id == job_id, SyncJobResult.outcome == PENDING)
            .order_by(SyncJobResult.lead_id)
            .limit(limit)
        )
        return builtins.list(await self._session.scalars(statement))

    async def record_results(self, job: SyncJob, rows: Sequence[ResultRow], *, crm_calls: int = 0) -> None:
        """Each lead's one outcome, and the CRM calls it took, in the caller's transaction."""
        if rows:
            now = utcnow()
            values = [
                {
                    "job_id": job.id,
                    "team_id": job.team_id,
                    "lead_id": row.lead_id,
                    "outcome": row.outcome,
                    "contact_id": row.contact_id,
                    "other_contact_ids": builtins.list(row.other_contact_ids) or None,
                    "error_reason": row.error_reason,
                    "message": row.message,
                    "updated_at": now,
                }
                for row in rows
            ]
            await self._session.execute(_statement(self._session, "results"), values)
        if crm_calls:
            await self._session.execute(
                update(SyncJob).where(SyncJob.id == job.id).values(crm_calls=SyncJob.crm_calls + crm_calls)
            )

    async def close_pending(self, job: SyncJob, outcome: str, *, reason: str | None, message: str) -> int:
        """Give every lead the job has not reached ``outcome`` (failed or cancelled), in its results and in its
        timeline; how many there were."""
        pending = (
            select(
                self._new_id(),
                SyncJobResult.team_id,
                SyncJobResult.lead_id,
                literal(job.provider),
                literal(outcome),
                literal(False),
                literal(reason),
                literal(message),
                literal(job.actor),
                literal(job.request_id),
                literal(0),
                literal(job.id),
                literal(utcnow(), UTCDateTime()),
            )
            .join(Lead, Lead.id == SyncJobResult.lead_id)  # a lead deleted meanwhile has no timeline left
            .where(SyncJobResult.job_id == job.id, SyncJobResult.outcome == PENDING)
        )
        columns = [
            "id",
            "team_id",
            "lead_id",
            "provider",
            "action",
            "dry_run",
            "error_reason",
            "message",
            "actor",
            "request_id",
            "duration_ms",
            "job_id",
            "created_at",
        ]
        await self._session.execute(insert(TimelineEvent).from_select(columns, pending))
        statement = (
            update(SyncJobResult)
            .where(SyncJobResult.job_id == job.id, SyncJobResult.outcome == PENDING)
            .values(outcome=outcome, error_reason=reason, message=message, updated_at=utcnow())
        )
        return int((await self._session.execute(statement)).rowcount or 0)  # type: ignore[attr-defined]

    async def counts(self, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per job: how many of its leads have each outcome (``pending`` included)."""
        if not job_ids:
            return {}
        statement = (
            select(SyncJobResult.job_id, SyncJobResult.outcome, func.count())
            .where(SyncJobResult.job_id.in_(job_ids))
            .group_by(SyncJobResult.job_id, SyncJobResult.outcome)
        )
        counts: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
        for job_id, outcome, count in await self._session.execute(statement):
            counts[job_id][outcome] = int(count)
        return counts

    async def results(
        self, job: SyncJob, limit: int, after: str = "", outcome: str | None = None
    ) -> builtins.list[SyncJobResult]:
        """Up to ``limit`` of the job's results in lead-id order, after lead id ``after``."""
        statement = select(SyncJobResult).where(SyncJobResult.job_id == job.id, SyncJobResult.lead_id > after)
        if outcome is not None:
            statement = statement.where(SyncJobResult.outcome == outcome)
        return builtins.list(await self._session.scalars(statement.order_by(SyncJobResult.lead_id).limit(limit)))

    async def failure_reasons(self, job_id: str) -> dict[str, int]:
        """How many of the job's leads failed, per reason."""
        statement = (
            select(SyncJobResult.error_reason, func.count())
            .where(SyncJobResult.job_id == job_id, SyncJobResult.outcome == "failed")
            .group_by(SyncJobResult.error_reason)
        )
        return {reason or "UNKNOWN": int(count) for reason, count in await self._session.execute(statement)}

    async def update_job(self, job_id: str, *, only_from: Sequence[str] | None = None, **changes: Any) -> bool:
        """Change the job; with ``only_from``, only while its state is one of those (a job cancelled meanwhile
        stays cancelled). Whether it changed."""
        statement = update(SyncJob).where(SyncJob.id == job_id)
        if only_from is not None:
            statement = statement.where(SyncJob.state.in_(only_from))
        result = await self._session.execute(statement.values(**changes))
        return bool(cast(Any, result).rowcount)

    async def unfinished(self, limit: int = 1000, *, queue: str | None = None) -> builtins.list[SyncJob]:
        """ADMIN ONLY, for recovery across teams: jobs queued or running, oldest first — with ``queue``, those
        started on that queue (or before jobs named theirs)."""
        statement = select(SyncJob).where(SyncJob.state.in_(("queued", "running")))
        if queue is not None:
            statement = statement.where(or_(SyncJob.queue == queue, SyncJob.queue.is_(None)))
        statement = statement.order_by(SyncJob.created_at).limit(limit)
        return builtins.list(await self._session.scalars(statement))


def timeline_rows(
    team_id: str, provider: str, rows: Sequence[TimelineRow], *, actor: str, request_id: str, job_id: str | None
) -> builtins.list[dict[str, Any]]:
    """Timeline events as rows for one multi-row INSERT (``session.execute(insert(TIMELINE), rows)``)."""
    now = utcnow()
    return [
        {
            "id": new_id(),
            "team_id": team_id,
            "lead_id": row.lead_id,
            "provider": provider,
            "action": row.action,
            "contact_id": row.contact_id,
            "dry_run": row.dry_run,
            "error_reason": row.error_reason,
            "message": row.message,
            "actor": actor,
            "request_id": request_id,
            "duration_ms": row.duration_ms,
            "job_id": job_id,
            "created_at": now,
        }
        for row in rows
    ]


class RateBudgetRepository:
    """Each CRM account's request allowances (see ``crm_hub.core.budget`` for what the numbers mean)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def reserve(
        self,
        team_id: str,
        provider: str,
        name: str,
        *,
        now_ms: float,
        cost_ms: float,
        early_ms: float,
        within_ms: float,
    ) -> tuple[float, bool]:
        """One GCRA reservation in one statement: the schedule moves on by ``cost_ms`` if the slot it gives
        (``early_ms`` before the schedule, or now) is at most ``within_ms`` away. Returns the schedule's time
        afterwards and whether the slot was taken."""
        parameters = {
            "team_id": team_id,
            "provider": provider,
            "name": name,
            "first_tat_ms": int(now_ms + cost_ms),
            "at": utcnow(),
            "now_ms": now_ms,
            "cost_ms": cost_ms,
            "early_ms": early_ms,
            "within_ms": within_ms,
        }
        tat, taken = (await self._session.execute(_statement(self._session, "reserve"), parameters)).one()
        return float(tat or 0), bool(taken)

    async def record_quotas(
        self, team_id: str, provider: str, quotas: Iterable[tuple[str, int, int, int]], *, at: datetime
    ) -> None:
        """What the CRM said of the account's allowances: ``(name, used, limit, window seconds)`` each."""
        for name, used, limit, window in quotas:
            values = {"used": used, "quota": limit, "window_seconds": window, "observed_at": at, "updated_at": at}
            statement = _insert(self._session, RateBudget).values(
                team_id=team_id, provider=provider, name=name, **values
            )
            await self._session.execute(
                statement.on_conflict_do_update(index_elements=["team_id", "provider", "name"], set_=values)
            )

    async def for_team(self, team_id: str, provider: str | None = None) -> builtins.list[RateBudget]:
        statement = select(RateBudget).where(RateBudget.team_id == team_id)
        if provider is not None:
            statement = statement.where(RateBudget.provider == provider)
        return builtins.list(await self._session.scalars(statement))
