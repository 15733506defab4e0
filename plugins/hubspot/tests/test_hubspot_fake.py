"""The fake's own rules, checked over plain HTTP: the shapes and limits crm-apis.md documents."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hubspot_support import CLIENT_ID, CLIENT_SECRET, REDIRECT_URL, FakeClock

from crm_hub_hubspot.fake import FakeHubSpot

CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
def auth(fake: FakeHubSpot) -> dict[str, str]:
    return {"Authorization": f"Bearer {fake.grant_tokens()['access_token']}"}


async def create(hubspot: httpx.AsyncClient, auth: dict[str, str], **properties: Any) -> httpx.Response:
    return await hubspot.post(CONTACTS, json={"properties": properties}, headers=auth)


# -- objects and values ----------------------------------------------------------------------------------


async def test_contacts_are_simple_public_objects_with_string_values(
    hubspot: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create(hubspot, auth, email="Ada@Example.com", numemployees=12, newsletter_opt_in=True)

    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert body["archived"] is False
    assert body["properties"]["email"] == "ada@example.com"
    assert body["properties"]["numemployees"] == "12"
    assert body["properties"]["newsletter_opt_in"] == "true"
    assert body["properties"]["hs_object_id"] == body["id"]
    assert body["createdAt"].endswith("Z")

    by_email = await hubspot.get(f"{CONTACTS}/ada@example.com", params={"idProperty": "email"}, headers=auth)
    assert by_email.json()["id"] == body["id"]
    assert by_email.json()["properties"]["firstname"] is None  # asked-for (default) properties that are unset

    patched = await hubspot.patch(f"{CONTACTS}/{body['id']}", json={"properties": {"firstname": "Ada"}}, headers=auth)
    assert patched.status_code == 200
    assert patched.json()["properties"]["firstname"] == "Ada"


async def test_emails_are_unique_regardless_of_case(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    first = await create(hubspot, auth, email="ada@example.com")

    again = await create(hubspot, auth, email="ADA@example.com")

    assert again.status_code == 409
    body = again.json()
    assert body["status"] == "error"
    assert body["message"] == f"Contact already exists. Existing ID: {first.json()['id']}"
    assert body["category"] == "CONFLICT"
    assert body["correlationId"]
    assert len(fake.contacts) == 1


async def test_a_batch_create_with_an_existing_email_reports_the_first_conflict_and_writes_nothing(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    existing = fake.add_contact({"email": "bob@example.com"})
    inputs = [{"properties": {"email": email}} for email in ("ada@example.com", "bob@example.com")]

    answer = await hubspot.post(f"{CONTACTS}/batch/create", json={"inputs": inputs}, headers=auth)

    assert answer.status_code == 409
    assert answer.json()["message"] == f"Contact already exists. Existing ID: {existing.id}"
    assert len(fake.contacts) == 1


@pytest.mark.parametrize(
    ("properties", "code", "message"),
    [
        pytest.param(
            {"favourite_colour": "red"}, "PROPERTY_DOESNT_EXIST", 'Property "favourite_colour" does not exist'
        ),
        pytest.param({"email": "x@"}, "INVALID_EMAIL", "Email address x@ is invalid"),
        pytest.param({"numemployees": "lots"}, "INVALID_INTEGER", "lots was not a valid number."),
        pytest.param({"lifecyclestage": "royalty"}, "INVALID_OPTION", "royalty was not one of the allowed options"),
        pytest.param({"newsletter_opt_in": "yes"}, "INVALID_BOOLEAN", "yes was not a valid boolean."),
        pytest.param({"date_of_birth": "10/12/1815"}, "INVALID_DATE", "10/12/1815 is not a valid date"),
        pytest.param({"date_of_birth": "1700000000001"}, "INVALID_DATE", "UTC, not midnight!"),
        pytest.param({"hs_object_id": "5"}, "READ_ONLY_VALUE", '"hs_object_id" is a read only property'),
        pytest.param({"hs_email_domain": "x.org"}, "READ_ONLY_VALUE", '"hs_email_domain" is a calculated property'),
        pytest.param({"fax_number": "123"}, "PROPERTY_DOESNT_EXIST", 'Property "fax_number" does not exist'),
    ],
)
async def test_invalid_values_get_hubspots_validation_error(
    hubspot: httpx.AsyncClient, auth: dict[str, str], properties: dict[str, str], code: str, message: str
) -> None:
    answer = await create(hubspot, auth, **properties)

    assert answer.status_code == 400
    body = answer.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: [")
    [detail] = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert detail["isValid"] is False
    assert detail["error"] == code
    assert detail["name"] == next(iter(properties))
    assert message in detail["message"]
    [error] = body["errors"]
    assert error["code"] == code
    assert error["context"] == {"propertyName": [next(iter(properties))]}


@pytest.mark.parametrize(
    ("value", "stored"),
    [("1815-12-10", "1815-12-10"), ("1700006400000", "2023-11-15"), ("", None)],
)
async def test_dates_take_iso_days_or_midnight_milliseconds(
    hubspot: httpx.AsyncClient, auth: dict[str, str], value: str, stored: str | None
) -> None:
    answer = await create(hubspot, auth, email="ada@example.com", date_of_birth=value)

    assert answer.status_code == 201
    assert answer.json()["properties"].get("date_of_birth") == stored


# -- batches ------------------------------------------------------------------------------------------------


async def test_a_batch_takes_at_most_a_hundred_inputs(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    inputs = [{"properties": {"email": f"p{i}@example.com"}} for i in range(101)]

    answer = await hubspot.post(f"{CONTACTS}/batch/create", json={"inputs": inputs}, headers=auth)

    assert answer.status_code == 400
    assert answer.json()["category"] == "VALIDATION_ERROR"
    assert "101" in answer.json()["message"]
    assert fake.contacts == {}


async def test_batch_read_by_email_reports_unknown_emails_in_a_207(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    ada = fake.add_contact({"email": "ada@example.com"})
    body = {"inputs": [{"id": "ADA@example.com"}, {"id": "nobody@example.com"}], "idProperty": "email"}

    answer = await hubspot.post(f"{CONTACTS}/batch/read", json={**body, "properties": ["email"]}, headers=auth)

    assert answer.status_code == 207
    payload = answer.json()
    assert payload["status"] == "COMPLETE"
    assert [(r["id"], r["properties"]) for r in payload["results"]] == [(ada.id, {"email": "ada@example.com"})]
    assert payload["numErrors"] == 1
    assert payload["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert payload["errors"][0]["context"] == {"ids": ["nobody@example.com"]}
    assert {"startedAt", "completedAt"} <= set(payload)


async def test_batch_upsert_says_which_records_are_new(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    fake.add_contact({"email": "ada@example.com"})
    inputs = [
        {"id": email, "idProperty": "email", "properties": {"firstname": name}}
        for email, name in (("ada@example.com", "Ada"), ("bob@example.com", "Bob"))
    ]

    answer = await hubspot.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs}, headers=auth)

    assert answer.status_code == 200
    assert [(r["properties"]["email"], r["new"]) for r in answer.json()["results"]] == [
        ("ada@example.com", False),
        ("bob@example.com", True),
    ]


async def test_batch_update_refuses_duplicate_ids(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    ada = fake.add_contact({"email": "ada@example.com"})
    inputs = [{"id": ada.id, "properties": {"firstname": name}} for name in ("A", "B")]

    answer = await hubspot.post(f"{CONTACTS}/batch/update", json={"inputs": inputs}, headers=auth)

    assert answer.status_code == 400
    assert "Duplicate IDs" in answer.json()["message"]


# -- search -------------------------------------------------------------------------------------------------


def by_email(email: str) -> dict[str, Any]:
    return {"filterGroups": [{"filters": [{"propertyName": "email", "operator": "EQ", "value": email}]}]}


async def test_new_contacts_appear_in_search_only_after_the_index_delay(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot, clock: FakeClock
) -> None:
    fake.search_index_delay = 5.0
    await create(hubspot, auth, email="ada@example.com")

    before = await hubspot.post(f"{CONTACTS}/search", json=by_email("ADA@example.com"), headers=auth)
    clock.advance(5.0)
    after = await hubspot.post(f"{CONTACTS}/search", json=by_email("ADA@example.com"), headers=auth)

    assert before.json() == {"total": 0, "results": []}
    assert after.json()["total"] == 1
    assert after.json()["results"][0]["properties"]["email"] == "ada@example.com"


async def test_search_pages_with_after(hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot) -> None:
    for i in range(3):
        fake.add_contact({"email": f"p{i}@example.com", "lifecyclestage": "lead"})
    query = {
        "filterGroups": [{"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}],
        "limit": 2,
    }

    first = (await hubspot.post(f"{CONTACTS}/search", json=query, headers=auth)).json()
    second = (await hubspot.post(f"{CONTACTS}/search", json={**query, "after": "2"}, headers=auth)).json()

    assert first["total"] == 3
    assert len(first["results"]) == 2
    assert first["paging"] == {"next": {"after": "2"}}
    assert len(second["results"]) == 1
    assert "paging" not in second


# -- auth and limits ----------------------------------------------------------------------------------------


async def test_access_tokens_expire_after_their_lifetime(
    hubspot: httpx.AsyncClient, auth: dict[str, str], clock: FakeClock
) -> None:
    assert (await hubspot.get("/crm/v3/properties/contacts", headers=auth)).status_code == 200
    clock.advance(1800 + 42)

    answer = await hubspot.get("/crm/v3/properties/contacts", headers=auth)

    assert answer.status_code == 401
    assert answer.json()["message"] == "The OAuth token used to make this call expired 42 second(s) ago."
    assert answer.json()["category"] == "EXPIRED_AUTHENTICATION"


async def test_calls_without_a_token_are_refused(hubspot: httpx.AsyncClient) -> None:
    answer = await hubspot.get("/crm/v3/properties/contacts")

    assert answer.status_code == 401
    assert answer.json()["category"] == "INVALID_AUTHENTICATION"


async def test_the_rate_limit_is_110_requests_per_rolling_ten_seconds(
    hubspot: httpx.AsyncClient, auth: dict[str, str], clock: FakeClock
) -> None:
    remaining = []
    for _ in range(110):
        answer = await hubspot.get("/crm/v3/properties/contacts", headers=auth)
        assert answer.status_code == 200
        assert answer.headers["X-HubSpot-RateLimit-Max"] == "110"
        assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        remaining.append(int(answer.headers["X-HubSpot-RateLimit-Remaining"]))
        clock.advance(0.05)

    refused = await hubspot.get("/crm/v3/properties/contacts", headers=auth)
    clock.advance(10.0)
    later = await hubspot.get("/crm/v3/properties/contacts", headers=auth)

    assert remaining[0] == 109
    assert remaining[-1] == 0
    assert refused.status_code == 429
    body = refused.json()
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["status"] == "error"
    assert body["correlationId"]
    assert later.status_code == 200


async def test_search_has_its_own_limit_of_five_per_second_and_no_rate_headers(
    hubspot: httpx.AsyncClient, auth: dict[str, str], clock: FakeClock
) -> None:
    answers = [await hubspot.post(f"{CONTACTS}/search", json=by_email("a@example.com"), headers=auth) for _ in range(6)]
    clock.advance(1.0)
    later = await hubspot.post(f"{CONTACTS}/search", json=by_email("a@example.com"), headers=auth)
    other = await hubspot.get("/crm/v3/properties/contacts", headers=auth)

    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert answers[5].json()["policyName"] == "SECONDLY"
    assert "X-HubSpot-RateLimit-Remaining" not in answers[0].headers
    assert later.status_code == 200
    assert other.headers["X-HubSpot-RateLimit-Remaining"] == "109"  # searches do not count


# -- OAuth rules ------------------------------------------------------------------------------------------


async def test_the_token_endpoint_answers_invalid_grant_exactly(hubspot: httpx.AsyncClient) -> None:
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uri": REDIRECT_URL,
        "refresh_token": "na1-unknown",
    }

    answer = await hubspot.post("/oauth/v1/token", data=form)

    assert answer.status_code == 400
    assert answer.json() == {
        "error": "invalid_grant",
        "error_description": "refresh token is invalid, expired or revoked",
        "status": "BAD_REFRESH_TOKEN",
        "message": "missing or invalid refresh token",
    }


async def test_consent_refuses_to_redirect_to_an_unregistered_address(hubspot: httpx.AsyncClient) -> None:
    params = {"client_id": CLIENT_ID, "redirect_uri": "https://evil.example/cb", "scope": "crm.objects.contacts.read"}

    answer = await hubspot.get("/oauth/authorize", params=params)

    assert answer.status_code == 400
    assert "location" not in answer.headers


async def test_consent_refuses_scopes_the_app_does_not_have(hubspot: httpx.AsyncClient) -> None:
    params = {"client_id": CLIENT_ID, "redirect_uri": REDIRECT_URL, "scope": "crm.objects.deals.write", "state": "s"}

    answer = await hubspot.get("/oauth/authorize", params=params)

    assert answer.status_code == 302
    assert "error=invalid_scope" in answer.headers["location"]


# -- what tests see --------------------------------------------------------------------------------------


async def test_calls_are_recorded_and_counted(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    await create(hubspot, auth, email="ada@example.com")
    await hubspot.post(f"{CONTACTS}/search", json=by_email("ada@example.com"), headers=auth)
    await hubspot.post(f"{CONTACTS}/batch/read", json={"inputs": [{"id": "1"}]}, headers=auth)
    fake.fail_next(status=500, path="/crm/v3/properties")
    await hubspot.get("/crm/v3/properties/contacts", headers=auth)

    assert [(c.method, c.path, c.status) for c in fake.calls] == [
        ("POST", CONTACTS, 201),
        ("POST", f"{CONTACTS}/search", 200),
        ("POST", f"{CONTACTS}/batch/read", 207),
        ("GET", "/crm/v3/properties/contacts", 500),
    ]
    assert fake.count(CONTACTS) == 3
    assert fake.count(CONTACTS, method="post") == 3
    assert [c.path for c in fake.write_calls()] == [CONTACTS]
    assert fake.calls[0].body == {"properties": {"email": "ada@example.com"}}


async def test_injected_failures_are_used_up(
    hubspot: httpx.AsyncClient, auth: dict[str, str], fake: FakeHubSpot
) -> None:
    fake.fail_next(2, status=502)

    statuses = [(await hubspot.get("/crm/v3/properties/contacts", headers=auth)).status_code for _ in range(3)]

    assert statuses == [502, 502, 200]
    assert fake.calls[0].status == 502


def test_seeding_refuses_what_hubspot_would_refuse(fake: FakeHubSpot) -> None:
    fake.add_contact({"email": "ada@example.com"})

    with pytest.raises(ValueError, match="exists"):
        fake.add_contact({"email": "ADA@example.com"})
    with pytest.raises(ValueError, match="is invalid"):
        fake.add_contact({"email": "nope"})
    assert fake.calls == []


async def test_the_fake_hands_out_a_provider_and_tokens_wired_to_itself(fake: FakeHubSpot, clock: FakeClock) -> None:
    tokens = fake.grant_token_set()
    provider = fake.provider()
    try:
        found = await provider.find_contacts_by_email(tokens, ["ada@example.com"])
    finally:
        await provider.aclose()

    assert found == {"ada@example.com": []}
    assert tokens.expires_at is not None
    assert tokens.expires_at.timestamp() == clock() + 1800
    assert tokens.extra == {"hub_id": "1234567"}
