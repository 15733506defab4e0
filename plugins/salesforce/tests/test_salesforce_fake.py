"""The fake's own rules, checked over HTTP as a client would meet them."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from salesforce_support import API, CLIENT_ID, CLIENT_SECRET, INSTANCE_URL, Clock, make_fake

from crm_hub_salesforce.fake import FakeSalesforce, make_id, normalize_id


class Org:
    """An HTTP client for the fake's API with a session of its own."""

    def __init__(self, fake: FakeSalesforce, client: httpx.AsyncClient) -> None:
        self.fake = fake
        self.client = client
        self.access_token = str(fake.grant_tokens()["access_token"])

    async def request(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.access_token}", **kwargs.pop("headers", {})}
        return await self.client.request(method, f"{INSTANCE_URL}{API}{path}", headers=headers, **kwargs)

    async def query(self, soql: str) -> httpx.Response:
        return await self.request("GET", "/query", params={"q": soql})


@pytest.fixture
async def org(fake: FakeSalesforce) -> AsyncIterator[Org]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as client:
        yield Org(fake, client)


# -- SOQL over HTTP ---------------------------------------------------------------------------------------------


async def test_a_bad_escape_is_malformed_query(org: Org) -> None:
    response = await org.query("SELECT Id FROM Contact WHERE Email = 'o\\'brien\\x@example.com'")

    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == "MALFORMED_QUERY"
    assert "Illegal character sequence '\\x'" in error["message"]


async def test_unknown_columns_and_objects_are_refused_like_salesforce(org: Org) -> None:
    column = await org.query("SELECT Id, Shoe_Size__c FROM Contact")
    sobject = await org.query("SELECT Id FROM Lead")
    missing = await org.request("GET", "/query")

    assert (column.status_code, column.json()[0]["errorCode"]) == (400, "INVALID_FIELD")
    assert "No such column 'Shoe_Size__c'" in column.json()[0]["message"]
    assert (sobject.status_code, sobject.json()[0]["errorCode"]) == (400, "INVALID_TYPE")
    assert (missing.status_code, missing.json()[0]["errorCode"]) == (400, "MALFORMED_QUERY")


async def test_a_query_answers_in_salesforce_shape(fake: FakeSalesforce, org: Org) -> None:
    contact = fake.add_contact({"LastName": "Lovelace", "FirstName": "Ada", "Email": "ada@example.com"})

    response = await org.query("select id, email, name from contact where email = 'ADA@example.com' limit 5")

    assert response.status_code == 200
    assert response.json() == {
        "totalSize": 1,
        "done": True,
        "records": [
            {
                "attributes": {"type": "Contact", "url": f"{API}/sobjects/Contact/{contact}"},
                "Id": contact,
                "Email": "ada@example.com",
                "Name": "Ada Lovelace",
            }
        ],
    }


async def test_not_in_and_null_comparisons_work(fake: FakeSalesforce, org: Org) -> None:
    with_email = fake.add_contact({"LastName": "A", "Email": "a@example.com"})
    without = fake.add_contact({"LastName": "B"})

    nulls = await org.query("SELECT Id FROM Contact WHERE Email = null")
    others = await org.query("SELECT Id FROM Contact WHERE Email NOT IN ('b@example.com') AND Email != null")

    assert [record["Id"] for record in nulls.json()["records"]] == [without]
    assert [record["Id"] for record in others.json()["records"]] == [with_email]


# -- sessions, hosts, the allocation ------------------------------------------------------------------------------


async def test_every_api_answer_carries_the_limit_header(org: Org) -> None:
    first = await org.request("GET", "/sobjects/Contact/describe")
    second = await org.query("SELECT Id FROM Contact")
    failed = await org.query("SELECT FROM")

    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    assert second.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
    assert failed.headers["Sforce-Limit-Info"] == "api-usage=3/100000"


