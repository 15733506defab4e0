"""Live status of a team's integrations: one entry per registered provider."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from crm_hub.core.budget import BudgetView, RateBudgets
from crm_hub.core.caller import Caller
from crm_hub.plugins import PluginHost
from crm_hub.storage import Database, IntegrationRepository, LeadRepository, TimelineRepository
from crm_hub.storage.sync import SyncStateRepository

__all__ = ["IntegrationState", "StatusReporter"]

CONNECTED, DISCONNECTED, ERROR = "CONNECTED", "DISCONNECTED", "ERROR"


@dataclass(frozen=True)
class IntegrationState:
    connected: bool
    state: str
    version: str = ""
    last_sync: datetime | None = None
    error: str | None = None
    syncs_total: int = 0
    syncs_succeeded: int = 0
    reconnect_required: bool = False
    error_reason: str | None = None
    #: The team's leads by their sync state with this provider.
    leads_synced: int = 0
    leads_pending: int = 0
    leads_failed: int = 0
    leads_unsynced: int = 0
    #: What is left of the account's request allowances.
    budgets: tuple[BudgetView, ...] = ()

    @property
    def success_rate(self) -> float:
        return self.syncs_succeeded / self.syncs_total if self.syncs_total else 0.0


class StatusReporter:
    def __init__(self, database: Database, plugins: PluginHost, budgets: RateBudgets | None = None) -> None:
        self._database = database
        self._plugins = plugins
        self._budgets = budgets or RateBudgets(database)

    async def report(self, caller: Caller) -> dict[str, IntegrationState]:
        """Every registered provider, connected or not, with the team's sync counts."""
        registry = self._plugins.providers()
        async with self._database.session() as session:
            integrations = {row.provider: row for row in await IntegrationRepository(session).list(caller.team_id)}
            counts = await TimelineRepository(session).sync_counts(caller.team_id)
            state_rows = SyncStateRepository(session)
            states = await state_rows.counts(caller.team_id)
            synced_at = await state_rows.last_synced(caller.team_id, registry.names())
            leads = await LeadRepository(session).count(caller.team_id)
        budgets = await self._budgets.views(
            caller.team_id, {name: registry.get(name).rate_limits() for name in registry.names()}
        )
        report: dict[str, IntegrationState] = {}
        for name in registry.names():
            row = integrations.get(name)
            total, succeeded = counts.get(name, (0, 0))
            state = row.status if row else DISCONNECTED
            problem = registry.get(name).configuration_problem()
            by_status = states.get(name, {})
            report[name] = IntegrationState(
                connected=state == CONNECTED,
                state=state,
                version=registry.origin(name).version,
                last_sync=_newest(row.last_sync_at if row else None, synced_at.get(name)),
                error=problem or (row.error if row else None),
                syncs_total=total,
                syncs_succeeded=succeeded,
                reconnect_required=bool(row and row.status == ERROR),
                error_reason=None if problem else (row.error_reason if row else None),
                leads_synced=by_status.get("synced", 0),
                leads_pending=by_status.get("pending", 0),
                leads_failed=by_status.get("failed", 0),
                leads_unsynced=leads - sum(by_status.values()),
                budgets=tuple(budgets.get(name, ())),
            )
        for notifier in self._plugins.notifiers():
            if notifier.configured and notifier.name not in report:  # a provider's entry always wins
                report[notifier.name] = IntegrationState(connected=True, state="")
        return report


def _newest(*moments: datetime | None) -> datetime | None:
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None
