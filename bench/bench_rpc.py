"""RPC latency and throughput over a real grpc.aio server and channel, on the embedded SQLite default.

    .venv/bin/python bench/bench_rpc.py [--requests 2000] [--concurrency 16] [--database-url URL]

Measures CreateLead (a write), GetLead (a read) and GetStatus (auth + two queries) end to end: JWT
verification, interceptor, core, storage. Server and client share the process (and the 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from crm_hub.plugins import PluginHost
from crm_hub.rpc.auth import mint_token
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import normalize_database_url, upgrade
from crm_hub.v1 import leads_pb2, leads_pb2_grpc, status_pb2, status_pb2_grpc

JWT_SECRET = "bench-jwt-secret-that-is-long-enough"  # noqa: S105 - a throwaway benchmark secret


async def measure(
    name: str, call: Callable[[int], Awaitable[object]], requests: int, concurrency: int
) -> tuple[str, float, float, float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return name, requests / elapsed, p50, p99


async def main(requests: int, concurrency: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or normalize_database_url(None, data_dir=Path(tmp))
        await upgrade(url)
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp),
            jwt_secret=JWT_SECRET,
            secret_vault_key="bench-vault-key-long-enough",  # noqa: S106
        )
        application = Application.from_settings(settings, plugins=PluginHost(load_entry_points=False))
        server, port, _ = await create_server(application, "127.0.0.1:0")
        await server.start()
        token = mint_token(JWT_SECRET, team_id="bench-team", role="admin")
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            leads = leads_pb2_grpc.LeadsServiceStub(channel)
            status = status_pb2_grpc.StatusServiceStub(channel)
            first = await leads.CreateLead(
                leads_pb2.CreateLeadRequest(fields={"email": "first@example.com"}), metadata=metadata
            )

            async def create(i: int) -> object:
                fields = {"email": f"lead{i}@example.com", "name": f"Lead {i}", "company": "Acme"}
                return await leads.CreateLead(leads_pb2.CreateLeadRequest(fields=fields), metadata=metadata)

            async def get(i: int) -> object:
                return await leads.GetLead(leads_pb2.GetLeadRequest(lead_id=first.lead.id), metadata=metadata)

            async def get_status(i: int) -> object:
                return await status.GetStatus(status_pb2.GetStatusRequest(), metadata=metadata)

            rows = [
                await measure("CreateLead", create, requests, concurrency),
                await measure("GetLead", get, requests, concurrency),
                await measure("GetStatus", get_status, requests, concurrency),
            ]
        await server.stop(None)
        await application.aclose()
    dialect = url.partition(":")[0]
    print(f"{requests} requests per RPC, concurrency {concurrency}, database {dialect}")
    print(f"{'rpc':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, rate, p50, p99 in rows:
        print(f"{name:<12} {rate:>8.0f} {p50:>8.2f} {p99:>8.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", default=None)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.concurrency, arguments.database_url))
