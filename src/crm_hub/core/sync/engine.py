"""Syncing leads into a CRM, one or a batch: the steps every sync takes, whichever entrance it came by.

    gate      the provider is connected, its credentials alive, a mapping saved
    plan      each lead's payload through the mapping, coerced to the CRM's types; a lead whose payload and
              mapping are what was last written needs no call at all (``unchanged``)
    write     the ContactWriter looks up, lets the policy decide and writes — recording each write's intent
              before it is sent
    record    sync state, timeline (and a job's results) in one transaction, then notifications

The single ``SyncLead`` and a job's batch share all four; a batch is just more leads at once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from crm_hub.core.budget import BudgetMeter, RateBudgets
from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.core.credentials import CredentialStore
from crm_hub.core.fields import FieldCatalog
from crm_hub.core.leads import LeadRecord, check_lead_id
from crm_hub.core.payload import build_payload, required_values_missing
from crm_hub.core.retry import RetryPolicy, time_left
from crm_hub.core.sync.model import Decision, DuplicatePolicy, SyncAction, SyncItem, SyncOutcome, fingerprint
from crm_hub.core.sync.writer import WRITE_OUTCOME_UNKNOWN, ContactWriter, PlannedWrite
from crm_hub.errors import (
    CrmHubError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    ProviderError,
    RateLimited,
    RefreshRejected,
    Unavailable,
)
from crm_hub.notifications import Notification, NotificationDispatcher, NotificationKind
from crm_hub.observability import metrics
from crm_hub.observability.tracing import traced
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmField, CrmProvider, Quota, observing
from crm_hub.storage import (
    Credential,
    Database,
    Integration,
    IntegrationRepository,
    IntegrationStatus,
    LeadRepository,
    utcnow,
)
from crm_hub.storage.locks import ContactLocks
from crm_hub.storage.models import LeadSyncState, SyncJob
from crm_hub.storage.sync import (
    TIMELINE,
    JobRepository,
    ResultRow,
    StateChange,
    SyncStateRepository,
    TimelineRow,
    timeline_rows,
)

__all__ = ["BatchResult", "SyncEngine", "SyncTarget", "identity_email"]

logger = logging.getLogger(__name__)

#: Longer than any write can take (the RPC budget is 50 s): an intent older than this was interrupted.
INTENT_STALE_SECONDS = 120.0
#: Another sync of the lead is writing right now (or its answer was lost moments ago): wait for it.
SYNC_IN_PROGRESS = "SYNC_IN_PROGRESS"
_COME_BACK_LATER = (SYNC_IN_PROGRESS, WRITE_OUTCOME_UNKNOWN)
#: A job's request waits at most this long for its budget slot; further away, its batch is queued again.
JOB_BUDGET_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class SyncTarget:
    """A provider that passed the gate for a team: what every lead of a sync is planned against."""

    crm: CrmProvider
    mapping: dict[str, str]
    fields: list[CrmField]
    #: The error status shows for the connection (a spent quota): a sync that succeeds clears it.
    shown_error: str | None = None

    @functools.cached_property
    def mapping_fingerprint(self) -> str:
        return fingerprint(self.mapping)


@dataclass
class BatchResult:
    """A batch's outcomes by lead id; the error that stopped it, and the leads it left without an outcome."""

    target: SyncTarget
    outcomes: dict[str, SyncOutcome] = field(default_factory=dict)
    error: CrmHubError | None = None
    #: Leads the error left without an outcome, when the caller keeps them for another try (a job).
    unfinished: list[str] = field(default_factory=list)
    #: Requests sent to the CRM for the batch (refreshes included).
    crm_calls: int = 0


