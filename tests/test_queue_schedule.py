"""The procrastinate queue's periodic tasks run as often as its documentation says. procrastinate reads a
six-field cron the croniter way — seconds are the *last* field — so ``*/2 * * * * *`` would mean "every second
of every other minute": a killed worker's batch then waited up to two minutes instead of seconds."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter

from crm_hub.core.sync.jobs import BatchStep, QueuedBatch
from crm_hub.queue.procrastinate_queue import ProcrastinateQueue, WorkerOptions


async def _run_batch(batch: QueuedBatch) -> BatchStep:
    return BatchStep(again=False)


async def _unfinished() -> list[QueuedBatch]:
    return []


async def _reconcile() -> int:
    return 0


def intervals(queue: ProcrastinateQueue) -> dict[str, set[float]]:
    """Seconds between a periodic task's runs over the next two hours, per task."""
    start = datetime(2026, 12, 6, 20, 47, 1, tzinfo=UTC)
    seen: dict[str, set[float]] = {}
    for (task_name, _), periodic in queue.app.periodic_registry.periodic_tasks.items():
        schedule = croniter(periodic.cron, start)
        runs = [schedule.get_next(datetime)]
        while runs[-1] < start + timedelta(hours=2):
            runs.append(schedule.get_next(datetime))
        seen[task_name] = {(later - earlier).total_seconds() for earlier, later in itertools.pairwise(runs)}
    return seen


@pytest.mark.parametrize(("heartbeat", "sweep"), [(10.0, 15.0), (1.0, 2.0)])
def test_periodic_tasks_run_as_often_as_documented(heartbeat: float, sweep: float) -> None:
    queue = ProcrastinateQueue(
        "postgresql://127.0.0.1/unused",  # never opened: the schedule is known without a database
        run_batch=_run_batch,
        unfinished=_unfinished,
        reconcile=_reconcile,
        queue="schedule-test",
        options=WorkerOptions(heartbeat_seconds=heartbeat),
    )

    assert intervals(queue) == {
        "crm_hub.retry_stalled": {sweep},  # half the time after which a silent worker counts as gone
        "crm_hub.resume_jobs": {30.0},
        "crm_hub.reconcile": {60.0},
    }
