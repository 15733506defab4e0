"""The metrics every crm_hub process exposes for Prometheus (prometheus-client), defined once here.

Each process (a replica, a worker) counts what it did itself: sum them across processes. The figures read
from the database (leads pending and failed, the job queue, what is left of the rate budgets) are the same
in every process that exposes them: take their ``max``. Labels never carry a team id or an email, unless
the operator asks for the per-team families (``CRM_HUB_METRICS_TEAM_LABELS``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import httpx
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from crm_hub.providers import CrmOperation, CrmRequest, observe_every_request

__all__ = [
    "BUDGET_REMAINING",
    "BUDGET_WAITS",
    "BUDGET_WAIT_SECONDS",
    "CRM_REQUESTS",
    "CRM_REQUEST_SECONDS",
    "CRM_RETRIES",
    "DB_ERRORS",
    "DB_POOL_IN_USE",
    "JOBS",
    "JOBS_OLDEST_QUEUED_SECONDS",
    "LEADS",
    "RPC_REQUESTS",
    "RPC_SECONDS",
    "SYNCS",
    "TEAM_LEADS",
    "TEAM_SYNCS",
    "TOKEN_REFRESHES",
    "VAULT_DECRYPT_FAILURES",
    "CrmRequestMetrics",
    "count_crm_requests",
    "count_rpc",
    "count_syncs",
    "crm_outcome",
    "observe_pool",
    "per_team_labels",
    "registry",
    "set_per_team_labels",
]

#: Latency buckets, in seconds: from a loopback fake's millisecond to a slow CRM's timeout.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# -- RPCs ------------------------------------------------------------------------------------------------
RPC_REQUESTS = Counter(
    "crm_hub_rpc_requests", "RPCs served, by method (Service/Method) and gRPC status code.", ["method", "code"]
)
RPC_SECONDS = Histogram(
    "crm_hub_rpc_duration_seconds", "Time to serve an RPC, by method and gRPC status code.", ["method", "code"],
    buckets=_BUCKETS,
)  # fmt: skip

# -- CRM calls -------------------------------------------------------------------------------------------
CRM_REQUESTS = Counter(
    "crm_hub_crm_requests",
    "HTTP requests sent to CRMs, by provider, operation and outcome: ok, the 4xx status, 429, 5xx, timeout or "
    "unreachable.",
    ["provider", "operation", "outcome"],
)
CRM_REQUEST_SECONDS = Histogram(
    "crm_hub_crm_request_duration_seconds", "Time a CRM took to answer, by provider and operation.",
    ["provider", "operation"], buckets=_BUCKETS,
)  # fmt: skip
CRM_RETRIES = Counter("crm_hub_crm_retries", "CRM calls tried again after a transient failure, by reason.", ["reason"])
TOKEN_REFRESHES = Counter(
    "crm_hub_token_refreshes", "Token refreshes, by provider and result: refreshed, refused (reconnect) or failed.",
    ["provider", "result"],
)  # fmt: skip

# -- syncs -----------------------------------------------------------------------------------------------
SYNCS = Counter(
    "crm_hub_syncs",
    "Leads synced (or previewed: would_*), by provider and action: created, updated, skipped, unchanged, failed.",
    ["provider", "action"],
)
LEADS = Gauge(
    "crm_hub_leads", "Leads by their sync state with each provider (pending, failed, synced), all teams together.",
    ["provider", "status"],
)  # fmt: skip
JOBS = Gauge("crm_hub_sync_jobs", "Sync jobs by state (queued, running), all teams together.", ["state"])
JOBS_OLDEST_QUEUED_SECONDS = Gauge(
    "crm_hub_sync_jobs_oldest_queued_age_seconds", "Age of the oldest queued sync job (0 when none waits)."
)
BUDGET_WAITS = Counter(
    "crm_hub_rate_budget_waits", "CRM requests that waited for their account's rate budget, by provider.", ["provider"]
)
BUDGET_WAIT_SECONDS = Counter(
    "crm_hub_rate_budget_wait_seconds", "Seconds CRM requests spent waiting for rate budgets, by provider.",
    ["provider"],
)  # fmt: skip
BUDGET_REMAINING = Gauge(
    "crm_hub_rate_budget_remaining_ratio",
    "What is left of the most spent account's rate budget, from 0 to 1, by provider and limit.",
    ["provider", "limit"],
)

# -- per team: only when the operator asks (CRM_HUB_METRICS_TEAM_LABELS); one series per team -------------
TEAM_SYNCS = Counter("crm_hub_team_syncs", "crm_hub_syncs by team too.", ["team", "provider", "action"])
TEAM_LEADS = Gauge("crm_hub_team_leads", "crm_hub_leads by team too.", ["team", "provider", "status"])

# -- the vault and the database --------------------------------------------------------------------------
VAULT_DECRYPT_FAILURES = Counter(
    "crm_hub_vault_decrypt_failures", "Stored credentials that could not be decrypted (a wrong or missing key)."
)
DB_POOL_IN_USE = Gauge("crm_hub_db_pool_connections_in_use", "Database connections checked out of the pool.")
DB_ERRORS = Counter("crm_hub_db_errors", "Database statements that failed, by kind of error.", ["kind"])

_Family = TypeVar("_Family", bound=MetricWrapperBase)


class _Children(Generic[_Family]):
    """A family's labelled children, each looked up once: ``labels()`` checks the values and takes a lock on
    every call, which the hot path (every RPC, CRM request and sync) need not pay again. For families whose
    label values are few (methods, codes, providers, operations, outcomes, actions) and never removed."""

    def __init__(self, family: _Family) -> None:
        self._family = family
        self._children: dict[tuple[str, ...], _Family] = {}

    def __call__(self, *values: str) -> _Family:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._family.labels(*values)
        return child


_rpc_requests = _Children(RPC_REQUESTS)
_rpc_seconds = _Children(RPC_SECONDS)
_crm_requests = _Children(CRM_REQUESTS)
_crm_request_seconds = _Children(CRM_REQUEST_SECONDS)
_syncs = _Children(SYNCS)

_per_team = False


def registry() -> CollectorRegistry:
    """Where these metrics are registered (prometheus-client's default, with the process and GC collectors)."""
    return REGISTRY


def set_per_team_labels(enabled: bool) -> None:
    """Also count by team (the ``crm_hub_team_*`` families): one series per team, for operators who ask."""
    global _per_team
    _per_team = enabled


def per_team_labels() -> bool:
    return _per_team


def crm_outcome(request: CrmRequest) -> str:
    """A CRM request's outcome label: ok, its 4xx status (e.g. "401"), "429", "5xx", timeout or unreachable."""
    if request.status is None:
        cause = request.error.__context__ if request.error is not None else None
        timed_out = isinstance(request.error, TimeoutError | httpx.TimeoutException) or isinstance(
            cause, TimeoutError | httpx.TimeoutException
        )
        return "timeout" if timed_out else "unreachable"
    if request.status >= 500:
        return "5xx"
    if request.status >= 400:
        return str(request.status)
    return "ok"


class CrmRequestMetrics:
    """Counts and times every CRM request of the process (registered with ``observe_every_request``)."""

    async def started(self, provider: str, operation: CrmOperation) -> None:
        return None

    def finished(self, provider: str, operation: CrmOperation, request: CrmRequest) -> None:
        _crm_requests(provider, operation, crm_outcome(request)).inc()
        _crm_request_seconds(provider, operation).observe(request.seconds)


def count_rpc(method: str, code: str, seconds: float) -> None:
    """One RPC served (``method`` as Service/Method, ``code`` the gRPC status code's name) and its time."""
    _rpc_requests(method, code).inc()
    _rpc_seconds(method, code).observe(seconds)


def count_syncs(team_id: str, provider: str, actions: Iterable[str]) -> None:
    """One sync per action (created, failed, would_create, ...), by team too when asked."""
    for action in actions:
        _syncs(provider, action).inc()
        if _per_team:
            TEAM_SYNCS.labels(team_id, provider, action).inc()


_counting_crm_requests = False


def count_crm_requests() -> None:
    """Count and time every CRM request of the process from now on (once, however often it is called)."""
    global _counting_crm_requests
    if not _counting_crm_requests:
        observe_every_request(CrmRequestMetrics())
        _counting_crm_requests = True


def observe_pool(size_in_use: Callable[[], int]) -> None:
    """Report the pool's checked-out connections when scraped."""
    DB_POOL_IN_USE.set_function(lambda: float(size_in_use()))