class SyncEngine:
    def __init__(
        self,
        database: Database,
        plugins: PluginHost,
        credentials: CredentialStore,
        catalog: FieldCatalog,
        notifications: NotificationDispatcher,
        retry: RetryPolicy | None = None,
        budgets: RateBudgets | None = None,
        contact_locks: ContactLocks | None = None,
    ) -> None:
        self._database = database
        self._budgets = budgets or RateBudgets(database)
        self._plugins = plugins
        self._credentials = credentials
        self._catalog = catalog
        self._notifications = notifications
        self._writer = ContactWriter(retry)
        self.contact_locks = contact_locks or ContactLocks(database)

    # -- one lead ------------------------------------------------------------------------------------

    @traced("sync lead", attributes=("provider",))
    async def sync_lead(
        self,
        caller: Caller,
        lead_id: str,
        *,
        provider: str,
        duplicate_policy: str = "",
        dry_run: bool = False,
        force: bool = False,
    ) -> SyncOutcome:
        """Sync one lead (or preview it); its failure is raised, after it is recorded."""
        policy = _validated_policy(provider, duplicate_policy)
        crm = self._plugins.providers().get(provider)
        check_lead_id(lead_id)
        # Everything the sync reads, in one statement: the lead, the connection, the lead's state, the credentials.
        async with self._database.session(one_read=True) as session:
            context = await SyncStateRepository(session).sync_context(caller.team_id, crm.name, lead_id)
        if context is None:
            # The same answer for "missing" and "someone else's": ids must not reveal other teams' data.
            raise NotFound(f"Lead {lead_id} not found", metadata={"lead_id": lead_id})
        row, integration, state, stored = context
        lead = LeadRecord.of(row)
        states = {lead.id: state} if state is not None else {}
        mapping = self.check_gate(crm, integration)
        try:
            target = SyncTarget(
                crm=crm,
                mapping=mapping,
                fields=await self._catalog.fields_of(caller, crm, integration),
                shown_error=_shown_error(integration),
            )
        except ProviderError as error:  # the CRM failed before the lead's turn came: a sync that failed all the same
            target = SyncTarget(crm=crm, mapping=mapping, fields=[], shown_error=_shown_error(integration))
            outcome = _failed({}, error, dry_run)
            await self.record(caller, target, {lead.id: outcome}, dry_run=dry_run, job=None, crm_calls=0, duration_ms=0)
        else:
            result = await self.sync_batch(
                caller, target, [lead], policy, dry_run=dry_run, force=force, states=states, credentials=stored
            )
            outcome = result.outcomes[lead.id]
        if not dry_run:
            if outcome.error is not None:
                if not isinstance(outcome.error, RefreshRejected):  # that one is told as credentials_expired
                    self._notify("sync_failed", caller, crm.name, lead.id, outcome.message, outcome.error.reason)
            else:
                self._notify("sync_succeeded", caller, crm.name, lead.id, outcome.message, contact=outcome.contact_id)
        if outcome.error is not None:
            raise outcome.error
        return outcome

    # -- the steps -----------------------------------------------------------------------------------

    def check_gate(self, crm: CrmProvider, integration: Integration | None) -> dict[str, str]:
        """The saved mapping — or FAILED_PRECONDITION unless ``crm`` is connected with live credentials and one."""
        if integration is None or integration.status == IntegrationStatus.DISCONNECTED:
            raise FailedPrecondition(
                f"{crm.label} is not connected for your team; connect it first.",
                reason="PROVIDER_NOT_CONNECTED",
                metadata={"provider": crm.name},
            )
        if integration.status == IntegrationStatus.ERROR and integration.error_reason == RefreshRejected.default_reason:
            # The refresh token was refused: every call would fail the same way until an admin reconnects.
            raise FailedPrecondition(
                f"{crm.label} credentials expired; an admin must reconnect the integration.",
                reason=RefreshRejected.default_reason,
                metadata={"provider": crm.name},
            )
        mapping: dict[str, str] = dict(integration.settings.get("mapping") or {})
        if not mapping:
            raise FailedPrecondition(
                f"No field mapping is saved for {crm.label}; save one with POST /integrations/{crm.name}/mapping.",
                reason="MAPPING_MISSING",
                metadata={"provider": crm.name},
            )
        return mapping

    async def target(self, caller: Caller, crm: CrmProvider, integration: Integration | None) -> SyncTarget:
        """The gate (``check_gate``), then the CRM's fields (cached) that leads are planned against."""
        mapping = self.check_gate(crm, integration)
        return SyncTarget(
            crm=crm,
            mapping=mapping,
            fields=await self._catalog.fields_of(caller, crm, integration),
            shown_error=_shown_error(integration),
        )

    @traced("sync batch")
    async def sync_batch(
        self,
        caller: Caller,
        target: SyncTarget,
        leads: Sequence[LeadRecord],
        policy: DuplicatePolicy,
        *,
        dry_run: bool,
        force: bool = False,
        job: SyncJob | None = None,
        decided: Mapping[str, SyncOutcome] | None = None,
        keep_unfinished: bool = False,
        states: Mapping[str, LeadSyncState] | None = None,
        credentials: Credential | None = None,
        intents_stale_after: float = INTENT_STALE_SECONDS,
    ) -> BatchResult:
        """Plan, write and record ``leads`` (one sync each) and ``decided`` (outcomes known already).

        ``states`` and ``credentials`` are the leads' sync states and the stored credentials when the caller
        read them already; the states are read again if another sync of one of the contacts held it up. An
        intent another sync left open is that sync's until it is ``intents_stale_after`` seconds old.

        An error that stops the batch (an outage past the retries, expired credentials) is returned as
        ``error``; the leads it left without an outcome fail with it — or, with ``keep_unfinished``, are left
        as they are (``unfinished``) for the caller to try again.
        """
        started = time.perf_counter()
        crm = target.crm
        result = BatchResult(target=target, outcomes=dict(decided or {}))
        job_id = job.id if job is not None else None
        prepared: list[SyncItem] = []
        for lead in leads:
            planned = _prepare(target, lead, dry_run)
            if isinstance(planned, SyncOutcome):
                result.outcomes[lead.id] = planned
            else:
                prepared.append(planned)

        # Every request waits for its slot of the account's rate budget; a job's leave room for interactive ones.
        meter = BudgetMeter(
            self._budgets,
            caller.team_id,
            crm.rate_limits(),
            background=job is not None,
            max_wait=JOB_BUDGET_WAIT_SECONDS if job is not None else min(time_left() or 30.0, 30.0),
            provider=crm.name,
        )

        async def before_write(writes: Sequence[PlannedWrite]) -> None:
            # The intents, and the budget of the write requests about to go, in one transaction.
            async with self._database.session(writes=True) as session:
                await SyncStateRepository(session).record_intents(
                    caller.team_id,
                    crm.name,
                    [(write.item.key, write.decision.value, write.seen) for write in writes],
                    job_id=job_id,
                )
                await meter.prepay(session, _write_requests(writes, crm.capabilities.max_batch_size))

        items: list[SyncItem] = []
        if prepared:
            done: dict[str, SyncOutcome] = {}
            try:
                # One sync per contact at a time, in every process: two syncs of one email must not both create it.
                contacts = [item.email or item.key for item in prepared]
                async with self.contact_locks.holding(caller.team_id, crm.name, contacts) as waited:
                    if states is None or waited:
                        # Read under the contact locks: a sync of the same lead that just finished is seen.
                        async with self._database.session() as session:
                            states = await SyncStateRepository(session).get_many(
                                caller.team_id, crm.name, [item.key for item in prepared]
                            )
                    for item in prepared:
                        planned = _against_state(
                            target,
                            item,
                            states.get(item.key),
                            policy,
                            dry_run=dry_run,
                            force=force,
                            job_id=job_id,
                            stale_after=intents_stale_after,
                        )
                        if isinstance(planned, SyncOutcome):
                            result.outcomes[item.key] = planned
                        else:
                            items.append(planned)
                    if items:
                        with observing(meter):
                            await self._credentials.call(
                                caller,
                                crm,
                                lambda tokens: self._writer.apply_batch(
                                    crm, tokens, items, policy, dry_run, before_write=before_write, done=done
                                ),
                                stored=credentials,
                            )
            except CrmHubError as error:
                result.error = error
            result.outcomes.update(done)
            for item in prepared:
                if item.key in result.outcomes or result.error is None:
                    continue
                if keep_unfinished:
                    result.unfinished.append(item.key)
                else:
                    result.outcomes[item.key] = _failed(item.payload, result.error, dry_run)
            if keep_unfinished:
                # A job comes back to a lead whose write is still in flight (or was a moment ago) later, rather
                # than give it an outcome nobody can know yet.
                for lead_id, outcome in list(result.outcomes.items()):
                    if outcome.error is not None and outcome.error.reason in _COME_BACK_LATER:
                        del result.outcomes[lead_id]
                        result.unfinished.append(lead_id)
                        result.error = result.error or outcome.error
        result.crm_calls = meter.calls
        await self.record(
            caller,
            target,
            result.outcomes,
            dry_run=dry_run,
            job=job,
            crm_calls=meter.calls,
            duration_ms=round((time.perf_counter() - started) * 1000),
            quotas=meter.quotas.values(),
        )
        return result

    async def record_failed(
        self, caller: Caller, result: BatchResult, error: CrmHubError, *, dry_run: bool, job: SyncJob | None
    ) -> None:
        """Give the leads a batch left unfinished their outcome: failed with ``error``."""
        outcomes = {lead_id: _failed({}, error, dry_run) for lead_id in result.unfinished}
        await self.record(caller, result.target, outcomes, dry_run=dry_run, job=job, crm_calls=0, duration_ms=0)
        result.outcomes.update(outcomes)
        result.unfinished = []

    async def record(
        self,
        caller: Caller,
        target: SyncTarget,
        outcomes: Mapping[str, SyncOutcome],
        *,
        dry_run: bool,
        job: SyncJob | None,
        crm_calls: int,
        duration_ms: int,
        quotas: Iterable[Quota] = (),
    ) -> None:
        """Sync state, timeline, the job's results, the integration's last sync and what the CRM said of the
        account's allowances, in one transaction.

        Status keeps the error of a quota that waiting seconds won't restore (a daily API limit) until a sync
        succeeds again.
        """
        if not outcomes and not crm_calls:
            return
        # What happened in the CRM happened, whether or not the transaction below commits.
        metrics.count_syncs(caller.team_id, target.crm.name, [outcome.action.value for outcome in outcomes.values()])
        crm = target.crm
        job_id = job.id if job is not None else None
        async with self._database.session(writes=True) as session:
            await self._budgets.record_quotas(session, caller.team_id, crm.name, quotas)
            if job is not None:
                await JobRepository(session).record_results(
                    job, [_result_row(lead_id, outcome) for lead_id, outcome in outcomes.items()], crm_calls=crm_calls
                )
            if not outcomes:
                return
            if not dry_run:
                changes = [
                    _state_change(lead_id, outcome, target.mapping_fingerprint, job_id)
                    for lead_id, outcome in outcomes.items()
                    if not isinstance(outcome.error, NotFound)  # a lead deleted meanwhile has no state left
                ]
                await SyncStateRepository(session).record_outcomes(
                    caller.team_id, crm.name, [change for change in changes if change is not None]
                )
            deleted = _deleted(outcomes)
            rows = [
                _timeline_row(lead_id, outcome, duration_ms)
                for lead_id, outcome in outcomes.items()
                if lead_id not in deleted
            ]
            await session.execute(
                insert(TIMELINE),
                timeline_rows(
                    caller.team_id,
                    crm.name,
                    rows,
                    actor=caller.actor,
                    request_id=caller.request_id,
                    job_id=job_id,
                ),
            )
            if dry_run:
                return
            integrations = IntegrationRepository(session)
            # The last sync's time is the newest of the leads' (status reads it there): the integration's row is
            # written only to clear the error of a spent quota that this sync shows is back.
            if target.shown_error is not None and any(outcome.error is None for outcome in outcomes.values()):
                await integrations.mark_synced(caller.team_id, crm.name, utcnow())
            exhausted = next(
                (o.error for o in outcomes.values() if isinstance(o.error, RateLimited) and not o.error.retryable),
                None,
            )
            if exhausted is not None:
                await integrations.upsert_status(
                    caller.team_id, crm.name, IntegrationStatus.CONNECTED, exhausted.message, reason=exhausted.reason
                )

    @traced("reconcile interrupted syncs")
    async def reconcile_interrupted(self, *, older_than_seconds: float = INTENT_STALE_SECONDS) -> int:
        """Close the intents single syncs left open (the process died mid-write): look each contact up and
        record what really happened — or write it again, when the write surely did not happen. Leads of a job
        still running are left to it. Returns how many leads were reconciled."""
        async with self._database.session() as session:
            groups = await SyncStateRepository(session).open_intents(utcnow() - timedelta(seconds=older_than_seconds))
        reconciled = 0
        for team_id, provider, intents in groups:
            caller = Caller(Principal(subject="crm-hub", team_id=team_id, role=Role.MEMBER), request_id="recovery")
            try:
                crm = self._plugins.providers().get(provider)
                async with self._database.session() as session:
                    integration = await IntegrationRepository(session).get(team_id, provider)
                    leads = {
                        row.id: LeadRecord.of(row)
                        for row in await LeadRepository(session).get_many(team_id, [lead for lead, _ in intents])
                    }
                target = await self.target(caller, crm, integration)
            except CrmHubError as error:
                logger.warning("interrupted syncs not reconciled", extra={"provider": provider, "reason": error.reason})
                continue
            # An interrupted create is reconciled under create_new (a contact that appeared since its lookup is
            # the one it created; none, and it is created now); an upsert or update is written again.
            for policy in (DuplicatePolicy.CREATE_NEW, DuplicatePolicy.UPDATE):
                chosen = [
                    leads[lead_id]
                    for lead_id, action in intents
                    if lead_id in leads and (action == Decision.CREATE) == (policy is DuplicatePolicy.CREATE_NEW)
                ]
                if chosen:
                    await self.sync_batch(
                        caller, target, chosen, policy, dry_run=False, intents_stale_after=older_than_seconds
                    )
                    reconciled += len(chosen)
        return reconciled

    def _notify(
        self,
        kind: NotificationKind,
        caller: Caller,
        provider: str,
        lead_id: str,
        message: str,
        reason: str | None = None,
        *,
        contact: str | None = None,
    ) -> None:
        self._notifications.publish(
            Notification(
                kind=kind,
                team_id=caller.team_id,
                provider=provider,
                lead_id=lead_id,
                contact_id=contact,
                message=message,
                reason=reason,
                request_id=caller.request_id,
            )
        )


