"""A `crm-hub worker` answers its readiness and liveness probes and serves its metrics on the operations address,
and stops cleanly on SIGTERM (on PostgreSQL, a real child process)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_worker_crash import crm_on_a_socket, until, worker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_worker_is_ready_while_it_runs_and_serves_its_metrics(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    ops = f"http://127.0.0.1:{port}"
    log = tmp_path / "worker.log"
    async with crm_on_a_socket("hubspot") as crm, httpx.AsyncClient(trust_env=False, timeout=2) as client:
        environment = crm.child_environment(
            database_url.replace("postgresql+psycopg://", "postgresql://"),
            tmp_path,
            CRM_HUB_METRICS_ADDRESS=f"127.0.0.1:{port}",
        )

        async def answered(path: str) -> httpx.Response | None:
            try:
                return await client.get(f"{ops}{path}")
            except httpx.TransportError:
                return None

        with worker(environment, log) as process:
            ready = await until(lambda: answered("/readyz"), within=20, what="the worker's /readyz", log=log)
            assert (ready.status_code, ready.text) == (200, "ready\n")
            alive = await answered("/livez")
            assert alive is not None
            assert alive.status_code == 200
            metrics = await answered("/metrics")
            assert metrics is not None
            assert "crm_hub_sync_jobs" in metrics.text
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert await answered("/readyz") is None  # gone with the process
