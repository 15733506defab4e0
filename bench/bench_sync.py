"""Lead sync throughput over gRPC with the HubSpot provider against its fake (in-process), on SQLite.

    .venv/bin/python bench/bench_sync.py [--leads 300] [--concurrency 16]

Each sync: load lead + mapping, fields from the cache, decrypt tokens, one batch upsert on the fake, a
timeline event, last-sync update. Also times dry runs (one batch read each). The fake's rate limit is
raised so that the benchmark measures crm_hub, not the 110-requests-per-10-s window.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
from crm_hub_hubspot.fake import FakeHubSpot

from crm_hub.application import Application
from crm_hub.auth import mint_token
from crm_hub.config import Settings
from crm_hub.hookspecs import hookimpl
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.rpc.server import create_server
from crm_hub.storage import normalize_database_url, upgrade
from crm_hub.testing import follow_consent
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

SECRET = "bench-jwt-secret-that-is-long-enough"  # noqa: S105 - a throwaway benchmark secret


class Plugin:
    def __init__(self, provider: CrmProvider) -> None:
        self.provider = provider

    @hookimpl
    def register_providers(self, register: Callable[[CrmProvider], None]) -> None:
        register(self.provider)


async def main(leads: int, concurrency: int, database_url: str | None) -> None:
    fake = FakeHubSpot(rate_limit=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        url = normalize_database_url(database_url, data_dir=Path(tmp))
        await upgrade(url)
        host = PluginHost(load_entry_points=False, load_default_plugins=False)
        host.register(Plugin(fake.provider()), name="hubspot")
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp),
            jwt_secret=SECRET,
            secret_vault_key="bench-key-long-enough",  # noqa: S106
        )
        application = Application.from_settings(settings, plugins=host)
        server, port, _ = await create_server(application, "127.0.0.1:0")
        await server.start()
        auth = (("authorization", f"Bearer {mint_token(SECRET, team_id='bench', role='admin')}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            integrations = integrations_pb2_grpc.IntegrationsServiceStub(channel)
            start = await integrations.StartOAuth(integrations_pb2.StartOAuthRequest(kind="hubspot"), metadata=auth)
            redirect = await follow_consent(start.auth_url, transport=httpx.ASGITransport(fake.app))
            await integrations.CompleteOAuth(
                integrations_pb2.CompleteOAuthRequest(kind="hubspot", code=redirect["code"], state=redirect["state"]),
                metadata=auth,
            )
            await fields_pb2_grpc.FieldsServiceStub(channel).SaveMapping(
                fields_pb2.SaveMappingRequest(kind="hubspot", mapping={"email": "email", "name": "firstname"}),
                metadata=auth,
            )
            stub = leads_pb2_grpc.LeadsServiceStub(channel)
            ids = [
                (await stub.CreateLead(
                    leads_pb2.CreateLeadRequest(fields={"email": f"l{i}@example.com", "name": f"L{i}"}), metadata=auth
                )).lead.id
                for i in range(leads)
            ]  # fmt: skip
            sync = sync_pb2_grpc.SyncServiceStub(channel)
            print(f"{leads} leads, concurrency {concurrency}, {url.partition(':')[0]}, HubSpot fake in-process")
            print(f"{'operation':<24} {'syncs/s':>8} {'p50 ms':>8} {'p95 ms':>8}")
            for label, dry_run in (("dry run (1 read)", True), ("sync, update (1 upsert)", False)):
                queue = iter(ids)
                latencies: list[float] = []

                async def worker(
                    dry_run: bool = dry_run, queue: Iterator[str] = queue, latencies: list[float] = latencies
                ) -> None:
                    for lead_id in queue:
                        options = sync_pb2.SyncOptions(provider="hubspot", duplicate_policy="update")
                        started = time.perf_counter()
                        await sync.SyncLead(
                            sync_pb2.SyncLeadRequest(lead_id=lead_id, dry_run=dry_run, options=options), metadata=auth
                        )
                        latencies.append(time.perf_counter() - started)

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                elapsed = time.perf_counter() - started
                latencies.sort()
                p50 = statistics.median(latencies) * 1000
                p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
                print(f"{label:<24} {leads / elapsed:>8.0f} {p50:>8.1f} {p95:>8.1f}")
        await server.stop(None)
        await application.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.leads, arguments.concurrency, arguments.database_url))