def checked_target(provider: str, duplicate_policy: str) -> tuple[DuplicatePolicy, list[FieldViolation]]:
    """The policy a sync request asks for (update when it is not valid) and what is wrong with its target."""
    violations = []
    if not provider:
        violations.append(FieldViolation("provider", "name the CRM to sync to, e.g. hubspot"))
    try:
        policy = DuplicatePolicy.parse(duplicate_policy)
    except InvalidArgument as error:
        violations.extend(error.field_violations)
        policy = DuplicatePolicy.UPDATE
    return policy, violations


def invalid_request(what: str, violations: Sequence[FieldViolation]) -> InvalidArgument:
    """``SYNC_REQUEST_INVALID`` naming every violation, e.g. what = "The sync job"."""
    return InvalidArgument(
        f"{what} is not valid: " + "; ".join(f"{v.field} {v.description}" for v in violations) + ".",
        reason="SYNC_REQUEST_INVALID",
        field_violations=list(violations),
    )


def _validated_policy(provider: str, duplicate_policy: str) -> DuplicatePolicy:
    policy, violations = checked_target(provider, duplicate_policy)
    if violations:
        raise invalid_request("The sync request", violations)
    return policy


def _prepare(target: SyncTarget, lead: LeadRecord, dry_run: bool) -> SyncItem | SyncOutcome:
    """The lead's payload and the email duplicates match by — or its failure (a value the CRM can't take)."""
    crm = target.crm
    try:
        payload = build_payload(
            lead.fields, target.mapping, target.fields, provider_label=crm.label, check_required=False
        )
    except InvalidArgument as error:
        return _failed({}, error, dry_run)
    missing = required_values_missing(payload, target.mapping, target.fields, provider_label=crm.label)
    return SyncItem(lead.id, payload, identity_email(payload, target.fields, lead.fields), missing)


