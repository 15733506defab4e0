"""What a SyncLead answers when the CRM misbehaves: one row per fault and provider, over real sockets.

Each row runs a real SyncLead over gRPC against crm_hub serving the real provider plugin, which talks HTTP over
127.0.0.1 to the plugin's fake CRM (uvicorn) through ``DroppingProxy`` (so a connection can also just die). The
fault is injected, the sync runs, and three things are compared with what the README promises:

- the answer the client gets: OK with the action, or the gRPC status and the ErrorInfo reason;
- the contacts the CRM has with the lead's email once every request it received is finished (no duplicate,
  nothing lost — a request held past the provider's timeout lands late, and is waited for);
- the lead's newest timeline entry: its action and error reason.

Retries do not sleep (``RetryPolicy(sleep=...)`` records the waits instead); only the rows with a slow answer take
real time, the provider's timeout and a bit. A new fault is one more row in ``ROWS``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from crm_hub_hubspot.fake import FakeHubSpot
from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce

from crm_hub.testing import follow_consent
from crm_hub.testing.fakes import serving
from crm_hub.v1 import fields_pb2, integrations_pb2, leads_pb2
from tests.adversarial.proxy import DroppingProxy, serving_proxy
from tests.e2e.conftest import SALESFORCE_REDIRECT, World, running
from tests.support.grpc_errors import details_of

#: Every HTTP call of the provider must finish within this (httpx's timeout), so a fake holding a request for
#: SLOW_ANSWER_SECONDS is "a slow answer past the provider timeout".
PROVIDER_TIMEOUT_SECONDS = 1.0
SLOW_ANSWER_SECONDS = 1.6
#: The most tries the default RetryPolicy makes (README: "at most 5 tries").
MAX_TRIES = 5
RETRY_AFTER_SECONDS = 2.0

MAPPINGS = {
    "hubspot": {"email": "email", "name": "firstname"},
    "salesforce": {"email": "Email", "name": "LastName"},
}

# The endpoints each sync path uses.
HUBSPOT_TOKEN = "/oauth/v1/token"
HUBSPOT_FIELDS = "/crm/v3/properties/contacts"
HUBSPOT_UPSERT = "/crm/v3/objects/contacts/batch/upsert"  # policy update: one call
HUBSPOT_READ = "/crm/v3/objects/contacts/batch/read"  # policy skip: the lookup by email ...
HUBSPOT_CREATE = "/crm/v3/objects/contacts/batch/create"  # ... then the create
SALESFORCE_TOKEN = "/services/oauth2/token"
SALESFORCE_FIELDS = "/services/data/v58.0/sobjects/Contact/describe"
SALESFORCE_QUERY = "/services/data/v58.0/query"  # the lookup by email
SALESFORCE_WRITE = "/services/data/v58.0/composite/sobjects"  # POST creates, PATCH updates


@dataclass
class FaultyWorld:
    """crm_hub, its provider and the fake CRM behind a DroppingProxy, all on real sockets."""

    world: World
    proxy: DroppingProxy

    @property
    def fake(self) -> Any:
        return self.world.fake

    def contacts_with_email(self, email: str) -> int:
        if self.world.kind == "hubspot":
            return sum(1 for c in self.fake.contacts.values() if not c.archived and c.email == email)
        return len(self.fake.contacts_with_email(email))

    def seed_contact(self, email: str) -> None:
        if self.world.kind == "hubspot":
            self.fake.add_contact({"email": email, "firstname": "Existing"})
        else:
            self.fake.add_contact({"Email": email, "LastName": "Existing"})

    def expire_access_tokens(self) -> None:
        """The CRM ends every access token now: the next API call is a 401 and crm_hub must refresh."""
        if self.world.kind == "hubspot":
            self.fake.expire_tokens()
        else:
            self.fake.expire_sessions()

    def faults_left(self) -> list[str]:
        """Injected faults no request ran into: a row whose fault was never felt proves nothing."""
        return [repr(fault) for fault in self.fake.faults.pending] + self.proxy.drops_pending()

    async def all_requests_finished(self, within: float = 10.0) -> None:
        """Until the fake has answered every request it received (a held one lands late)."""
        deadline = time.monotonic() + within
        while any(call.status is None for call in self.fake.calls):
            assert time.monotonic() < deadline, "the fake is still holding a request"
            await asyncio.sleep(0.05)


@asynccontextmanager
async def faulty_world(kind: str, database_url: str, data_dir: Path) -> AsyncIterator[FaultyWorld]:
    """A team connected (OAuth over HTTP, as a user) to ``kind`` with a saved mapping and a cold field cache."""
    fake: Any = FakeHubSpot() if kind == "hubspot" else FakeSalesforce(redirect_uri=SALESFORCE_REDIRECT)
    async with serving(fake) as fake_url, serving_proxy(fake_url) as (proxy, url):
        if kind == "hubspot":
            provider: Any = fake.provider(base_url=url, timeout=PROVIDER_TIMEOUT_SECONDS)
        else:
            fake.served_at(url)  # the org's instance_url is the proxy: API calls must be addressed there
            settings = SalesforceSettings(
                client_id=fake.client_id,
                client_secret=fake.client_secret,
                redirect_url=SALESFORCE_REDIRECT,
                login_url=url,
            )
            provider = SalesforceProvider(settings=settings, timeout=PROVIDER_TIMEOUT_SECONDS)
        async with running(provider, fake, database_url, data_dir) as world:
            auth = world.auth("admin")
            start = await world.integrations.StartOAuth(integrations_pb2.StartOAuthRequest(kind=kind), metadata=auth)
            redirect = await follow_consent(start.auth_url)
            await world.integrations.CompleteOAuth(
                integrations_pb2.CompleteOAuthRequest(kind=kind, code=redirect["code"], state=redirect["state"]),
                metadata=auth,
            )
            await world.fields.SaveMapping(
                fields_pb2.SaveMappingRequest(kind=kind, mapping=MAPPINGS[kind]), metadata=auth
            )
            # The sync path lists the fields itself (as after the 5-minute cache), so a fault there is felt.
            world.application.fields.forget(world.team, kind)
            yield FaultyWorld(world, proxy)


Fault = Callable[[FaultyWorld], None]


@dataclass(frozen=True)
class Outcome:
    """What a user of crm_hub sees of one sync."""

    #: ("OK", action) or (gRPC status name, ErrorInfo reason).
    answer: tuple[str, str]
    #: Contacts with the lead's email in the CRM afterwards.
    contacts: int
    #: The lead's newest timeline entry: (action, error reason, "" on success).
    timeline: tuple[str, str]
    #: Seconds the retries waited, when the row says (Retry-After must be honoured).
    waits: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    fault: Fault
    expected: Outcome
    policy: str = "update"
    #: A contact with the lead's email is in the CRM before the sync.
    existing: bool = False
    #: Compare the retries' waits too.
    check_waits: bool = False


def fail(path: str, status: int, n: int = 1, retry_after: float | None = None) -> Fault:
    return lambda w: w.fake.fail_next(n, status=status, path=path, retry_after=retry_after)


def slow(path: str) -> Fault:
    return lambda w: w.fake.timeout_next(delay=SLOW_ANSWER_SECONDS, path=path)


def lose_answer(path: str) -> Fault:
    return lambda w: w.fake.lose_answer_next(status=502, path=path)


def drop_connection(method: str, path: str, *, applied: bool) -> Fault:
    return lambda w: w.proxy.drop_next(method, path, applied=applied)


def fail_refresh(status: int) -> Fault:
    def fault(w: FaultyWorld) -> None:
        w.expire_access_tokens()
        w.fake.fail_next(status=status, path=HUBSPOT_TOKEN if w.world.kind == "hubspot" else SALESFORCE_TOKEN)

    return fault


def synced(action: str, *, waits: tuple[float, ...] | None = None) -> Outcome:
    return Outcome(("OK", action), 1, (action, ""), waits)


def refused(code: str, reason: str, *, contacts: int) -> Outcome:
    return Outcome((code, reason), contacts, ("failed", reason))


BURST = MAX_TRIES - 2  # a burst the retries outlast
RETRY_AFTERS = (RETRY_AFTER_SECONDS,) * BURST

ROWS = [
    # -- HubSpot ----------------------------------------------------------------------------------------
    Row(
        "hubspot-429-burst-is-waited-out-honouring-retry-after",
        "hubspot",
        fail(HUBSPOT_UPSERT, 429, BURST, RETRY_AFTER_SECONDS),
        synced("created", waits=RETRY_AFTERS),
        check_waits=True,
    ),
    Row(
        "hubspot-429-burst-longer-than-the-retries-is-rate-limited-and-writes-nothing",
        "hubspot",
        fail(HUBSPOT_UPSERT, 429, MAX_TRIES, RETRY_AFTER_SECONDS),
        refused("RESOURCE_EXHAUSTED", "RATE_LIMITED", contacts=0),
    ),
    Row("hubspot-500-on-the-field-list-is-retried", "hubspot", fail(HUBSPOT_FIELDS, 500), synced("created")),
    Row("hubspot-503-on-the-upsert-is-retried", "hubspot", fail(HUBSPOT_UPSERT, 503), synced("created")),
    Row("hubspot-500-on-the-lookup-is-retried", "hubspot", fail(HUBSPOT_READ, 500), synced("created"), policy="skip"),
    Row(
        "hubspot-500-on-the-create-is-checked-then-retried-once",
        "hubspot",
        fail(HUBSPOT_CREATE, 500),
        synced("created"),
        policy="skip",
    ),
    Row(
        "hubspot-500-on-the-token-endpoint-during-a-refresh-is-retried",
        "hubspot",
        fail_refresh(500),
        synced("created"),
    ),
    Row(
        "hubspot-slow-upsert-past-the-timeout-is-retried-and-lands-once",
        "hubspot",
        slow(HUBSPOT_UPSERT),
        synced("created"),
    ),
    # HubSpot refuses a second contact with one email, so after a timed-out create one more create is safe: the
    # late one is refused (409), whichever lands first.
    Row(
        "hubspot-slow-create-past-the-timeout-leaves-one-contact",
        "hubspot",
        slow(HUBSPOT_CREATE),
        synced("created"),
        policy="skip",
    ),
    # The upsert did create the contact; its answer is lost, so the retried upsert finds it ("not new"). The
    # contact's createdAt is after the sync began writing: crm_hub knows this sync created it, and says so.
    Row(
        "hubspot-lost-upsert-answer-is-retried-idempotently",
        "hubspot",
        lose_answer(HUBSPOT_UPSERT),
        synced("created"),
    ),
    Row(
        "hubspot-lost-create-answer-is-found-by-email-not-made-twice",
        "hubspot",
        lose_answer(HUBSPOT_CREATE),
        synced("created"),
        policy="skip",
    ),
    Row(
        "hubspot-dropped-connection-after-the-upsert-applied-is-retried-idempotently",
        "hubspot",
        drop_connection("POST", HUBSPOT_UPSERT, applied=True),
        synced("created"),
    ),
    Row(
        "hubspot-dropped-connection-after-the-create-applied-is-found-by-email",
        "hubspot",
        drop_connection("POST", HUBSPOT_CREATE, applied=True),
        synced("created"),
        policy="skip",
    ),
    Row(
        "hubspot-dropped-connection-before-the-lookup-is-retried",
        "hubspot",
        drop_connection("POST", HUBSPOT_READ, applied=False),
        synced("created"),
        policy="skip",
    ),
    # -- Salesforce -------------------------------------------------------------------------------------
    Row(
        "salesforce-429-burst-is-waited-out-honouring-retry-after",
        "salesforce",
        fail(SALESFORCE_WRITE, 429, BURST, RETRY_AFTER_SECONDS),
        synced("created", waits=RETRY_AFTERS),
        check_waits=True,
    ),
    Row(
        "salesforce-429-burst-longer-than-the-retries-is-rate-limited-and-writes-nothing",
        "salesforce",
        fail(SALESFORCE_WRITE, 429, MAX_TRIES, RETRY_AFTER_SECONDS),
        refused("RESOURCE_EXHAUSTED", "RATE_LIMITED", contacts=0),
    ),
    Row("salesforce-500-on-the-describe-is-retried", "salesforce", fail(SALESFORCE_FIELDS, 500), synced("created")),
    Row("salesforce-500-on-the-lookup-is-retried", "salesforce", fail(SALESFORCE_QUERY, 500), synced("created")),
    Row(
        "salesforce-500-on-the-create-is-checked-then-retried-once",
        "salesforce",
        fail(SALESFORCE_WRITE, 500),
        synced("created"),
    ),
    Row(
        "salesforce-503-on-the-update-is-retried",
        "salesforce",
        fail(SALESFORCE_WRITE, 503),
        synced("updated"),
        existing=True,
    ),
    # Salesforce may rotate refresh tokens: a refresh that failed after reaching it may have spent the token, and
    # sending it again would end the chain. So it is not resent; the sync is UNAVAILABLE and writes nothing (the
    # next sync refreshes again: tests/e2e/test_salesforce_flow.py).
    Row(
        "salesforce-500-on-the-token-endpoint-during-a-refresh-is-not-resent-with-a-spent-token",
        "salesforce",
        fail_refresh(500),
        refused("UNAVAILABLE", "PROVIDER_UNAVAILABLE", contacts=0),
    ),
    # Salesforce takes duplicate emails, and a create that timed out may still land: neither a lookup now nor
    # one more create can be trusted. The honest answer is "outcome unknown" — and the late create is the one
    # contact, never two.
    Row(
        "salesforce-slow-create-past-the-timeout-is-outcome-unknown-never-a-duplicate",
        "salesforce",
        slow(SALESFORCE_WRITE),
        refused("UNAVAILABLE", "WRITE_OUTCOME_UNKNOWN", contacts=1),
    ),
    Row(
        "salesforce-lost-create-answer-is-found-by-email-not-made-twice",
        "salesforce",
        lose_answer(SALESFORCE_WRITE),
        synced("created"),
    ),
    Row(
        "salesforce-dropped-connection-after-the-create-applied-is-found-by-email",
        "salesforce",
        drop_connection("POST", SALESFORCE_WRITE, applied=True),
        synced("created"),
    ),
    Row(
        "salesforce-dropped-connection-before-the-lookup-is-retried",
        "salesforce",
        drop_connection("GET", SALESFORCE_QUERY, applied=False),
        synced("created"),
    ),
]


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id) for row in ROWS])
async def test_a_sync_under_a_crm_fault_answers_and_leaves_the_crm_as_promised(
    row: Row, database_url: str, tmp_path: Path
) -> None:
    email = f"{row.id[:40]}@example.com"
    async with faulty_world(row.kind, database_url, tmp_path) as faulty:
        world = faulty.world
        if row.existing:
            faulty.seed_contact(email)
        lead_id = await world.lead(email=email, name="Fault")
        row.fault(faulty)
        try:
            reply = await world.sync.SyncLead(world.sync_request(lead_id, row.policy), metadata=world.auth("member"))
            answer = ("OK", reply.action)
        except grpc.aio.AioRpcError as error:
            details = details_of(error)
            answer = (details.code.name, details.reason)
        await faulty.all_requests_finished()
        assert not faulty.faults_left(), f"the sync never ran into the injected fault: {faulty.faults_left()}"
        timeline = await world.leads.ListTimelineEvents(
            leads_pb2.ListTimelineEventsRequest(lead_id=lead_id), metadata=world.auth("member")
        )
        newest = timeline.events[0]
        observed = Outcome(
            answer=answer,
            contacts=faulty.contacts_with_email(email),
            timeline=(newest.action, newest.error_reason),
            waits=tuple(world.waits) if row.check_waits else None,
        )
    assert observed == row.expected, f"\n observed: {observed}\n expected: {row.expected}"
