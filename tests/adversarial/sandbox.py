"""`crm-hub up --sandbox` as a child process, with one team connected to both bundled fake CRMs.

The schema fuzzer needs a service it can hammer from a synchronous test (schemathesis sends its requests with
``requests``), so the service runs in its own process: exactly what `make sandbox` starts — ``run_up``, the gRPC
server and the real Envoy, every installed provider pointed at its fake CRM on a loopback port. The team is then
connected the way a user does it (start, consent at the fake, callback), given a mapping and a few leads, so
fuzzed requests for ``hubspot`` and ``salesforce`` get past "not connected" into fields, mapping and sync.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from crm_hub.rpc.auth import mint_token
from tests.support.app import JWT_SECRET, VAULT_KEY

#: The providers the sandbox serves, and a mapping each accepts (as in the README's walk).
MAPPINGS: dict[str, dict[str, str]] = {
    "hubspot": {"email": "email", "name": "firstname", "company": "company", "phone": "phone"},
    "salesforce": {"email": "Email", "name": "LastName", "phone": "Phone"},
}
#: Backends the sandbox runs on: PostgreSQL (production's) in ``make test``; ``make fuzz`` adds SQLite. Running
#: every sandbox test on both would double their time in make test for little: the fault matrix covers both.
SANDBOX_DATABASES = os.environ.get("CRM_HUB_FUZZ_DATABASES", "postgresql").split(",")
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 20.0


@dataclass(frozen=True)
class Sandbox:
    """A running `crm-hub up --sandbox`, and the team that is connected to every provider in it."""

    base_url: str
    team: str
    lead_ids: tuple[str, ...]
    log: Path

    def token(self, role: str) -> str:
        """A fresh bearer token for the connected team (``admin`` or ``member``)."""
        return mint_token(JWT_SECRET, team_id=self.team, role=role, subject=f"fuzzer-{role}")

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:]


def on_sandbox_databases() -> pytest.MarkDecorator:
    """``pytestmark`` for a module of sandbox tests: ``database_url`` only on SANDBOX_DATABASES."""
    params: list[Any] = [
        pytest.param(name, id=name, marks=[pytest.mark.postgres] if name == "postgresql" else [])
        for name in SANDBOX_DATABASES
    ]
    return pytest.mark.parametrize("database_url", params, indirect=True, scope="session")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox_process(database_url: str, data_dir: Path) -> Iterator[Sandbox]:
    """Start `crm-hub up --sandbox` on free ports over ``database_url``; connect a fresh team; stop it after.

    The process must stop cleanly (exit status 0) when the block ends: a fuzzed request that wedged a server
    shows up there too.
    """
    http_port = free_port()
    environment = {
        **os.environ,
        "CRM_HUB_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "CRM_HUB_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "CRM_HUB_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "CRM_HUB_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "SECRET_VAULT_KEY": VAULT_KEY,
        "CRM_HUB_PLUGINS": ",".join(f"crm-hub-{name}" for name in MAPPINGS),
        "CRM_HUB_LOG_LEVEL": "WARNING",
    }
    log_path = data_dir / "up.log"
    base_url = f"http://127.0.0.1:{http_port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "crm_hub", "up", "--sandbox"], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_until_serving(process, base_url, log_path)
            team = f"fuzz-{uuid.uuid4().hex[:10]}"
            sandbox = Sandbox(base_url=base_url, team=team, lead_ids=(), log=log_path)
            sandbox = Sandbox(base_url=base_url, team=team, lead_ids=_connect_team(sandbox), log=log_path)
            yield sandbox
        finally:
            process.send_signal(signal.SIGTERM)
            returncode: int | None
            try:
                returncode = process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                returncode = None
    assert returncode == 0, f"crm-hub up --sandbox did not stop cleanly:\n{log_path.read_text()[-4000:]}"


def _wait_until_serving(process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while True:
        try:
            if httpx.get(f"{base_url}/integrations/status", timeout=1, trust_env=False).status_code == 401:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"crm-hub up --sandbox did not come up:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.1)


def _connect_team(sandbox: Sandbox) -> tuple[str, ...]:
    """Connect ``sandbox.team`` to every provider as a user would, save a mapping, create a lead per provider."""
    auth = {"Authorization": f"Bearer {sandbox.token('admin')}"}
    lead_ids = []
    with httpx.Client(base_url=sandbox.base_url, headers=auth, timeout=10, trust_env=False) as api:
        for kind, mapping in MAPPINGS.items():
            started = api.get(f"/integrations/{kind}/start")
            assert started.status_code == 200, started.text
            consent = httpx.get(started.json()["authUrl"], follow_redirects=False, timeout=10, trust_env=False)
            assert consent.status_code == 302, consent.text
            code = parse_qs(urlsplit(consent.headers["location"]).query)["code"][0]
            connected = api.post(
                f"/integrations/{kind}/callback", json={"code": code, "state": started.json()["state"]}
            )
            assert connected.status_code == 200, connected.text
            saved = api.post(f"/integrations/{kind}/mapping", json={"mapping": mapping})
            assert saved.status_code == 200, saved.text
            lead = api.post(
                "/leads",
                json={"fields": {"email": f"fuzz.{kind}@example.com", "name": "Fuzz", "phone": "+1 555 0100"}},
            )
            assert lead.status_code == 200, lead.text
            lead_ids.append(lead.json()["lead"]["id"])
    return tuple(lead_ids)