def _against_state(
    target: SyncTarget,
    item: SyncItem,
    state: LeadSyncState | None,
    policy: DuplicatePolicy,
    *,
    dry_run: bool,
    force: bool,
    job_id: str | None,
    stale_after: float = INTENT_STALE_SECONDS,
) -> SyncItem | SyncOutcome:
    """The item as its sync state says: ``unchanged`` when what would be sent was sent last time (nothing to
    do); waiting, when another sync of the lead is writing right now; carrying what an interrupted earlier
    write saw, to reconcile it, when that write was left open."""
    crm = target.crm
    if state is not None and state.intent_at is not None:
        age = (utcnow() - state.intent_at).total_seconds()
        if age < stale_after and (job_id is None or state.job_id != job_id):
            # A write for this lead is under way elsewhere (another replica, a job), or its answer was lost moments
            # ago and may still land: writing too could make a second contact.
            return _failed(
                item.payload,
                Unavailable(
                    f"Another sync of this lead to {crm.label} is still in progress; try again shortly.",
                    provider=crm.name,
                    reason=SYNC_IN_PROGRESS,
                    retry_after=max(1.0, stale_after - age),
                ),
                dry_run,
            )
        if state.intent_seen is None and state.intent_action == Decision.CREATE and not force:
            # Created without a lookup first (no email to match by): whether it reached the CRM cannot be known.
            return _failed(
                item.payload,
                Unavailable(
                    f"An earlier sync of this lead was interrupted while creating a {crm.label} contact, and without "
                    "an email it cannot be checked; check the CRM, then sync again with force.",
                    provider=crm.name,
                    reason=WRITE_OUTCOME_UNKNOWN,
                ),
                dry_run,
            )
        seen = tuple(state.intent_seen) if state.intent_seen is not None else None
        return replace(item, interrupted_seen=seen, interrupted_at=state.intent_at)
    if (
        not force
        and policy is not DuplicatePolicy.CREATE_NEW
        and state is not None
        and state.status == "synced"
        and state.contact_id
        and state.payload_fingerprint == fingerprint(item.payload)
        and state.mapping_fingerprint == target.mapping_fingerprint
    ):
        return SyncOutcome(
            action=SyncAction.UNCHANGED,
            message=f"Nothing changed since the last sync to {crm.label}: nothing was sent.",
            payload=item.payload,
            dry_run=dry_run,
            contact_id=state.contact_id,
        )
    return item


