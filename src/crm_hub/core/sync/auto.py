"""Automatic sync: new and changed leads go to every CRM whose integration has it on, shortly after, in batches.

A team's settings per provider live in its integration's settings (``"sync"``): ``auto_sync``, the duplicate
policy of automatic syncs, and ``sync_updates`` (changed leads too, not only new ones). A lead's intake, or a
change to it, joins the lead to the account's *gathering* job — the automatic job that has not started yet —
in the intake's own transaction, so a lead is never stored without being queued. The first lead to find no
gathering job makes one and queues its first batch ``AUTO_SYNC_DELAY_SECONDS`` later. The job starts once no
lead joined for that long, it holds a full batch, or its first lead waited ``GATHER_MAX_SECONDS``: a burst or a
steady stream of leads goes out in a few batch calls, not a call each. Once that job has started, the next lead
gathers a new one.

Automatic jobs are sync jobs like any other (``ListSyncJobs`` shows them with selection ``auto``): their leads
end with an outcome each, in their sync state and timeline; a lead that failed for good waits for a ``failed``
job or its next change, never retried forever.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.caller import Caller
from crm_hub.core.sync.jobs import GATHER_QUIET_SECONDS, QueuedBatch, SyncJobs
from crm_hub.core.sync.model import DuplicatePolicy
from crm_hub.errors import FailedPrecondition, InvalidArgument
from crm_hub.plugins import PluginHost
from crm_hub.storage import Database, Integration, IntegrationRepository, IntegrationStatus, utcnow
from crm_hub.storage.models import SyncJob
from crm_hub.storage.sync import JobRepository, SyncStateRepository

__all__ = ["AUTO_SYNC_DELAY_SECONDS", "AutoSync", "SettingsView", "SyncSettings"]

logger = logging.getLogger(__name__)

#: How long a gathering job waits for more leads before its first batch is tried (see ``gathering_wait``).
AUTO_SYNC_DELAY_SECONDS = GATHER_QUIET_SECONDS
#: Who the timeline and the job list name as the actor of automatic syncs.
AUTOMATIC_ACTOR = "crm-hub (automatic sync)"


@dataclass(frozen=True)
class SyncSettings:
    """How a team syncs to one provider."""

    auto_sync: bool = False
    duplicate_policy: DuplicatePolicy = DuplicatePolicy.UPDATE
    sync_updates: bool = True

    @classmethod
    def of(cls, integration: Integration | None) -> SyncSettings:
        stored: dict[str, Any] = dict((integration.settings if integration else {}).get("sync") or {})
        return cls(
            auto_sync=bool(stored.get("auto_sync", False)),
            duplicate_policy=DuplicatePolicy(stored.get("duplicate_policy", DuplicatePolicy.UPDATE.value)),
            sync_updates=bool(stored.get("sync_updates", True)),
        )

    def stored(self) -> dict[str, Any]:
        return {
            "auto_sync": self.auto_sync,
            "duplicate_policy": self.duplicate_policy.value,
            "sync_updates": self.sync_updates,
        }


@dataclass(frozen=True)
class SettingsView:
    settings: SyncSettings
    #: The team's leads never synced to the provider: automatic sync does not send them by itself.
    unsynced_leads: int
    message: str = ""


class AutoSync:
    def __init__(self, database: Database, plugins: PluginHost, jobs: SyncJobs) -> None:
        self._database = database
        self._plugins = plugins
        self._jobs = jobs

    async def settings(self, caller: Caller, provider: str) -> SettingsView:
        crm = self._plugins.providers().get(provider)
        async with self._database.session() as session:
            integration = await IntegrationRepository(session).get(caller.team_id, crm.name)
            unsynced = await SyncStateRepository(session).count_unsynced(caller.team_id, crm.name)
        return SettingsView(SyncSettings.of(integration), unsynced)

    async def update_settings(
        self,
        caller: Caller,
        provider: str,
        *,
        auto_sync: bool | None = None,
        duplicate_policy: str | None = None,
        sync_updates: bool | None = None,
    ) -> SettingsView:
        """Change the settings given, keep the others. Turning automatic sync on needs what a sync needs (the
        integration connected, a mapping saved); it sends no lead by itself — the answer says how many are
        unsynced and how to send them."""
        crm = self._plugins.providers().get(provider)
        try:
            policy = DuplicatePolicy.parse(duplicate_policy) if duplicate_policy is not None else None
        except InvalidArgument as error:
            raise InvalidArgument(
                f"The settings are not valid: {error.message}",
                reason="SETTINGS_INVALID",
                field_violations=error.field_violations,
            ) from None
        async with self._database.session(writes=True) as session:
            repository = IntegrationRepository(session)
            integration = await repository.get(caller.team_id, crm.name)
            current = SyncSettings.of(integration)
            wanted = replace(
                current,
                auto_sync=current.auto_sync if auto_sync is None else auto_sync,
                duplicate_policy=policy or current.duplicate_policy,
                sync_updates=current.sync_updates if sync_updates is None else sync_updates,
            )
            if integration is None:
                raise FailedPrecondition(
                    f"The {crm.name} integration was never connected; connect it first.",
                    reason="PROVIDER_NOT_CONNECTED",
                    metadata={"provider": crm.name},
                )
            if wanted.auto_sync and not current.auto_sync:
                self._jobs.engine.check_gate(crm, integration)  # connected, mapping saved, credentials usable
            if wanted != current:
                stored = {**integration.settings, "sync": wanted.stored()}
                await repository.save_settings(caller.team_id, crm.name, stored)
            unsynced = await SyncStateRepository(session).count_unsynced(caller.team_id, crm.name)
        message = "Settings saved."
        if wanted.auto_sync and unsynced:
            message += (
                f" {unsynced} of your leads were never synced to {crm.label}; automatic sync sends new and changed "
                f'leads only. To send them: POST /crm/sync/leads {{"provider": "{crm.name}", "selection": "unsynced"}}.'
            )
        return SettingsView(wanted, unsynced, message)

    async def leads_changed(self, session: AsyncSession, team_id: str, lead_ids: Sequence[str], *, new: bool) -> None:
        """Called in the transaction that stores new leads (``new``) or changes them: join them to the gathering
        job of every provider that syncs them automatically."""
        if self._jobs.queue is None or not lead_ids:
            return
        providers = self._plugins.providers()
        for integration in await IntegrationRepository(session).list(team_id):
            settings = SyncSettings.of(integration)
            if not settings.auto_sync or not (new or settings.sync_updates):
                continue
            if (
                integration.status == IntegrationStatus.DISCONNECTED.value
                or integration.provider not in providers.names()
            ):
                continue  # nothing would go out; a reconnect and an `unsynced` job catch up
            await self._gather(session, team_id, integration.provider, settings.duplicate_policy, lead_ids)

    async def _gather(
        self, session: AsyncSession, team_id: str, provider: str, policy: DuplicatePolicy, lead_ids: Sequence[str]
    ) -> None:
        jobs = JobRepository(session)
        job, made = await jobs.gathering_job(
            SyncJob(
                team_id=team_id,
                provider=provider,
                duplicate_policy=policy.value,
                dry_run=False,
                force=False,
                selection="auto",
                state="queued",
                total=0,
                actor=AUTOMATIC_ACTOR,
                request_id="automatic-sync",
                created_at=utcnow(),
                queue=self._jobs.queue_name,
            )
        )
        await jobs.add_leads(job, lead_ids)
        if made and self._jobs.queue is not None:
            batch = QueuedBatch(job.id, team_id, provider)
            await self._jobs.queue.enqueue(batch, delay_seconds=AUTO_SYNC_DELAY_SECONDS, session=session)
            logger.info("automatic sync job gathering", extra={"job_id": job.id, "provider": provider})
