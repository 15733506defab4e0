"""Sync jobs in storage: a deployment resumes only the unfinished jobs started on its own queue."""

from __future__ import annotations

import uuid

from crm_hub.storage import Database, utcnow
from crm_hub.storage.models import SyncJob
from crm_hub.storage.sync import JobRepository


def _job(team_id: str, queue: str | None, state: str = "queued") -> SyncJob:
    return SyncJob(
        team_id=team_id,
        provider="hubspot",
        duplicate_policy="update",
        dry_run=False,
        force=False,
        selection="all",
        state=state,
        total=0,
        actor="test",
        request_id="test",
        created_at=utcnow(),
        queue=queue,
    )


async def test_unfinished_jobs_are_those_of_this_queue_and_those_older_than_queue_names(
    database: Database, team_id: str
) -> None:
    ours, theirs = f"ours-{uuid.uuid4().hex[:8]}", f"theirs-{uuid.uuid4().hex[:8]}"
    async with database.session(writes=True) as session:
        jobs = JobRepository(session)
        mine = await jobs.create(_job(team_id, ours))
        running = await jobs.create(_job(team_id, ours, state="running"))
        legacy = await jobs.create(_job(team_id, None))
        other = await jobs.create(_job(team_id, theirs))
        done = await jobs.create(_job(team_id, ours, state="succeeded"))

    async with database.session() as session:
        resumable = {job.id for job in await JobRepository(session).unfinished(100_000, queue=ours)}
        everything = {job.id for job in await JobRepository(session).unfinished(100_000)}

    assert {mine.id, running.id, legacy.id} <= resumable
    assert other.id not in resumable, "another deployment's job is left to its own workers"
    assert done.id not in resumable
    assert {mine.id, running.id, legacy.id, other.id} <= everything