def identity_email(payload: dict[str, Any], fields: list[CrmField], lead_fields: Mapping[str, str]) -> str | None:
    """The email duplicates are matched by: the value mapped onto the CRM's email field (whatever the lead
    calls it), else the lead's own ``email`` field. Lowercased, as providers key their answers."""
    by_name = {crm_field.name: crm_field for crm_field in fields}
    mapped = [value for name, value in payload.items() if by_name[name].type == "email" and name.lower() == "email"]
    mapped = mapped or [value for name, value in payload.items() if by_name[name].type == "email"]
    email = str(mapped[0]) if mapped else lead_fields.get("email", "")
    return email.strip().lower() or None


def _failed(payload: dict[str, Any], error: CrmHubError, dry_run: bool) -> SyncOutcome:
    return SyncOutcome(
        action=SyncAction.FAILED,
        message=error.message,
        payload=payload,
        dry_run=dry_run,
        contact_id=error.metadata.get("contact_id") or None,
        error=error,
    )


def _state_change(
    lead_id: str, outcome: SyncOutcome, mapping_fingerprint: str, job_id: str | None
) -> StateChange | None:
    if outcome.error is not None and outcome.error.reason == SYNC_IN_PROGRESS:
        return None  # the sync under way records its own outcome
    if outcome.error is not None and outcome.error.reason == WRITE_OUTCOME_UNKNOWN:
        # Still pending, its intent left open: the next sync of the lead, or recovery, looks the contact up.
        return StateChange(
            lead_id=lead_id,
            status="pending",
            action=SyncAction.FAILED,
            error_reason=outcome.error.reason,
            error=outcome.error.message,
            job_id=job_id,
        )
    if outcome.error is not None:
        return StateChange(
            lead_id=lead_id,
            status="failed",
            action=SyncAction.FAILED,
            error_reason=outcome.error.reason,
            error=outcome.error.message,
            job_id=job_id,
        )
    written = outcome.action in (SyncAction.CREATED, SyncAction.UPDATED) and not outcome.recovered
    return StateChange(
        lead_id=lead_id,
        status="synced",
        action=outcome.action,
        contact_id=outcome.contact_id,
        payload_fingerprint=fingerprint(outcome.payload) if written else None,
        mapping_fingerprint=mapping_fingerprint if written else None,
        job_id=job_id,
    )


