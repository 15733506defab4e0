"""Fleet-wide figures for the metrics: counts over every team, read now and then (``crm_hub.core.fleet``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.storage.models import LeadSyncState, RateBudget, SyncJob

__all__ = ["FleetFigures", "read_fleet_figures"]


@dataclass(frozen=True)
class FleetFigures:
    #: (team, provider, status) -> leads in that sync state.
    leads: dict[tuple[str, str, str], int]
    #: Job state -> jobs, for the unfinished states (queued, running).
    jobs: dict[str, int]
    oldest_queued_at: datetime | None
    #: (provider, limit name) -> the latest due time (ms since 1970) of any account's schedule: the most spent.
    budget_due_ms: dict[tuple[str, str], int]


async def read_fleet_figures(session: AsyncSession) -> FleetFigures:
    leads = await session.execute(
        select(LeadSyncState.team_id, LeadSyncState.provider, LeadSyncState.status, func.count()).group_by(
            LeadSyncState.team_id, LeadSyncState.provider, LeadSyncState.status
        )
    )
    jobs = await session.execute(
        select(SyncJob.state, func.count(), func.min(SyncJob.created_at))
        .where(SyncJob.state.in_(("queued", "running")))
        .group_by(SyncJob.state)
    )
    job_rows = {state: (count, oldest) for state, count, oldest in jobs}
    budgets = await session.execute(
        select(RateBudget.provider, RateBudget.name, func.max(RateBudget.tat_ms))
        .where(RateBudget.tat_ms.is_not(None))
        .group_by(RateBudget.provider, RateBudget.name)
    )
    return FleetFigures(
        leads={(team, provider, status): count for team, provider, status, count in leads},
        jobs={state: count for state, (count, _) in job_rows.items()},
        oldest_queued_at=job_rows["queued"][1] if "queued" in job_rows else None,
        budget_due_ms={(provider, name): int(due) for provider, name, due in budgets if due is not None},
    )