async def test_the_daily_allocation_refuses_with_403_and_frees_up_after_24_hours(clock: Clock) -> None:
    fake = make_fake(clock, daily_limit=2, session_ttl=2 * 86_400)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as client:
        org = Org(fake, client)
        statuses = [(await org.request("GET", "/sobjects/Contact/describe")).status_code for _ in range(3)]
        refused = await org.request("GET", "/sobjects/Contact/describe")
        clock.advance(86_401)
        later = await org.request("GET", "/sobjects/Contact/describe")

    assert statuses == [200, 200, 403]
    assert refused.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert refused.headers["Sforce-Limit-Info"] == "api-usage=2/2"
    assert later.status_code == 200
    assert later.headers["Sforce-Limit-Info"] == "api-usage=1/2"


async def test_sessions_end_after_the_timeout_of_inactivity(clock: Clock) -> None:
    fake = make_fake(clock, session_ttl=600)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as client:
        org = Org(fake, client)
        clock.advance(500)
        kept_alive = await org.request("GET", "/sobjects/Contact/describe")
        clock.advance(500)
        still_alive = await org.request("GET", "/sobjects/Contact/describe")
        clock.advance(601)
        expired = await org.request("GET", "/sobjects/Contact/describe")

    assert (kept_alive.status_code, still_alive.status_code) == (200, 200)
    assert expired.status_code == 401
    assert expired.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


async def test_unknown_tokens_and_missing_headers_are_invalid_sessions(org: Org) -> None:
    bad = await org.request("GET", "/sobjects/Contact/describe", token="00D!forged")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(org.fake.app)) as anonymous:
        none = await anonymous.get(f"{INSTANCE_URL}{API}/sobjects/Contact/describe")

    assert bad.status_code == none.status_code == 401
    assert org.fake.api_usage == 0  # refused sessions do not count


async def test_unknown_paths_and_versions_are_not_found(org: Org) -> None:
    assert (await org.request("GET", "/sobjects/Widget__c/describe")).status_code == 404
    assert (await org.request("GET", "/limits/anything")).status_code == 404
    response = await org.client.get(
        f"{INSTANCE_URL}/services/data/latest/query", headers={"Authorization": f"Bearer {org.access_token}"}
    )
    assert response.status_code == 404


# -- writes -------------------------------------------------------------------------------------------------------


async def test_single_record_create_update_and_read(fake: FakeSalesforce, org: Org) -> None:
    created = await org.request("POST", "/sobjects/Contact", json={"LastName": "Solo", "Email": "solo@example.com"})
    contact_id = created.json()["id"]
    updated = await org.request("PATCH", f"/sobjects/Contact/{contact_id}", json={"Title": "Boss"})
    read = await org.request("GET", f"/sobjects/Contact/{contact_id[:15]}")
    missing = await org.request("PATCH", f"/sobjects/Contact/{make_id('003', 99)}", json={"Title": "x"})

    assert created.status_code == 201
    assert created.json() == {"id": contact_id, "success": True, "errors": []}
    assert (updated.status_code, updated.content) == (204, b"")
    assert read.json()["Title"] == "Boss"
    assert read.json()["HasOptedOutOfEmail"] is False
    assert missing.status_code == 404
    assert missing.json()[0]["errorCode"] == "NOT_FOUND"


async def test_single_record_required_field_error_is_a_400_array(org: Org) -> None:
    response = await org.request("POST", "/sobjects/Contact", json={"FirstName": "Nameless"})

    assert response.status_code == 400
    assert response.json() == [
        {
            "errorCode": "REQUIRED_FIELD_MISSING",
            "message": "Required fields are missing: [LastName]",
            "fields": ["LastName"],
        }
    ]


