"""The operations address of a running crm_hub: Prometheus metrics that move with real syncs, and readiness that
follows the database — scraped over HTTP from a server that syncs through gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import pytest
from crm_hub_hubspot.fake import FakeHubSpot
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from crm_hub.core.fleet import FleetGauges
from crm_hub.errors import ConfigurationError
from crm_hub.v1 import fields_pb2
from tests.e2e.conftest import World, running
from tests.support.tcp_relay import relaying

MAPPING = {"email": "email", "name": "firstname", "company": "company"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: Samples, name: str, **labels: str) -> float:
    return scraped.get((name, frozenset(labels.items())), 0.0)


async def scrape(world: World, path: str = "/metrics") -> httpx.Response:
    server = world.application.ops_server
    assert server is not None, "the operations address is not served"
    async with httpx.AsyncClient(trust_env=False) as client:
        return await client.get(f"http://127.0.0.1:{server.port}{path}")


@pytest.fixture
async def observed(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    fake = FakeHubSpot()
    async with running(
        fake.provider(timeout=5.0), fake, database_url, tmp_path, metrics_address="127.0.0.1:0"
    ) as world:
        yield world


async def test_a_real_sync_moves_the_rpc_crm_call_refresh_and_outcome_families(observed: World) -> None:
    await observed.connect()
    await observed.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping=MAPPING), metadata=observed.auth()
    )
    lead_id = await observed.lead(email="metrics@example.com", name="Mia", company="Acme")
    before = samples((await scrape(observed)).text)

    observed.fake.expire_tokens()  # the sync's first call gets 401, the tokens are refreshed, the call sent again
    await observed.sync.SyncLead(observed.sync_request(lead_id), metadata=observed.auth("member"))
    observed.fake.fail_next(status=400)  # a refused write: the second sync fails with a 4xx outcome
    second = await observed.lead(email="refused@example.com", name="Rae")
    with pytest.raises(grpc.aio.AioRpcError):  # the error itself is other tests' business
        await observed.sync.SyncLead(observed.sync_request(second), metadata=observed.auth("member"))
    response = await scrape(observed)
    after = samples(response.text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert response.headers["content-type"].startswith("text/plain")
    assert moved("crm_hub_rpc_requests_total", method="SyncService/SyncLead", code="OK") == 1
    assert moved("crm_hub_rpc_duration_seconds_count", method="SyncService/SyncLead", code="OK") == 1
    assert moved("crm_hub_syncs_total", provider="hubspot", action="created") == 1
    assert moved("crm_hub_syncs_total", provider="hubspot", action="failed") == 1
    assert moved("crm_hub_token_refreshes_total", provider="hubspot", result="refreshed") == 1
    assert moved("crm_hub_crm_requests_total", provider="hubspot", operation="token", outcome="ok") == 1
    # The expired token's 401, then the write again with the new token; and the refused one's 400.
    writes = {
        outcome: moved("crm_hub_crm_requests_total", provider="hubspot", operation="upsert", outcome=outcome)
        for outcome in ("401", "ok", "400")
    }
    assert writes == {"401": 1, "ok": 1, "400": 1}
    assert moved("crm_hub_crm_request_duration_seconds_count", provider="hubspot", operation="upsert") == 3
    # No team id and no email is a label value: aggregated families only.
    assert observed.team not in response.text
    assert "example.com" not in response.text


async def test_the_database_figures_show_pending_and_failed_leads_and_the_budget(observed: World) -> None:
    await observed.connect()
    await observed.fields.SaveMapping(
        fields_pb2.SaveMappingRequest(kind="hubspot", mapping=MAPPING), metadata=observed.auth()
    )
    lead_id = await observed.lead(email="fleet@example.com", name="Flo")
    figures = FleetGauges(observed.application.database, observed.application.plugins)
    await figures.refresh()
    before = samples((await scrape(observed)).text)
    observed.fake.fail_next(status=400)
    with pytest.raises(grpc.aio.AioRpcError):
        await observed.sync.SyncLead(observed.sync_request(lead_id), metadata=observed.auth("member"))
    await figures.refresh()
    after = samples((await scrape(observed)).text)

    # The database is shared with other tests: this test's failed lead is one more than before.
    assert value(after, "crm_hub_leads", provider="hubspot", status="failed") == (
        value(before, "crm_hub_leads", provider="hubspot", status="failed") + 1
    )
    (limit,) = observed.application.plugins.providers().get("hubspot").rate_limits()
    # The most spent account's share left: below 1 now that this account's schedule moved on by the sync's calls.
    assert 0 <= value(after, "crm_hub_rate_budget_remaining_ratio", provider="hubspot", limit=limit.name) < 1
    assert ("crm_hub_sync_jobs", frozenset({("state", "queued")})) in after
    assert value(after, "crm_hub_sync_jobs_oldest_queued_age_seconds") >= 0


async def test_readyz_livez_and_an_unknown_path(observed: World) -> None:
    ready, alive, unknown = [await scrape(observed, path) for path in ("/readyz", "/livez", "/nothing")]
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert (alive.status_code, alive.text) == (200, "alive\n")
    assert unknown.status_code == 404


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_server_whose_database_goes_away_reports_not_serving_and_not_ready_until_it_is_back(
    database_url: str, tmp_path: Path
) -> None:
    url = httpx.URL(database_url.replace("postgresql+psycopg://", "postgresql://"))
    fake = FakeHubSpot()
    async with relaying(url.host, url.port or 5432) as relay:
        through_relay = database_url.replace(f"{url.host}:{url.port or 5432}", f"127.0.0.1:{relay.port}", 1)
        async with running(
            fake.provider(timeout=5.0),
            fake,
            through_relay,
            tmp_path,
            metrics_address="127.0.0.1:0",
            health_check_seconds=0.1,
        ) as world:
            health = health_pb2_grpc.HealthStub(world.channel)

            async def statuses() -> tuple[int, int, int]:
                overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
                sync = await health.Check(health_pb2.HealthCheckRequest(service="crm_hub.v1.SyncService"))
                return overall.status, sync.status, (await scrape(world, "/readyz")).status_code

            serving = health_pb2.HealthCheckResponse.SERVING
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert await statuses() == (serving, serving, 200)
            relay.cut()
            assert await eventually(statuses, (not_serving, not_serving, 503))
            assert (await scrape(world, "/readyz")).text == "not ready: database unreachable\n"
            relay.mend()
            assert await eventually(statuses, (serving, serving, 200))


async def eventually(read: Callable[[], Awaitable[object]], expected: object, seconds: float = 10.0) -> bool:
    """Whether ``await read()`` gives ``expected`` within ``seconds``."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if await read() == expected:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_metrics_address_in_use_stops_the_start_with_an_error_naming_the_variable(
    database_url: str, tmp_path: Path
) -> None:
    fake = FakeHubSpot()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ConfigurationError, match=f"CRM_HUB_METRICS_ADDRESS {address} cannot be served"):
            async with running(fake.provider(timeout=5.0), fake, database_url, tmp_path, metrics_address=address):
                pass
