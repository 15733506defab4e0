"""The five gRPC services: protobuf in, one core call, protobuf out. No SQL, no HTTP, no error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

import grpc

from crm_hub.core.connections import ConnectionService
from crm_hub.core.fields import FieldCatalog
from crm_hub.core.leads import LeadService
from crm_hub.core.status import StatusReporter
from crm_hub.core.sync import SyncEngine
from crm_hub.core.sync.auto import AutoSync
from crm_hub.core.sync.jobs import SyncJobs
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

__all__ = [
    "CoreServices",
    "FieldsServicer",
    "IntegrationsServicer",
    "LeadsServicer",
    "StatusServicer",
    "SyncServicer",
]

Context = grpc.aio.ServicerContext[Any, Any]


class CoreServices(Protocol):
    """The core's use cases the servicers call (the composed service has them all)."""

    @property
    def connections(self) -> ConnectionService: ...

    @property
    def auto(self) -> AutoSync: ...

    @property
    def fields(self) -> FieldCatalog: ...

    @property
    def sync(self) -> SyncEngine: ...

    @property
    def jobs(self) -> SyncJobs: ...

    @property
    def status(self) -> StatusReporter: ...

    @property
    def leads(self) -> LeadService: ...


class IntegrationsServicer(integrations_pb2_grpc.IntegrationsServiceServicer):
    def __init__(self, application: CoreServices) -> None:
        self._connections = application.connections
        self._auto = application.auto

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

    async def GetIntegrationSettings(
        self, request: integrations_pb2.GetIntegrationSettingsRequest, context: Context
    ) -> integrations_pb2.GetIntegrationSettingsResponse:
        view = await self._auto.settings(current_caller(), request.kind)
        return integrations_pb2.GetIntegrationSettingsResponse(
            success=True, settings=convert.sync_settings(view.settings), unsynced_leads=view.unsynced_leads
        )

    async def UpdateIntegrationSettings(
        self, request: integrations_pb2.UpdateIntegrationSettingsRequest, context: Context
    ) -> integrations_pb2.UpdateIntegrationSettingsResponse:
        given = request.settings
        view = await self._auto.update_settings(
            current_caller(),
            request.kind,
            auto_sync=given.auto_sync if given.HasField("auto_sync") else None,
            duplicate_policy=given.duplicate_policy if given.HasField("duplicate_policy") else None,
            sync_updates=given.sync_updates if given.HasField("sync_updates") else None,
        )
        return integrations_pb2.UpdateIntegrationSettingsResponse(
            success=True,
            settings=convert.sync_settings(view.settings),
            unsynced_leads=view.unsynced_leads,
            message=view.message,
        )


