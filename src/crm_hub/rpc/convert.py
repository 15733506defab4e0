"""Domain objects to protobuf messages. Pure functions, no I/O."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from crm_hub.core.budget import BudgetView
from crm_hub.core.leads import LeadRecord, LeadSyncView, TimelineEntry
from crm_hub.core.status import IntegrationState
from crm_hub.core.sync import SyncOutcome
from crm_hub.core.sync.auto import SyncSettings
from crm_hub.core.sync.jobs import JobView, ResultView
from crm_hub.providers import CrmField
from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2, status_pb2, sync_pb2

__all__ = [
    "crm_field",
    "integration_status",
    "lead",
    "lead_sync_state",
    "sync_job",
    "sync_job_result",
    "sync_lead_response",
    "timeline_event",
    "timestamp",
]


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def lead(row: LeadRecord) -> leads_pb2.Lead:
    return leads_pb2.Lead(
        id=row.id,
        fields=row.fields,
        external_id=row.external_id or "",
        created_at=timestamp(row.created_at),
        updated_at=timestamp(row.updated_at or row.created_at),
    )


def lead_sync_state(state: LeadSyncView) -> leads_pb2.LeadSyncState:
    message = leads_pb2.LeadSyncState(
        provider=state.provider,
        status=state.status,
        contact_id=state.contact_id or "",
        last_action=state.last_action or "",
        attempts=state.attempts,
        failures=state.failures,
        error_reason=state.error_reason or "",
        error=state.error or "",
        job_id=state.job_id or "",
    )
    if state.last_synced_at is not None:
        message.last_synced_at.CopyFrom(timestamp(state.last_synced_at))
    if state.last_attempt_at is not None:
        message.last_attempt_at.CopyFrom(timestamp(state.last_attempt_at))
    return message


def sync_lead_response(outcome: SyncOutcome) -> sync_pb2.SyncLeadResponse:
    response = sync_pb2.SyncLeadResponse(
        success=True,
        contact_id=outcome.contact_id or "",
        action=outcome.action,
        message=outcome.message,
        dry_run=outcome.dry_run,
        other_contact_ids=outcome.other_contact_ids,
    )
    response.payload.update(outcome.payload)
    return response


_COUNTED = (
    "created",
    "updated",
    "skipped",
    "unchanged",
    "failed",
    "cancelled",
    "would_create",
    "would_update",
    "would_skip",
    "would_conflict",
    "pending",
)


def sync_job(job: JobView) -> sync_pb2.SyncJob:
    message = sync_pb2.SyncJob(
        id=job.id,
        provider=job.provider,
        duplicate_policy=job.duplicate_policy,
        dry_run=job.dry_run,
        selection=job.selection,
        force=job.force,
        state=job.state,
        total=job.total,
        processed=job.processed,
        counts=sync_pb2.SyncJobCounts(**{name: job.counts.get(name, 0) for name in _COUNTED}),
        crm_calls=job.crm_calls,
        created_by=job.created_by,
        created_at=timestamp(job.created_at),
        error=job.error or "",
        error_reason=job.error_reason or "",
        cancel_requested=job.cancel_requested,
    )
    if job.started_at is not None:
        message.started_at.CopyFrom(timestamp(job.started_at))
    if job.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(job.finished_at))
    return message


def sync_job_result(result: ResultView) -> sync_pb2.SyncJobResult:
    return sync_pb2.SyncJobResult(
        lead_id=result.lead_id,
        outcome=result.outcome,
        contact_id=result.contact_id or "",
        other_contact_ids=result.other_contact_ids,
        error_reason=result.error_reason or "",
        message=result.message or "",
    )


def timeline_event(row: TimelineEntry) -> leads_pb2.TimelineEvent:
    return leads_pb2.TimelineEvent(
        id=row.id,
        lead_id=row.lead_id or "",
        provider=row.provider,
        action=row.action,
        contact_id=row.contact_id or "",
        dry_run=row.dry_run,
        error_reason=row.error_reason or "",
        message=row.message,
        actor=row.actor,
        request_id=row.request_id,
        duration_ms=row.duration_ms,
        created_at=timestamp(row.created_at),
        job_id=row.job_id or "",
    )


def integration_status(state: IntegrationState) -> status_pb2.IntegrationStatus:
    message = status_pb2.IntegrationStatus(
        connected=state.connected,
        state=state.state,
        version=state.version,
        syncs_total=state.syncs_total,
        syncs_succeeded=state.syncs_succeeded,
        success_rate=state.success_rate,
        reconnect_required=state.reconnect_required,
        error_reason=state.error_reason or "",
        leads_synced=state.leads_synced,
        leads_pending=state.leads_pending,
        leads_failed=state.leads_failed,
        leads_unsynced=state.leads_unsynced,
        budgets=[rate_budget(budget) for budget in state.budgets],
    )
    if state.last_sync is not None:
        message.last_sync.CopyFrom(timestamp(state.last_sync))
    if state.error:
        message.error = state.error
    return message


def rate_budget(budget: BudgetView) -> status_pb2.RateBudget:
    message = status_pb2.RateBudget(
        name=budget.name, limit=budget.limit, window_seconds=budget.window_seconds, remaining=budget.remaining
    )
    if budget.available_at is not None:
        message.available_at.CopyFrom(timestamp(budget.available_at))
    return message


def crm_field(field: CrmField) -> fields_pb2.CrmField:
    return fields_pb2.CrmField(
        name=field.name,
        label=field.label,
        type=field.type,
        required=field.required,
        description=field.description,
        writable=field.writable,
        options=[fields_pb2.FieldOption(value=o.value, label=o.label) for o in field.options],
    )


def sync_settings(settings: SyncSettings) -> integrations_pb2.IntegrationSettings:
    return integrations_pb2.IntegrationSettings(
        auto_sync=settings.auto_sync,
        duplicate_policy=settings.duplicate_policy.value,
        sync_updates=settings.sync_updates,
    )
