"""The metrics read from the database: leads pending and failed per provider, the job queue, what is left of the
rate budgets. Every process that serves metrics refreshes them now and then; they are the same everywhere."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from crm_hub.core.budget import Schedule
from crm_hub.observability import metrics
from crm_hub.plugins import PluginHost
from crm_hub.storage import Database, utcnow
from crm_hub.storage.figures import read_fleet_figures

__all__ = ["FLEET_REFRESH_SECONDS", "FleetGauges"]

logger = logging.getLogger(__name__)

#: How often the figures are read again (about a Prometheus scrape interval).
FLEET_REFRESH_SECONDS = 15.0
_STATUSES = ("pending", "failed", "synced")


class FleetGauges:
    def __init__(self, database: Database, plugins: PluginHost) -> None:
        self._database = database
        self._plugins = plugins
        self._team_series: set[tuple[str, str, str]] = set()

    async def refresh(self) -> None:
        """Read the figures once and set the gauges."""
        async with self._database.session() as session:
            figures = await read_fleet_figures(session)
        registry = self._plugins.providers()
        totals = {(provider, status): 0 for provider in registry.names() for status in _STATUSES}
        for (_, provider, status), count in figures.leads.items():
            totals[(provider, status)] = totals.get((provider, status), 0) + count
        for (provider, status), count in totals.items():
            metrics.LEADS.labels(provider, status).set(count)
        if metrics.per_team_labels():
            for key, count in figures.leads.items():
                metrics.TEAM_LEADS.labels(*key).set(count)
            for gone in self._team_series - figures.leads.keys():
                metrics.TEAM_LEADS.remove(*gone)
            self._team_series = set(figures.leads)
        for state in ("queued", "running"):
            metrics.JOBS.labels(state).set(figures.jobs.get(state, 0))
        oldest = figures.oldest_queued_at
        metrics.JOBS_OLDEST_QUEUED_SECONDS.set(max(0.0, (utcnow() - oldest).total_seconds()) if oldest else 0.0)
        now_ms = time.time() * 1000
        for name in registry.names():
            for limit in registry.get(name).rate_limits():
                due = figures.budget_due_ms.get((name, limit.name))
                taken = math.ceil(max(0.0, due - now_ms) / Schedule.of(limit).interval_ms) if due else 0
                metrics.BUDGET_REMAINING.labels(name, limit.name).set(max(0, limit.requests - taken) / limit.requests)

    async def refresh_every(self, seconds: float = FLEET_REFRESH_SECONDS) -> None:
        """Refresh until cancelled; a database away for a moment leaves the last figures."""
        while True:
            try:
                await self.refresh()
            except Exception:
                logger.warning("reading the fleet's figures for the metrics failed", exc_info=True)
            await asyncio.sleep(seconds)
