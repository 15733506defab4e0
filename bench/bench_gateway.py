"""Envoy start-up time and the gateway's latency cost, on the embedded SQLite default.

    .venv/bin/python bench/bench_gateway.py [--requests 500] [--starts 10]

GetStatus (auth + two queries) called one at a time: directly over gRPC, over gRPC through Envoy, and as
REST (GET /integrations/status) through Envoy. Server, Envoy and client share the machine.
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
import httpx

from crm_hub.gateway import EnvoyGateway, GatewaySettings, HostPort
from crm_hub.plugins import PluginHost
from crm_hub.rpc.auth import mint_token
from crm_hub.rpc.server import create_server
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.storage import normalize_database_url, upgrade
from crm_hub.v1 import status_pb2, status_pb2_grpc

JWT_SECRET = "bench-jwt-secret-that-is-long-enough"  # noqa: S105 - a throwaway benchmark secret
VAULT_KEY = "bench-vault-key-long-enough"


async def latencies(call: Callable[[], Awaitable[object]], requests: int) -> tuple[float, float]:
    for _ in range(min(50, requests)):
        await call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.99) - 1] * 1000


async def main(requests: int, starts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = normalize_database_url(None, data_dir=Path(tmp))
        await upgrade(url)
        settings = Settings(database_url=url, data_dir=Path(tmp), jwt_secret=JWT_SECRET, secret_vault_key=VAULT_KEY)
        application = Application.from_settings(settings, plugins=PluginHost(load_entry_points=False))
        server, port, _ = await create_server(application, "127.0.0.1:0")
        await server.start()
        gateway_settings = GatewaySettings(
            http_address=HostPort("127.0.0.1", 0), upstreams=(HostPort("127.0.0.1", port),)
        )
        token = mint_token(JWT_SECRET, team_id="bench", role="member")
        metadata = (("authorization", f"Bearer {token}"),)
        try:
            startup = []
            for _ in range(starts):
                async with EnvoyGateway(gateway_settings) as gateway:
                    startup.append((gateway.startup_seconds or 0) * 1000)
            print(f"envoy start to ready: median {statistics.median(startup):.0f} ms, max {max(startup):.0f} ms")

            async with (
                EnvoyGateway(gateway_settings) as gateway,
                grpc.aio.insecure_channel(f"127.0.0.1:{port}") as direct,
                grpc.aio.insecure_channel(gateway.grpc_target) as proxied,
                httpx.AsyncClient(base_url=gateway.url, headers=dict(metadata), trust_env=False) as rest,
            ):
                direct_stub = status_pb2_grpc.StatusServiceStub(direct)
                proxied_stub = status_pb2_grpc.StatusServiceStub(proxied)
                request = status_pb2.GetStatusRequest()

                async def rest_call() -> None:
                    (await rest.get("/integrations/status")).raise_for_status()

                # httpx costs ~1 ms a call itself: a bare keep-alive HTTP/1.1 client shows what Envoy adds.
                reader, writer = await asyncio.open_connection("127.0.0.1", gateway.http_port)
                raw_request = (
                    f"GET /integrations/status HTTP/1.1\r\nhost: bench\r\nauthorization: Bearer {token}\r\n\r\n"
                ).encode()

                async def raw_rest_call() -> None:
                    writer.write(raw_request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(head.decode())
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(length)

                cases: dict[str, Callable[[], Awaitable[object]]] = {
                    "gRPC direct": lambda: direct_stub.GetStatus(request, metadata=metadata),
                    "gRPC via Envoy": lambda: proxied_stub.GetStatus(request, metadata=metadata),
                    "REST via Envoy": rest_call,
                    "REST, bare client": raw_rest_call,
                }
                print(f"GetStatus, {requests} sequential calls:")
                for name, call in cases.items():
                    p50, p99 = await latencies(call, requests)
                    print(f"  {name:<17} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")
                writer.close()
        finally:
            await server.stop(None)
            await application.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--starts", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.starts))