async def test_duplicate_rules_name_the_matches_in_duplicate_resut_on_single_creates(clock: Clock) -> None:
    fake = make_fake(clock, duplicate_rules=True)
    existing = fake.add_contact({"LastName": "First", "Email": "dup@example.com"})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as client:
        org = Org(fake, client)
        single = await org.request("POST", "/sobjects/Contact", json={"LastName": "Again", "Email": "DUP@example.com"})
        collection = await org.request(
            "POST",
            "/composite/sobjects",
            json={"records": [{"attributes": {"type": "Contact"}, "LastName": "Again", "Email": "dup@example.com"}]},
        )
        allowed = await org.request(
            "POST",
            "/sobjects/Contact",
            json={"LastName": "Anyway", "Email": "dup@example.com"},
            headers={"Sforce-Duplicate-Rule-Header": "allowSave=true"},
        )

    [error] = single.json()
    assert single.status_code == 400
    assert error["errorCode"] == "DUPLICATES_DETECTED"
    [match] = error["duplicateResut"]["matchResults"]
    assert [record["record"]["Id"] for record in match["matchRecords"]] == [existing]
    assert collection.status_code == 200
    assert collection.json() == [
        {
            "success": False,
            "errors": [{"statusCode": "DUPLICATES_DETECTED", "message": "Use one of these records?", "fields": []}],
        }
    ]
    assert allowed.status_code == 201


async def test_type_errors_fail_the_whole_collection(fake: FakeSalesforce, org: Org) -> None:
    records = [
        {"attributes": {"type": "Contact"}, "LastName": "Fine"},
        {"attributes": {"type": "Contact"}, "LastName": "Odd", "NumberOfEmployees__c": "lots"},
    ]

    response = await org.request("POST", "/composite/sobjects", json={"allOrNone": False, "records": records})

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"
    assert fake.contacts == {}


async def test_all_or_none_rolls_every_record_back(fake: FakeSalesforce, org: Org) -> None:
    records = [{"attributes": {"type": "Contact"}, "LastName": "Fine"}, {"attributes": {"type": "Contact"}}]

    response = await org.request("POST", "/composite/sobjects", json={"allOrNone": True, "records": records})

    assert [result["errors"][0]["statusCode"] for result in response.json()] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUIRED_FIELD_MISSING",
    ]
    assert fake.contacts == {}


async def test_read_only_fields_and_ids_in_inserts_are_refused_per_record(org: Org) -> None:
    records = [
        {"attributes": {"type": "Contact"}, "LastName": "A", "Name": "Full Name"},
        {"attributes": {"type": "Contact"}, "LastName": "B", "Id": make_id("003", 5)},
    ]

    response = await org.request("POST", "/composite/sobjects", json={"records": records})

    assert [result["errors"][0]["statusCode"] for result in response.json()] == [
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
    ]


# -- OAuth edges --------------------------------------------------------------------------------------------------


async def test_the_token_endpoint_speaks_oauth_errors(fake: FakeSalesforce) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app), base_url="https://login.invalid") as client:
        grant = await client.post("/services/oauth2/token", data={"grant_type": "password"})
        client_id = await client.post(
            "/services/oauth2/token", data={"grant_type": "refresh_token", "client_id": "someone-else"}
        )
        unknown = await client.post(
            "/services/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "refresh_token": "5Aep-never-issued",
            },
        )

    assert grant.json() == {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
    assert client_id.json()["error"] == "invalid_client_id"
    assert (unknown.status_code, unknown.json()["error"]) == (400, "invalid_grant")


async def test_token_answers_carry_a_verifiable_signature(fake: FakeSalesforce) -> None:
    answer = fake.grant_tokens()

    expected = hmac.new(CLIENT_SECRET.encode(), (answer["id"] + answer["issued_at"]).encode(), hashlib.sha256)
    assert base64.b64decode(answer["signature"]) == expected.digest()
    assert "expires_in" not in answer


# -- ids ------------------------------------------------------------------------------------------------------------


def test_ids_are_18_characters_with_salesforce_checksums() -> None:
    contact_id = make_id("003", 123_456_789)

    assert len(contact_id) == 18
    assert contact_id.startswith("003")
    assert normalize_id(contact_id[:15]) == contact_id
    assert normalize_id(contact_id.lower()) is None  # the 15 first characters are case-sensitive
    assert normalize_id(contact_id[:15] + contact_id[15:].lower()) == contact_id  # the suffix is not
    assert normalize_id(contact_id, "001") is None
    # A real one: the checksum of 001A0000006Vm9r is IAC.
    assert normalize_id("001A0000006Vm9r") == "001A0000006Vm9rIAC"
