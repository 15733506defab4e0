"""The operations address on its own: readiness as it changes, on IPv4 and IPv6 loopback."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from crm_hub.observability import health
from crm_hub.observability.health import Readiness
from crm_hub.observability.ops_server import OpsServer


@pytest.mark.parametrize(("host", "url_host"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
async def test_readyz_follows_readiness_and_metrics_come_from_the_registry(host: str, url_host: str) -> None:
    readiness, registry, heard = Readiness(), CollectorRegistry(), []
    Counter("crm_hub_test_things", "Things.", registry=registry).inc(3)

    async def listener(ready: bool) -> None:
        heard.append(ready)

    readiness.on_change(listener)
    server = OpsServer(host, 0, readiness, registry)
    server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{url_host}:{server.port}", trust_env=False) as client:
            assert (await client.get("/readyz")).text == "ready\n"
            assert "crm_hub_test_things_total 3.0" in (await client.get("/metrics")).text

            await readiness.set_broken("the job worker stopped (RuntimeError)")
            broken = await client.get("/readyz")
            assert (broken.status_code, broken.text) == (503, "not ready: the job worker stopped (RuntimeError)\n")
            assert (await client.get("/livez")).status_code == 200  # alive: a restart, not a kill, is what helps
    finally:
        server.stop()
    assert heard == [False]


async def test_a_database_that_refuses_is_unreachable_until_it_answers_again() -> None:
    readiness = Readiness()

    async def fails() -> None:
        raise OSError("connection refused")

    async def answers() -> None:
        return None

    assert await readiness.check_database(fails) is False
    assert readiness.reason == "database unreachable"
    assert await readiness.check_database(answers) is True
    assert readiness.ready


async def test_a_database_ping_that_hangs_counts_as_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "DATABASE_CHECK_TIMEOUT_SECONDS", 0.05)
    readiness = Readiness()

    async def hangs() -> None:
        await asyncio.sleep(60)

    assert await readiness.check_database(hangs) is False
    assert not readiness.ready
