"""``crm-hub serve`` as a real process: it comes up SERVING, and on SIGTERM tells watchers, drains and exits 0.

These run the installed command in a subprocess, because signals, exit codes and "refuses to start" are
properties of the process, not of any object in it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from crm_hub.rpc.auth import mint_token
from crm_hub.v1 import status_pb2, status_pb2_grpc

JWT_SECRET = "shutdown-test-jwt-secret-32-bytes-long"
VAULT_KEY = "shutdown-test-vault-key-0123456789"
STARTUP_DEADLINE_SECONDS = 20.0
EXIT_DEADLINE_SECONDS = 8.0
_OUR_VARIABLES = ("CRM_HUB_", "DATABASE_URL", "JWT_", "SECRET_VAULT_", "SLACK_WEBHOOK_URL")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(_OUR_VARIABLES)}
    env.update(
        CRM_HUB_DATA_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'crm_hub.db'}",
        JWT_SECRET=JWT_SECRET,
        SECRET_VAULT_KEY=VAULT_KEY,
        CRM_HUB_PLUGINS="",  # whatever else is installed here, serve only what crm_hub itself ships
        CRM_HUB_LOG_FORMAT="json",
        CRM_HUB_LOG_LEVEL="INFO",
    )
    env.update(overrides)
    return env


def _crm_hub(*args: str) -> list[str]:
    """This interpreter running crm_hub: fixed, trusted arguments (hence the S603 waivers below)."""
    return [sys.executable, "-m", "crm_hub", *args]


def _log_messages(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """A migrated SQLite database and ``crm-hub serve`` on a free port; yields (process, port, stderr file)."""
    port = _free_port()
    env = _environment(tmp_path, CRM_HUB_GRPC_ADDRESS=f"127.0.0.1:{port}")
    subprocess.run(_crm_hub("migrate"), env=env, check=True, capture_output=True, timeout=60)  # noqa: S603
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(_crm_hub("serve"), env=env, stdout=subprocess.DEVNULL, stderr=stderr)  # noqa: S603
    try:
        yield process, port, stderr_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _wait_until_serving(process: subprocess.Popen[bytes], channel: grpc.Channel, stderr_path: Path) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"serve exited with {process.returncode} before serving:\n{stderr_path.read_text()}")
        try:
            answer = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            time.sleep(0.05)
            continue
        if answer.status == health_pb2.HealthCheckResponse.SERVING:
            return
    pytest.fail(f"serve did not report SERVING within {STARTUP_DEADLINE_SECONDS}s:\n{stderr_path.read_text()}")


def test_sigterm_tells_health_watchers_then_exits_0_and_logs_stopped(
    server: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    process, port, stderr_path = server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        _wait_until_serving(process, channel, stderr_path)
        token = mint_token(JWT_SECRET, team_id="shutdown-team", role="member")
        status = status_pb2_grpc.StatusServiceStub(channel).GetStatus(
            status_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=5
        )
        # A load balancer's health watch: an open stream, in flight when the signal arrives.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=15)
        before = next(watch).status

        process.send_signal(signal.SIGTERM)
        during = next(watch).status
        watch.cancel()  # the balancer has what it needs; let the drain finish
        exit_code = process.wait(timeout=EXIT_DEADLINE_SECONDS)

    messages = [entry["message"] for entry in _log_messages(stderr_path.read_text())]
    assert status.success is True
    assert before == health_pb2.HealthCheckResponse.SERVING
    assert during == health_pb2.HealthCheckResponse.NOT_SERVING
    assert exit_code == 0
    assert messages.index("serving") < messages.index("shutting down") < messages.index("stopped")
    assert messages[-1] == "stopped"


def test_serve_logs_the_address_it_listens_on(server: tuple[subprocess.Popen[bytes], int, Path]) -> None:
    process, port, stderr_path = server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        _wait_until_serving(process, channel, stderr_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=EXIT_DEADLINE_SECONDS) == 0

    (serving,) = [entry for entry in _log_messages(stderr_path.read_text()) if entry["message"] == "serving"]
    assert serving["address"] == f"127.0.0.1:{port}"
    assert JWT_SECRET not in stderr_path.read_text()
    assert VAULT_KEY not in stderr_path.read_text()


def test_production_without_vault_key_refuses_to_start(tmp_path: Path) -> None:
    port = _free_port()
    env = _environment(tmp_path, CRM_HUB_ENV="production", CRM_HUB_GRPC_ADDRESS=f"127.0.0.1:{port}")
    del env["SECRET_VAULT_KEY"]

    result = subprocess.run(_crm_hub("serve"), env=env, capture_output=True, text=True, timeout=60)  # noqa: S603

    assert result.returncode == 2
    assert "crm-hub: configuration error: SECRET_VAULT_KEY is required when CRM_HUB_ENV=production" in result.stderr
    assert "serving" not in [entry["message"] for entry in _log_messages(result.stderr)]
    assert not (tmp_path / "var" / "vault.key").exists(), "production must never fall back to a generated key"


def test_with_a_drain_time_a_replica_reports_not_serving_but_keeps_answering_until_it_ends(tmp_path: Path) -> None:
    port = _free_port()
    env = _environment(tmp_path, CRM_HUB_GRPC_ADDRESS=f"127.0.0.1:{port}", CRM_HUB_DRAIN_SECONDS="2")
    subprocess.run(_crm_hub("migrate"), env=env, check=True, capture_output=True, timeout=60)  # noqa: S603
    stderr_path = tmp_path / "serve.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(_crm_hub("serve"), env=env, stdout=subprocess.DEVNULL, stderr=stderr)  # noqa: S603
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _wait_until_serving(process, channel, stderr_path)
            token = mint_token(JWT_SECRET, team_id="drain-team", role="member")
            status = status_pb2_grpc.StatusServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)

            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status == (
                health_pb2.HealthCheckResponse.SERVING
            ):
                assert time.monotonic() < deadline, "health never turned NOT_SERVING"
                time.sleep(0.02)
            # The balancer now routes elsewhere; a call that still arrives here is answered, not refused.
            answer = status.GetStatus(
                status_pb2.GetStatusRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=5
            )
            assert answer.success is True
            assert process.poll() is None, "still up while it drains"
            exit_code = process.wait(timeout=EXIT_DEADLINE_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    messages = [entry["message"] for entry in _log_messages(stderr_path.read_text())]
    assert exit_code == 0
    assert messages.index("shutting down") < messages.index("draining") < messages.index("stopped")
