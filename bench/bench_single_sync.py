"""One `SyncLead` against the raw CRM call it makes, side by side (figures 3 of bench/RESULTS.md).

    .venv/bin/python bench/bench_single_sync.py [--databases sqlite,postgresql] [--calls 150] [--rounds 4]

crm_hub (`crm-hub serve`, its own process) syncs new leads with policy update — one HubSpot batch upsert each —
while a minimal httpx client sends the same upsert straight to the same fake HubSpot (its own process, no rate
limit); the two alternate, A B A B. Then throughput at 1, 4 and 16 concurrent callers, and what the Envoy
gateway adds (REST through Envoy against gRPC straight to the server). The rate budget is on, with a limit
far above what is sent, so its statement is part of every sync.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx

from bench.harness import (
    RawHubSpot,
    Team,
    concurrently,
    crm_hub_server,
    database,
    fake_crm,
    grpc_channel,
    machine,
    median,
    percentile,
    timed,
)
from crm_hub.gateway import EnvoyGateway, GatewaySettings, HostPort


async def bench(kind: str, calls: int, rounds: int, latency: float = 0.0) -> dict[str, float]:
    with (
        fake_crm("hubspot", latency=latency) as fake,
        database(kind) as url,
        crm_hub_server(url, fake, HUBSPOT_RATE_LIMIT="1000000/10s") as (port, _server),
    ):
        async with grpc_channel(port) as channel, RawHubSpot.connected(fake) as raw:
            team = Team(channel, "hubspot")
            await team.connect()
            levels = (1, 4, 16)
            per_level = 160
            lead_ids = await team.create_leads(calls * rounds + per_level * len(levels) + 100 + 30, "single")
            for lead_id in lead_ids[:30]:  # warm up both sides: connections, caches, statements
                await team.sync.SyncLead(team.sync_request(lead_id), metadata=team.auth())
                await raw.upsert([f"warm-{uuid.uuid4().hex}@example.com"])
            lead_ids = lead_ids[30:]
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(rounds):
                for _ in range(calls):
                    ours.append(await timed(_syncing(team, lead_ids.pop())))
                for _ in range(calls):
                    theirs.append(await timed(_upserting(raw, f"raw-{uuid.uuid4().hex}@example.com")))
            result = {
                "crm_hub_p50_ms": median(ours) * 1000,
                "crm_hub_p99_ms": percentile(ours, 0.99) * 1000,
                "raw_p50_ms": median(theirs) * 1000,
                "raw_p99_ms": percentile(theirs, 0.99) * 1000,
            }
            for level in levels:
                syncs = [_syncing(team, lead_ids.pop()) for _ in range(per_level)]
                result[f"crm_hub_per_s_at_{level}"] = per_level / await concurrently(level, syncs)
                upserts = [_upserting(raw, f"raw-{uuid.uuid4().hex}@example.com") for _ in range(per_level)]
                result[f"raw_per_s_at_{level}"] = per_level / await concurrently(level, upserts)
            result.update(await _through_envoy(port, team, [lead_ids.pop() for _ in range(100)]))
    return result


def _syncing(team: Team, lead_id: str) -> Callable[[], Awaitable[object]]:
    return lambda: team.sync.SyncLead(team.sync_request(lead_id), metadata=team.auth())


def _upserting(raw: RawHubSpot, email: str) -> Callable[[], Awaitable[object]]:
    return lambda: raw.upsert([email])


def _posting(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> Callable[[], Awaitable[object]]:
    return lambda: http.post(path, json={"provider": "hubspot"}, headers=headers)


async def _through_envoy(port: int, team: Team, lead_ids: list[str]) -> dict[str, float]:
    settings = GatewaySettings(http_address=HostPort("127.0.0.1", 0), upstreams=(HostPort("127.0.0.1", port),))
    async with EnvoyGateway(settings) as gateway, httpx.AsyncClient(base_url=gateway.url) as http:
        headers = {"Authorization": dict(team.auth())["authorization"]}
        rest, direct = [], []
        for index, lead_id in enumerate(lead_ids):
            if index % 2:
                rest.append(await timed(_posting(http, f"/crm/sync/lead/{lead_id}", headers)))
            else:
                direct.append(await timed(_syncing(team, lead_id)))
    return {"rest_via_envoy_p50_ms": median(rest) * 1000, "grpc_direct_p50_ms": median(direct) * 1000}


def report(kind: str, figures: dict[str, float]) -> str:
    lines = [
        f"| {kind} | one sync, p50 / p99 | {figures['crm_hub_p50_ms']:.1f} / {figures['crm_hub_p99_ms']:.1f} ms | "
        f"{figures['raw_p50_ms']:.1f} / {figures['raw_p99_ms']:.1f} ms | "
        f"{figures['crm_hub_p50_ms'] / figures['raw_p50_ms']:.2f}x (p50) |"
    ]
    for level in (1, 4, 16):
        ours, theirs = figures[f"crm_hub_per_s_at_{level}"], figures[f"raw_per_s_at_{level}"]
        ratio = ours / theirs
        lines.append(
            f"| {kind} | {level} concurrent callers | {ours:.0f} syncs/s | {theirs:.0f} calls/s | {ratio:.2f}x |"
        )
    extra = figures["rest_via_envoy_p50_ms"] - figures["grpc_direct_p50_ms"]
    lines.append(
        f"| {kind} | REST through Envoy vs gRPC, p50 | {figures['rest_via_envoy_p50_ms']:.1f} ms | "
        f"{figures['grpc_direct_p50_ms']:.1f} ms (gRPC) | +{extra:.1f} ms |"
    )
    return "\n".join(lines)


async def two_hundred_at_once(kind: str, latency: float = 0.1) -> str:
    """Figure 4: 200 syncs at once, the CRM answering each in ``latency`` s; against 200 raw calls at once."""
    with (
        fake_crm("hubspot", latency=latency) as fake,
        database(kind) as url,
        crm_hub_server(url, fake, HUBSPOT_RATE_LIMIT="1000000/10s") as (port, _server),
    ):
        async with grpc_channel(port) as channel, RawHubSpot.connected(fake) as raw:
            team = Team(channel, "hubspot")
            await team.connect()
            lead_ids = await team.create_leads(420, "wide")
            await concurrently(20, [_syncing(team, lead_id) for lead_id in lead_ids[:20]])  # warm up
            ours, theirs = [], []
            for round_ in range(2):
                chosen = lead_ids[20 + round_ * 200 : 220 + round_ * 200]
                ours.append(await concurrently(200, [_syncing(team, lead_id) for lead_id in chosen]))
                emails = [f"wide-{uuid.uuid4().hex}@example.com" for _ in range(200)]
                theirs.append(await concurrently(200, [_upserting(raw, email) for email in emails]))
    return (
        f"| {kind} | 200 syncs at once, the CRM answering in {latency * 1000:.0f} ms | {median(ours):.2f} s | "
        f"{median(theirs):.2f} s | target ≤ 1.5 s |"
    )


async def main(databases: list[str], calls: int, rounds: int, latency: float) -> None:
    print(f"# {machine()}")
    print("| database | what | crm_hub | raw call | ratio |")
    print("|---|---|---|---|---|")
    for kind in databases:
        print(report(kind, await bench(kind, calls, rounds)), flush=True)
    for kind in databases:
        print(await two_hundred_at_once(kind), flush=True)
    if latency:
        # A CRM with a real CRM's latency: what crm_hub adds, in proportion to what a user waits for anyway.
        for kind in databases:
            figures = await bench(kind, max(20, calls // 4), 2, latency)
            ratio = figures["crm_hub_p50_ms"] / figures["raw_p50_ms"]
            print(
                f"| {kind} | one sync, the CRM answering in {latency * 1000:.0f} ms, p50 | "
                f"{figures['crm_hub_p50_ms']:.1f} ms | {figures['raw_p50_ms']:.1f} ms | {ratio:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.05, help="a second run with the CRM this slow (seconds)")
    args = parser.parse_args()
    asyncio.run(main(args.databases.split(","), args.calls, args.rounds, args.latency))