class FieldsServicer(fields_pb2_grpc.FieldsServiceServicer):
    def __init__(self, application: CoreServices) -> None:
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
    def __init__(self, application: CoreServices) -> None:
        self._sync = application.sync
        self._jobs = application.jobs

    async def SyncLead(self, request: sync_pb2.SyncLeadRequest, context: Context) -> sync_pb2.SyncLeadResponse:
        outcome = await self._sync.sync_lead(
            current_caller(),
            request.lead_id,
            provider=request.options.provider,
            duplicate_policy=request.options.duplicate_policy,
            dry_run=request.dry_run,
            force=request.options.force,
        )
        return convert.sync_lead_response(outcome)

    async def SyncLeads(self, request: sync_pb2.SyncLeadsRequest, context: Context) -> sync_pb2.SyncLeadsResponse:
        options = request.options
        job = await self._jobs.start(
            current_caller(),
            provider=options.provider,
            duplicate_policy=options.duplicate_policy,
            lead_ids=list(options.lead_ids),
            selection=options.selection,
            force=options.force,
            dry_run=request.dry_run,
        )
        return sync_pb2.SyncLeadsResponse(success=True, job=convert.sync_job(job))

    async def GetSyncJob(self, request: sync_pb2.GetSyncJobRequest, context: Context) -> sync_pb2.GetSyncJobResponse:
        job = await self._jobs.get(current_caller(), request.job_id)
        return sync_pb2.GetSyncJobResponse(success=True, job=convert.sync_job(job))

    async def ListSyncJobs(
        self, request: sync_pb2.ListSyncJobsRequest, context: Context
    ) -> sync_pb2.ListSyncJobsResponse:
        page = await self._jobs.list(current_caller(), page_size=request.page_size, page_token=request.page_token)
        return sync_pb2.ListSyncJobsResponse(
            success=True, jobs=[convert.sync_job(job) for job in page.jobs], next_page_token=page.next_page_token
        )

    async def CancelSyncJob(
        self, request: sync_pb2.CancelSyncJobRequest, context: Context
    ) -> sync_pb2.CancelSyncJobResponse:
        job, message = await self._jobs.cancel(current_caller(), request.job_id)
        return sync_pb2.CancelSyncJobResponse(success=True, job=convert.sync_job(job), message=message)

    async def ListSyncJobResults(
        self, request: sync_pb2.ListSyncJobResultsRequest, context: Context
    ) -> sync_pb2.ListSyncJobResultsResponse:
        page = await self._jobs.results(
            current_caller(),
            request.job_id,
            page_size=request.page_size,
            page_token=request.page_token,
            outcome=request.outcome,
        )
        return sync_pb2.ListSyncJobResultsResponse(
            success=True,
            results=[convert.sync_job_result(result) for result in page.results],
            next_page_token=page.next_page_token,
        )

    async def WatchSyncJob(
        self, request: sync_pb2.WatchSyncJobRequest, context: Context
    ) -> AsyncIterator[sync_pb2.WatchSyncJobResponse]:
        async for job in self._jobs.watch(current_caller(), request.job_id):
            yield sync_pb2.WatchSyncJobResponse(job=convert.sync_job(job), final=job.finished)


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    def __init__(self, application: CoreServices) -> None:
        self._status = application.status

    async def GetStatus(self, request: status_pb2.GetStatusRequest, context: Context) -> status_pb2.GetStatusResponse:
        report = await self._status.report(current_caller())
        return status_pb2.GetStatusResponse(
            success=True,
            integrations={name: convert.integration_status(state) for name, state in report.items()},
        )


class LeadsServicer(leads_pb2_grpc.LeadsServiceServicer):
    def __init__(self, application: CoreServices) -> None:
        self._leads = application.leads

    async def CreateLead(self, request: leads_pb2.CreateLeadRequest, context: Context) -> leads_pb2.CreateLeadResponse:
        lead, created = await self._leads.create(current_caller(), dict(request.fields), request.external_id)
        return leads_pb2.CreateLeadResponse(success=True, lead=convert.lead(lead), created=created)

    async def GetLead(self, request: leads_pb2.GetLeadRequest, context: Context) -> leads_pb2.GetLeadResponse:
        lead, states = await self._leads.get(current_caller(), request.lead_id)
        return leads_pb2.GetLeadResponse(
            success=True, lead=convert.lead(lead), sync_states=[convert.lead_sync_state(state) for state in states]
        )

    async def UpdateLead(self, request: leads_pb2.UpdateLeadRequest, context: Context) -> leads_pb2.UpdateLeadResponse:
        lead, changed = await self._leads.update(current_caller(), request.lead_id, dict(request.fields))
        return leads_pb2.UpdateLeadResponse(success=True, lead=convert.lead(lead), changed=changed)

    async def DeleteLead(self, request: leads_pb2.DeleteLeadRequest, context: Context) -> leads_pb2.DeleteLeadResponse:
        await self._leads.delete(current_caller(), request.lead_id)
        return leads_pb2.DeleteLeadResponse(
            success=True,
            message="Lead deleted from crm_hub, with its sync states and timeline; CRM contacts were not touched.",
        )

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
