"""A child process for tests/e2e/test_tracing.py: crm_hub with tracing on (an in-memory exporter), the HubSpot fake
on a socket, one SyncLead and one job over gRPC; prints the spans of the sync and of the job as JSON.

A process of its own because the tracer provider and the instrumentations are global: turned on in the test
session, they would trace every later test.

    python -m tests.e2e.traced_sync DATABASE_URL DATA_DIR
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
from crm_hub_hubspot.fake import FakeHubSpot
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from crm_hub.hookspecs import hookimpl
from crm_hub.observability import tracing
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.testing import follow_consent
from crm_hub.testing.fakes import serving
from crm_hub.v1 import (
    fields_pb2,
    fields_pb2_grpc,
    integrations_pb2,
    integrations_pb2_grpc,
    leads_pb2,
    leads_pb2_grpc,
    sync_pb2,
    sync_pb2_grpc,
)
from tests.support.app import JWT_SECRET, VAULT_KEY, bearer

EMAIL = "traced@example.com"


class _Register:
    def __init__(self, provider: CrmProvider) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, register: Any) -> None:
        register(self.provider)


def _spans(exporter: InMemorySpanExporter) -> list[dict[str, Any]]:
    return [
        {
            "name": span.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
            "attributes": {key: str(value) for key, value in (span.attributes or {}).items()},
        }
        for span in exporter.get_finished_spans()
    ]


async def main(database_url: str, data_dir: Path) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(exporter=exporter)
    fake = FakeHubSpot()
    team = f"team-{uuid.uuid4().hex[:10]}"
    async with serving(fake) as base_url:
        host = PluginHost(load_entry_points=False, load_default_plugins=False)
        host.register(_Register(fake.provider(base_url=base_url, timeout=5.0)), name="crm-hub-hubspot")
        settings = Settings(
            database_url=database_url,
            data_dir=data_dir,
            jwt_secret=JWT_SECRET,
            secret_vault_key=VAULT_KEY,
            queue_name=f"test-{uuid.uuid4().hex[:12]}",
        )
        application = Application.from_settings(settings, plugins=host)
        server, port, _ = await create_server(application, "127.0.0.1:0")
        await server.start()
        await application.start_background(worker=True)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                admin, member = bearer(team, "admin"), bearer(team, "member")
                integrations = integrations_pb2_grpc.IntegrationsServiceStub(channel)
                start = await integrations.StartOAuth(
                    integrations_pb2.StartOAuthRequest(kind="hubspot"), metadata=admin
                )
                redirect = await follow_consent(start.auth_url)
                await integrations.CompleteOAuth(
                    integrations_pb2.CompleteOAuthRequest(
                        kind="hubspot", code=redirect["code"], state=redirect["state"]
                    ),
                    metadata=admin,
                )
                await fields_pb2_grpc.FieldsServiceStub(channel).SaveMapping(
                    fields_pb2.SaveMappingRequest(kind="hubspot", mapping={"email": "email", "name": "firstname"}),
                    metadata=admin,
                )
                leads = leads_pb2_grpc.LeadsServiceStub(channel)
                created = await leads.CreateLead(
                    leads_pb2.CreateLeadRequest(fields={"email": EMAIL, "name": "Tracy"}), metadata=member
                )
                await leads.CreateLead(
                    leads_pb2.CreateLeadRequest(fields={"email": "jobbed@example.com", "name": "Jo"}), metadata=member
                )
                sync = sync_pb2_grpc.SyncServiceStub(channel)
                exporter.clear()
                await sync.SyncLead(
                    sync_pb2.SyncLeadRequest(lead_id=created.lead.id, options=sync_pb2.SyncOptions(provider="hubspot")),
                    metadata=member,
                )
                sync_spans = _spans(exporter)
                timeline = await leads.ListTimelineEvents(
                    leads_pb2.ListTimelineEventsRequest(lead_id=created.lead.id), metadata=member
                )
                exporter.clear()
                job = await sync.SyncLeads(
                    sync_pb2.SyncLeadsRequest(
                        options=sync_pb2.SyncLeadsOptions(provider="hubspot", selection="unsynced")
                    ),
                    metadata=member,
                )
                async for progress in sync.WatchSyncJob(
                    sync_pb2.WatchSyncJobRequest(job_id=job.job.id), metadata=member
                ):
                    if progress.final:
                        break
                await asyncio.sleep(0.2)  # the batch's last statements end their spans just after the job's
                job_spans = _spans(exporter)
        finally:
            await server.stop(None)
            await application.aclose()
    print(
        json.dumps(
            {
                "sync": sync_spans,
                "job": job_spans,
                "timeline_request_ids": [event.request_id for event in timeline.events],
                "tokens": [*fake.access_tokens, *fake.refresh_tokens],
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
