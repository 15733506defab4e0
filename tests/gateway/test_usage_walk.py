"""The spec's six usage steps, word for word, through the real Envoy of `crm-hub up --sandbox` — for HubSpot and
Salesforce, on SQLite and PostgreSQL — exactly as the README's curl walk does them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crm_hub.rpc.auth import mint_token
from tests.support.app import JWT_SECRET, VAULT_KEY

MAPPINGS = {
    "hubspot": {"email": "email", "name": "firstname", "company": "company", "phone": "phone"},
    "salesforce": {"email": "Email", "name": "LastName", "phone": "Phone"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Sandbox:
    url: str
    metrics_url: str


@pytest.fixture
def sandbox(database_url: str, tmp_path: Path, envoy_binary: Path) -> Iterator[Sandbox]:
    """`crm-hub up --sandbox` running as a user would start it: its gateway and its operations address."""
    http_port, metrics_port = free_port(), free_port()
    environment = {
        **os.environ,
        "CRM_HUB_HTTP_ADDRESS": f"127.0.0.1:{http_port}",
        "CRM_HUB_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "CRM_HUB_GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "CRM_HUB_DATA_DIR": str(tmp_path),
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "SECRET_VAULT_KEY": VAULT_KEY,
        "CRM_HUB_PLUGINS": "crm-hub-hubspot,crm-hub-salesforce",
    }
    log = (tmp_path / "up.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "crm_hub", "up", "--sandbox"], env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/integrations/status", timeout=1).status_code == 401:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"crm-hub up --sandbox did not come up:\n{(tmp_path / 'up.log').read_text()[-3000:]}")
            time.sleep(0.1)
        yield Sandbox(url=base, metrics_url=f"http://127.0.0.1:{metrics_port}")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, (tmp_path / "up.log").read_text()[-3000:]
        log.close()


@pytest.mark.parametrize("kind", ["hubspot", "salesforce"])
def test_the_six_usage_steps_of_the_spec_work_as_documented(sandbox: Sandbox, kind: str) -> None:
    token = mint_token(JWT_SECRET, team_id=f"walk-{kind}-{time.time_ns()}", role="admin")
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=sandbox.url, headers=auth, timeout=10) as api:
        # 1. Start the OAuth flow.
        started = api.get(f"/integrations/{kind}/start")
        assert started.status_code == 200
        assert {"authUrl", "state"} <= started.json().keys()
        auth_url, state = started.json()["authUrl"], started.json()["state"]

        # The user consents at the (fake) CRM, which redirects back with a code.
        consent = httpx.get(auth_url, follow_redirects=False, timeout=10)
        assert consent.status_code == 302
        redirect = parse_qs(urlsplit(consent.headers["location"]).query)
        assert redirect["state"] == [state]

        # 2. Handle the OAuth callback.
        callback = api.post(f"/integrations/{kind}/callback", json={"code": redirect["code"][0], "state": state})
        assert callback.status_code == 200
        assert callback.json()["success"] is True
        assert callback.json()["message"]

        # 3. Get the available fields.
        fields = api.get(f"/integrations/{kind}/fields")
        assert fields.status_code == 200
        assert fields.json()["success"] is True
        for field in fields.json()["fields"]:
            assert {"name", "label", "type", "required", "description"} <= field.keys()

        # 4. Configure the field mapping.
        mapping = api.post(f"/integrations/{kind}/mapping", json={"mapping": MAPPINGS[kind]})
        assert mapping.status_code == 200
        assert mapping.json()["success"] is True

        lead = api.post(
            "/leads",
            json={
                "fields": {
                    "email": f"john.{kind}@example.com",
                    "name": "John",
                    "company": "Acme Corp",
                    "phone": "+1 555 0100",
                }
            },
        )
        assert lead.status_code == 200
        lead_id = lead.json()["lead"]["id"]

        # 5. Sync the lead, dry run.
        preview = api.post(
            f"/crm/sync/lead/{lead_id}?dryRun=true", json={"provider": kind, "duplicatePolicy": "update"}
        )
        assert preview.status_code == 200
        assert {"success", "contactId", "action", "message", "payload"} <= preview.json().keys()
        assert (preview.json()["success"], preview.json()["action"]) == (True, "would_create")
        assert preview.json()["payload"][MAPPINGS[kind]["email"]] == f"john.{kind}@example.com"

        # 6. Execute the sync.
        result = api.post(f"/crm/sync/lead/{lead_id}", json={"provider": kind, "duplicatePolicy": "update"})
        assert result.status_code == 200
        assert (result.json()["success"], result.json()["action"]) == (True, "created")
        assert result.json()["contactId"]
        assert result.json()["message"] == "Contact created successfully."

        # And the status the spec shows.
        status = api.get("/integrations/status")
        assert status.status_code == 200
        integration = status.json()["integrations"][kind]
        assert integration["connected"] is True
        assert integration["lastSync"].endswith("Z")
        assert "error" not in integration
        assert status.json()["integrations"]["hubspot" if kind == "salesforce" else "salesforce"]["connected"] is False

        # More leads, synced by a background job: every lead not yet synced to this provider.
        more = [f"lead{n}.{kind}@example.com" for n in (1, 2, 3)]
        for n, email in enumerate(more, start=1):
            assert api.post("/leads", json={"fields": {"email": email, "name": f"Lead {n}"}}).status_code == 200
        started_job = api.post("/crm/sync/leads", json={"provider": kind, "selection": "unsynced"})
        assert started_job.status_code == 200
        job = started_job.json()["job"]
        assert (job["state"], job["total"]) == ("queued", 3)

        with api.stream("GET", f"/crm/sync/jobs/{job['id']}/watch", timeout=30) as watched:
            assert watched.status_code == 200
            seen = [json.loads(line) for line in watched.iter_lines() if line.strip()]
        assert seen[-1]["final"] is True
        assert seen[-1]["job"]["state"] == "succeeded"
        assert seen[-1]["job"]["counts"]["created"] == 3

        results = api.get(f"/crm/sync/jobs/{job['id']}/results")
        assert results.status_code == 200
        assert sorted(r["outcome"] for r in results.json()["results"]) == ["created"] * 3
        assert all(r["contactId"] for r in results.json()["results"])

        # Automatic sync: new and changed leads go to the CRM by themselves, seconds later.
        turned_on = api.patch(f"/integrations/{kind}/settings", json={"autoSync": True})
        assert turned_on.status_code == 200, turned_on.text
        assert turned_on.json()["settings"]["autoSync"] is True
        auto = api.post("/leads", json={"fields": {"email": f"auto.{kind}@example.com", "name": "Auto"}})
        auto_id = auto.json()["lead"]["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            states = api.get(f"/leads/{auto_id}").json().get("syncStates", [])
            if [state["status"] for state in states] == ["synced"]:
                break
            time.sleep(0.2)
        assert [(state["provider"], state["status"]) for state in states] == [(kind, "synced")]
        changed = api.patch(f"/leads/{auto_id}", json={"fields": {"name": "Automatic"}})
        assert (changed.status_code, changed.json()["changed"]) == (200, True)

    # What an operator's curl on the metrics address shows after the walk: the families moved.
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{sandbox.metrics_url}/metrics", timeout=5).text)
        for sample in family.samples
    }
    assert scraped[("crm_hub_syncs_total", (("action", "created"), ("provider", kind)))] >= 5
    assert scraped[("crm_hub_syncs_total", (("action", "would_create"), ("provider", kind)))] >= 1
    assert scraped[("crm_hub_rpc_requests_total", (("code", "OK"), ("method", "SyncService/SyncLead")))] >= 2
    assert scraped[("crm_hub_crm_requests_total", (("operation", "token"), ("outcome", "ok"), ("provider", kind)))] >= 1
    assert httpx.get(f"{sandbox.metrics_url}/readyz", timeout=5).text == "ready\n"
