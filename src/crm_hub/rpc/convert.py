"""Domain objects to protobuf messages. Pure functions, no I/O."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2

from crm_hub.core.leads import LeadRecord, TimelineEntry
from crm_hub.core.status import IntegrationState
from crm_hub.providers import CrmField
from crm_hub.v1 import fields_pb2, leads_pb2, status_pb2

__all__ = ["crm_field", "integration_status", "lead", "timeline_event", "timestamp"]


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
    )
    if state.last_sync is not None:
        message.last_sync.CopyFrom(timestamp(state.last_sync))
    if state.error:
        message.error = state.error
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
