"""Where sync-job batches wait and run: procrastinate workers on PostgreSQL, this process on SQLite."""

from __future__ import annotations

from crm_hub.queue.inprocess import InProcessQueue
from crm_hub.queue.procrastinate_queue import ProcrastinateQueue, WorkerOptions

__all__ = ["InProcessQueue", "ProcrastinateQueue", "WorkerOptions"]