def _shown_error(integration: Integration | None) -> str | None:
    return integration.error if integration is not None and integration.status == IntegrationStatus.CONNECTED else None


def _write_requests(writes: Sequence[PlannedWrite], batch_size: int) -> int:
    """The requests a batch's writes take at least: one per kind of write, per ``batch_size`` records."""
    kinds: dict[Decision, int] = {}
    for write in writes:
        kinds[write.decision] = kinds.get(write.decision, 0) + 1
    return sum(-(-count // max(1, batch_size)) for count in kinds.values())


def _deleted(outcomes: Mapping[str, SyncOutcome]) -> set[str]:
    return {lead_id for lead_id, outcome in outcomes.items() if isinstance(outcome.error, NotFound)}


def _result_row(lead_id: str, outcome: SyncOutcome) -> ResultRow:
    return ResultRow(
        lead_id=lead_id,
        outcome=outcome.action,
        contact_id=outcome.contact_id,
        other_contact_ids=outcome.other_contact_ids,
        error_reason=outcome.error.reason if outcome.error is not None else None,
        message=outcome.message,
    )


def _timeline_row(lead_id: str, outcome: SyncOutcome, duration_ms: int) -> TimelineRow:
    return TimelineRow(
        lead_id=lead_id,
        action=outcome.action,
        message=outcome.message,
        contact_id=outcome.contact_id,
        dry_run=outcome.dry_run,
        error_reason=outcome.error.reason if outcome.error is not None else None,
        duration_ms=duration_ms,
    )
