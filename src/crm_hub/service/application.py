"""The composition root: builds the database, vault, plugin host and core services from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from crm_hub.core.budget import RateBudgets
from crm_hub.core.connections import ConnectionService
from crm_hub.core.credentials import CredentialStore
from crm_hub.core.fields import FieldCatalog
from crm_hub.core.fleet import FleetGauges
from crm_hub.core.leads import LeadService
from crm_hub.core.retry import RetryPolicy
from crm_hub.core.status import StatusReporter
from crm_hub.core.sync import SyncEngine
from crm_hub.core.sync.auto import AutoSync
from crm_hub.core.sync.jobs import SyncJobs
from crm_hub.errors import ConfigurationError
from crm_hub.notifications import NotificationDispatcher
from crm_hub.observability import metrics, tracing
from crm_hub.observability.health import Readiness
from crm_hub.observability.ops_server import OpsServer
from crm_hub.plugins import PluginHost
from crm_hub.queue import InProcessQueue, ProcrastinateQueue, WorkerOptions
from crm_hub.rpc.auth import TokenVerifier
from crm_hub.service.config import Settings
from crm_hub.storage import Database, normalize_database_url
from crm_hub.storage.secret_files import load_or_create_secret
from crm_hub.storage.vault import Vault, vault_from_settings

__all__ = ["MIN_JWT_SECRET_BYTES", "Application", "jwt_secret_for"]

MIN_JWT_SECRET_BYTES = 32
#: How often the embedded default looks for writes that single syncs left open (the process died mid-write).
RECONCILE_SECONDS = 60.0

logger = logging.getLogger(__name__)


@dataclass
class Application:
    settings: Settings
    database: Database
    vault: Vault
    plugins: PluginHost
    verifier: TokenVerifier
    notifications: NotificationDispatcher
    credentials: CredentialStore
    connections: ConnectionService
    fields: FieldCatalog
    sync: SyncEngine
    jobs: SyncJobs
    auto: AutoSync
    leads: LeadService
    status: StatusReporter
    #: Whether this process can work (its database answers, it is not stopping): gRPC health and /readyz.
    readiness: Readiness = field(default_factory=Readiness)
    #: The operations address (/metrics, /readyz, /livez) once started, when CRM_HUB_METRICS_ADDRESS names one.
    ops_server: OpsServer | None = field(default=None, repr=False)
    _maintenance: asyncio.Task[None] | None = field(default=None, repr=False)
    _watchers: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, plugins: PluginHost | None = None, retry: RetryPolicy | None = None
    ) -> Application:
        """Compose the service. ``retry`` overrides the CRM retry policy (tests retry without waiting)."""
        plugins = plugins or PluginHost(allowlist=settings.plugins)
        database = Database(normalize_database_url(settings.database_url, data_dir=settings.data_dir))
        metrics.count_crm_requests()
        metrics.set_per_team_labels(settings.metrics_team_labels)
        tracing.configure_tracing()  # only if the standard OTel variables name an endpoint
        tracing.instrument_database(database.engine.sync_engine)
        vault = vault_from_settings(
            secret_vault_key=settings.secret_vault_key,
            previous_keys=settings.secret_vault_previous_keys,
            data_dir=settings.data_dir,
            production=settings.production,
        )
        verifier = TokenVerifier(
            # Both set is refused by TokenVerifier ("set exactly one"), never silently resolved.
            secret=settings.jwt_secret if settings.jwt_public_key else jwt_secret_for(settings),
            public_key=settings.jwt_public_key,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        notifications = NotificationDispatcher(plugins.notifiers())
        credentials = CredentialStore(database, vault, notifications, retry=retry)
        fields = FieldCatalog(database, plugins, credentials, retry=retry)
        budgets = RateBudgets(database)
        sync = SyncEngine(database, plugins, credentials, fields, notifications, retry, budgets)
        jobs = SyncJobs(database, plugins, sync, notifications, budgets=budgets, queue_name=settings.queue_name)
        if database.dialect_name == "sqlite":
            jobs.queue = InProcessQueue(jobs.run_batch)
        else:
            jobs.queue = ProcrastinateQueue(
                database.url,
                run_batch=jobs.run_batch,
                unfinished=jobs.unfinished_batches,
                reconcile=sync.reconcile_interrupted,
                queue=settings.queue_name,
                options=WorkerOptions(
                    concurrency=settings.worker_concurrency, heartbeat_seconds=settings.worker_heartbeat_seconds
                ),
            )
        auto = AutoSync(database, plugins, jobs)
        return cls(
            settings=settings,
            database=database,
            vault=vault,
            plugins=plugins,
            verifier=verifier,
            notifications=notifications,
            credentials=credentials,
            connections=ConnectionService(database, vault, plugins, credentials, fields, notifications),
            fields=fields,
            sync=sync,
            jobs=jobs,
            auto=auto,
            leads=LeadService(database, on_leads_changed=auto.leads_changed),
            status=StatusReporter(database, plugins, budgets),
        )

    def load_providers(self) -> list[str]:
        """Load the plugins now (a broken plugin fails here, before any port is bound); warn about each
        provider that is installed but not configured. Returns the provider names."""
        registry = self.plugins.providers()
        for provider in registry:
            if problem := provider.configuration_problem():
                logger.warning("provider not configured", extra={"provider": provider.name, "problem": problem})
        return registry.names()

    async def start_background(self, *, worker: bool = False) -> None:
        """Start what runs beside the RPCs. The embedded default runs its jobs itself: it resumes what a stopped
        process left (unfinished jobs, interrupted writes) and keeps reconciling every minute. On PostgreSQL
        the workers do that; ``worker`` makes this process one of them (``crm-hub up``)."""
        await self._watch_health()
        if isinstance(self.jobs.queue, InProcessQueue):
            await self.jobs.recover()
            self._maintenance = asyncio.get_running_loop().create_task(self._reconcile_every(RECONCILE_SECONDS))
        elif isinstance(self.jobs.queue, ProcrastinateQueue):
            await self.jobs.queue.open()
            if worker:
                self._maintenance = asyncio.get_running_loop().create_task(self._run_jobs(self.jobs.queue))

    async def _watch_health(self) -> None:
        """Check the database now and every CRM_HUB_HEALTH_CHECK_SECONDS; serve the operations address if asked
        (with the fleet's figures read every 15 s)."""
        loop = asyncio.get_running_loop()
        await self.readiness.check_database(self.database.ping)
        every = self.settings.health_check_seconds
        self._watchers.append(loop.create_task(self.readiness.watch_database(self.database.ping, every)))
        if (address := self.settings.metrics_host_port) is not None:
            try:
                self.ops_server = OpsServer(*address, readiness=self.readiness, registry=metrics.registry())
            except OSError as error:
                raise ConfigurationError(
                    f"CRM_HUB_METRICS_ADDRESS {self.settings.metrics_address} cannot be served ({error.strerror}); "
                    "name a free host:port, or off."
                ) from None
            self.ops_server.start()
            self._watchers.append(loop.create_task(FleetGauges(self.database, self.plugins).refresh_every()))
            logger.info("operations address serving", extra={"address": f"{address[0]}:{self.ops_server.port}"})

    async def _run_jobs(self, queue: ProcrastinateQueue) -> None:
        """The job worker; should it stop on its own, the process is no longer ready (its probe restarts it)."""
        try:
            await queue.run_worker()
        except Exception as error:
            logger.exception("the job worker stopped")
            await self.readiness.set_broken(f"the job worker stopped ({type(error).__name__})")
            raise

    async def _reconcile_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.sync.reconcile_interrupted()
            except Exception:  # the database away for a moment: next time
                logger.exception("reconciling interrupted syncs failed")

    async def aclose(self) -> None:
        await self.readiness.set_stopping()
        for task in (self._maintenance, *self._watchers):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        if self.ops_server is not None:
            await asyncio.to_thread(self.ops_server.stop)
            self.ops_server = None
        if isinstance(self.jobs.queue, InProcessQueue | ProcrastinateQueue):
            await self.jobs.queue.close()
        await self.notifications.drain()
        await self.sync.contact_locks.aclose()
        for provider in self.plugins.providers():
            await provider.aclose()
        for notifier in self.plugins.notifiers():
            await notifier.aclose()
        await self.database.close()
        await asyncio.to_thread(tracing.flush_traces)


def jwt_secret_for(settings: Settings) -> str:
    """JWT_SECRET, or in development a secret generated once into the data directory."""
    if settings.jwt_secret:
        if settings.production and len(settings.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            # HS256 with a short secret can be brute-forced offline from any token seen.
            raise ConfigurationError(
                f"JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes when CRM_HUB_ENV=production; "
                'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return settings.jwt_secret
    if settings.production:
        raise ConfigurationError("JWT_SECRET or JWT_PUBLIC_KEY is required when CRM_HUB_ENV=production.")
    path = settings.data_dir / "jwt.secret"
    secret, created = load_or_create_secret(path)
    if created:
        logger.warning(
            "JWT_SECRET is not set: generated a development secret; set JWT_SECRET in production",
            extra={"path": str(path)},
        )
    return secret
