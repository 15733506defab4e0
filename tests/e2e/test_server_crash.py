"""`crm-hub serve` killed with SIGKILL while a hundred single syncs are in flight: every write that reached the CRM
ends recorded — in the lead's sync state and its timeline, with the contact the CRM really holds — once the
interrupted writes are reconciled, and no lead gets a second contact. For both providers and both databases,
with the fake CRM on a socket and the server as a real child process.

The write is held by the fake before it is applied, so the kill lands on writes in every stage: intent recorded
but not sent, sent and applied after the server died (the lost answer), and answered."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

from crm_hub.core.caller import Caller, Principal, Role
from crm_hub.service.application import Application
from crm_hub.service.config import Settings
from crm_hub.testing import follow_consent
from crm_hub.v1 import sync_pb2, sync_pb2_grpc
from tests.e2e.test_worker_crash import crm_on_a_socket, until
from tests.support.app import bearer

SYNCS = 120
#: The fake holds every write this long before applying it, so many are in flight when the server dies.
WRITE_DELAY_SECONDS = 0.5
#: Kill the server once this many writes have reached the CRM.
KILL_AFTER_WRITES = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`crm-hub serve` as a child process, its output in ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "crm_hub", "serve"], env=environment, stdout=output, stderr=subprocess.STDOUT
        )


@pytest.mark.parametrize("kind", ["hubspot", "salesforce"])
async def test_a_server_killed_mid_sync_leaves_every_crm_write_recorded_once_reconciled(
    database_url: str, tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with crm_on_a_socket(kind) as crm:
        for name, value in crm.env.items():
            monkeypatch.setenv(name, value)
        address = f"127.0.0.1:{free_port()}"
        environment = crm.child_environment(database_url, tmp_path, CRM_HUB_GRPC_ADDRESS=address)
        application = Application.from_settings(Settings.from_env(environment))
        log = tmp_path / "server.log"
        team = f"team-{uuid.uuid4().hex[:10]}"
        caller = Caller(Principal(subject="ops", team_id=team, role=Role.ADMIN), request_id="crash-test")
        try:
            started = await application.connections.start_oauth(caller, kind)
            redirect = await follow_consent(started.auth_url)
            await application.connections.complete_oauth(caller, kind, code=redirect["code"], state=redirect["state"])
            await application.fields.save_mapping(caller, kind, crm.mapping)
            emails = {f"kill{n}@example.com": "" for n in range(SYNCS)}
            for email in emails:
                emails[email] = (await application.leads.create(caller, {"email": email, "name": "Kill"}))[0].id
            crm.fake.timeout_next(10_000, delay=WRITE_DELAY_SECONDS, path=crm.writes)

            server = start_server(environment, log)
            try:
                async with grpc.aio.insecure_channel(address) as channel:
                    await asyncio.wait_for(channel.channel_ready(), timeout=30)
                    stub = sync_pb2_grpc.SyncServiceStub(channel)
                    options = sync_pb2.SyncOptions(provider=kind, duplicate_policy="update")
                    calls = [
                        asyncio.ensure_future(
                            stub.SyncLead(
                                sync_pb2.SyncLeadRequest(lead_id=lead_id, options=options),
                                metadata=bearer(team, "member"),
                                timeout=60,
                            )
                        )
                        for lead_id in emails.values()
                    ]

                    async def enough_writes_arrived() -> bool:
                        return bool(crm.fake.count(crm.writes) >= KILL_AFTER_WRITES)

                    await until(enough_writes_arrived, within=60, what="writes reaching the CRM", log=log)
                    server.send_signal(signal.SIGKILL)
                    server.wait()
                    answers = await asyncio.gather(*calls, return_exceptions=True)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
            answered = sum(1 for answer in answers if not isinstance(answer, BaseException))
            assert answered < SYNCS, "the server died with syncs in flight"
            await asyncio.sleep(WRITE_DELAY_SECONDS + 0.5)  # the writes held by the CRM land now, unanswered

            # What a restarted server or any worker does every minute, here without waiting out the stale age.
            reconciled = await application.sync.reconcile_interrupted(older_than_seconds=0)
            assert crm.fake.count(crm.writes) > answered, "some writes reached the CRM but their answers were lost"
            assert reconciled > 0, "writes in flight were left open, to be reconciled"

            in_crm = crm.contact_ids_per_email()
            assert all(len(in_crm.get(email, [])) <= 1 for email in emails), "no lead got a second contact"
            recorded = 0
            for email, lead_id in emails.items():
                _, states = await application.leads.get(caller, lead_id)
                timeline = (await application.leads.timeline(caller, lead_id, page_size=50)).events
                written = [event for event in timeline if event.action in ("created", "updated")]
                contact_ids = in_crm.get(email, [])
                if contact_ids:
                    recorded += 1
                    (state,) = states
                    assert (state.status, state.contact_id) == ("synced", contact_ids[0]), email
                    assert len(written) == 1, f"{email}: one timeline entry for its one write, not {timeline}"
                    assert written[0].contact_id == contact_ids[0]
                else:
                    assert written == [], f"{email}: recorded as written, but the CRM has no contact"
                    assert all(state.status != "synced" for state in states)
            assert recorded >= KILL_AFTER_WRITES
        finally:
            await application.aclose()
