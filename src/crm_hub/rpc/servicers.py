"""The five gRPC services: protobuf in, one core call, protobuf out. No SQL, no HTTP, no error mapping."""

from __future__ import annotations

from typing import Any

import grpc

from crm_hub.application import Application
from crm_hub.rpc import convert
from crm_hub.rpc.interceptors import current_caller
from crm_hub.v1 import (
    fields_pb2,
    fields_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    leads_pb2,
    leads_pb2_grpc,
    status_pb2,
    status_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)

__all__ = ["FieldsServicer", "IntegrationsServicer", "LeadsServicer", "StatusServicer", "SyncServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class IntegrationsServicer(integrations_pb2_grpc.IntegrationsServiceServicer):
    def __init__(self, application: Application) -> None:
        self._connections = application.connections

    async def StartOAuth(
        self, request: integrations_pb2.StartOAuthRequest, context: Context
    ) -> integrations_pb2.StartOAuthResponse:
        started = await self._connections.start_oauth(current_caller(), request.kind)
        return integrations_pb2.StartOAuthResponse(success=True, auth_url=started.auth_url, state=started.state)

    async def CompleteOAuth(
        self, request: integrations_pb2.CompleteOAuthRequest, context: Context
    ) -> integrations_pb2.CompleteOAuthResponse:
        message = await self._connections.complete_oauth(
            current_caller(), request.kind, code=request.code, state=request.state
        )
        return integrations_pb2.CompleteOAuthResponse(success=True, message=message)

    async def Disconnect(
        self, request: integrations_pb2.DisconnectRequest, context: Context
    ) -> integrations_pb2.DisconnectResponse:
        message = await self._connections.disconnect(current_caller(), request.kind)
        return integrations_pb2.DisconnectResponse(success=True, message=message)


class FieldsServicer(fields_pb2_grpc.FieldsServiceServicer):
    def __init__(self, application: Application) -> None:
        self._fields = application.fields

    async def ListFields(
        self, request: fields_pb2.ListFieldsRequest, context: Context
    ) -> fields_pb2.ListFieldsResponse:
        fields = await self._fields.list_fields(current_caller(), request.kind)
        return fields_pb2.ListFieldsResponse(success=True, fields=[convert.crm_field(f) for f in fields])

    async def SaveMapping(
        self, request: fields_pb2.SaveMappingRequest, context: Context
    ) -> fields_pb2.SaveMappingResponse:
        saved = await self._fields.save_mapping(current_caller(), request.kind, dict(request.mapping))
        return fields_pb2.SaveMappingResponse(success=True, message="Mapping saved.", mapping=saved)

    async def GetMapping(
        self, request: fields_pb2.GetMappingRequest, context: Context
    ) -> fields_pb2.GetMappingResponse:
        mapping = await self._fields.get_mapping(current_caller(), request.kind)
        return fields_pb2.GetMappingResponse(success=True, mapping=mapping)


class SyncServicer(sync_pb2_grpc.SyncServiceServicer):
    def __init__(self, application: Application) -> None:
        self._sync = application.sync

    async def SyncLead(self, request: sync_pb2.SyncLeadRequest, context: Context) -> sync_pb2.SyncLeadResponse:
        outcome = await self._sync.sync_lead(
            current_caller(),
            request.lead_id,
            provider=request.options.provider,
            duplicate_policy=request.options.duplicate_policy,
            dry_run=request.dry_run,
        )
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


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, application: Application) -> None:
        self._status = application.status

    async def GetStatus(self, request: status_pb2.GetStatusRequest, context: Context) -> status_pb2.GetStatusResponse:
        report = await self._status.report(current_caller())
        return status_pb2.GetStatusResponse(
            success=True,
            integrations={name: convert.integration_status(state) for name, state in report.items()},
        )


class LeadsServicer(leads_pb2_grpc.LeadsServiceServicer):
    def __init__(self, application: Application) -> None:
        self._leads = application.leads

    async def CreateLead(self, request: leads_pb2.CreateLeadRequest, context: Context) -> leads_pb2.CreateLeadResponse:
        lead, created = await self._leads.create(current_caller(), dict(request.fields), request.external_id)
        return leads_pb2.CreateLeadResponse(success=True, lead=convert.lead(lead), created=created)

    async def GetLead(self, request: leads_pb2.GetLeadRequest, context: Context) -> leads_pb2.GetLeadResponse:
        lead = await self._leads.get(current_caller(), request.lead_id)
        return leads_pb2.GetLeadResponse(success=True, lead=convert.lead(lead))

    async def ListTimelineEvents(
        self, request: leads_pb2.ListTimelineEventsRequest, context: Context
    ) -> leads_pb2.ListTimelineEventsResponse:
        page = await self._leads.timeline(
            current_caller(), request.lead_id, page_size=request.page_size, page_token=request.page_token
        )
        return leads_pb2.ListTimelineEventsResponse(
            success=True,
            events=[convert.timeline_event(event) for event in page.events],
            next_page_token=page.next_page_token,
        )
