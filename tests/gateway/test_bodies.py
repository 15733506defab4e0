"""What the gateway refuses about a REST request's URL and body before any replica sees it.

Each refusal has the usual error body; ``assert_gateway_error`` checks its shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from crm_hub.gateway import EnvoyGateway
from crm_hub.gateway.config import MAX_REQUEST_BODY_BYTES, MAX_URL_BYTES
from crm_hub.v1 import leads_pb2, leads_pb2_grpc
from tests.gateway.conftest import assert_gateway_error, headers, raw_http, request_head
from tests.support.app import bearer

JSON = {"content-type": "application/json"}


def _member(team_id: str, **extra: str) -> dict[str, str]:
    return {**headers(team_id, "member"), **extra}


# -- wrong JSON types and URLs that are not UTF-8: 400, never a 500 from an undecodable message ----------------


@pytest.mark.parametrize(
    ("path", "body", "names"),
    [
        ("/leads", {"fields": {"email": {"a": 1}}}, "fields[email]"),
        ("/leads", {"fields": {"email": {}}}, "fields[email]"),
        ("/leads", {"fields": {"name": "Ada"}, "fields ": 1, "externalId": "x"} | {"fields": {"x": {}}}, "fields[x]"),
        ("/integrations/memorycrm/mapping", {"mapping": {"email": {"to": "email"}}}, "mapping[email]"),
    ],
    ids=["lead-field-object", "lead-field-empty-object", "later-field-object", "mapping-value-object"],
)
async def test_json_object_as_a_map_value_is_400_invalid_argument_naming_it(
    http: httpx.AsyncClient, team_id: str, path: str, body: dict[str, Any], names: str
) -> None:
    # The transcoder turned these into a corrupt protobuf: the server answered 500 with a DecodeError.
    response = await http.post(path, content=json.dumps(body), headers=_member(team_id, **JSON))
    error = assert_gateway_error(response, 400, "INVALID_ARGUMENT")
    assert error["message"].startswith(f"{names}: ")
    assert "expected a string" in error["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"fields": {"email": 5}},
        {"fields": {"email": True}},
        {"fields": {"email": ["a@example.com"]}},
        {"fields": ["email"]},
        {"fields": "email"},
        {"externalId": {"a": 1}},
        {"externalId": 5},
        [],
    ],
    ids=[
        "number",
        "boolean",
        "array",
        "fields-array",
        "fields-string",
        "external-id-object",
        "external-id-number",
        "array-body",
    ],
)
async def test_other_json_of_the_wrong_type_is_400_invalid_argument(
    http: httpx.AsyncClient, team_id: str, body: object
) -> None:
    # The transcoder refuses these itself.
    response = await http.post("/leads", content=json.dumps(body), headers=_member(team_id, **JSON))
    assert_gateway_error(response, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "url",
    [
        "/leads/%FF%FE",
        "/leads/%C0%AF",  # an overlong "/"
        "/integrations/%ED%A0%80/start",  # a UTF-16 surrogate
        "/leads/0123456789abcdef0123456789abcdef/timeline?pageToken=%FF",
        "/leads/%F4%90%80%80",  # above U+10FFFF
    ],
    ids=["ff-fe", "overlong", "surrogate", "query", "beyond-unicode"],
)
async def test_url_that_is_not_utf8_is_400_invalid_utf8(http: httpx.AsyncClient, team_id: str, url: str) -> None:
    # The transcoder put the raw bytes into a string field: the server answered 500 with a DecodeError.
    response = await http.get(url, headers=_member(team_id))
    assert_gateway_error(response, 400, "INVALID_UTF8")


async def test_url_with_utf8_reaches_the_server(http: httpx.AsyncClient, team_id: str) -> None:
    response = await http.get("/leads/caf%C3%A9%F0%9F%98%80", headers=_member(team_id))
    assert response.status_code == 404, response.text
    assert response.json()["reason"] == "LEAD_NOT_FOUND"


# -- sizes: body over 1 MiB -> 413, URL over 4 KiB -> 414 ------------------------------------------------------


def _lead_body(size: int) -> bytes:
    """A CreateLead body of exactly ``size`` bytes (its one value far over the server's 10,000 characters)."""
    head, tail = b'{"fields": {"email": "', b'"}}'
    return head + b"a" * (size - len(head) - len(tail)) + tail


async def test_body_over_one_mebibyte_is_413_request_too_large(http: httpx.AsyncClient, team_id: str) -> None:
    body = _lead_body(MAX_REQUEST_BODY_BYTES + 1)
    response = await http.post("/leads", content=body, headers=_member(team_id, **JSON))
    assert_gateway_error(response, 413, "REQUEST_TOO_LARGE")


async def test_ten_megabyte_body_is_413_not_grpcs_429(gateway: EnvoyGateway, team_id: str) -> None:
    # Before: 429 "Received message larger than max" from gRPC's 4 MB limit. The gateway answers from the
    # Content-Length, before the body: a client reading while it sends (curl, browsers) sees the 413.
    body = _lead_body(10_000_000)
    head = request_head("POST", "/leads", {**_member(team_id, **JSON), "content-length": str(len(body))})
    response, _ = await raw_http(gateway, head, body)
    assert_gateway_error(response, 413, "REQUEST_TOO_LARGE")


async def test_chunked_body_over_one_mebibyte_is_413_request_too_large(http: httpx.AsyncClient, team_id: str) -> None:
    body = _lead_body(MAX_REQUEST_BODY_BYTES + 1)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is known only as it arrives
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await http.post("/leads", content=chunks(), headers=_member(team_id, **JSON))
    assert "content-length" not in response.request.headers
    assert_gateway_error(response, 413, "REQUEST_TOO_LARGE")


async def test_body_of_exactly_one_mebibyte_reaches_the_server(http: httpx.AsyncClient, team_id: str) -> None:
    body = _lead_body(MAX_REQUEST_BODY_BYTES)
    response = await http.post("/leads", content=body, headers=_member(team_id, **JSON))
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "LEAD_INVALID"  # the server's answer: the value is too long


async def test_url_over_4_kib_is_414_uri_too_long(http: httpx.AsyncClient, team_id: str) -> None:
    # A 10,000-character lead id.
    response = await http.get("/leads/" + "a" * 10_000, headers=_member(team_id))
    assert_gateway_error(response, 414, "URI_TOO_LONG")


async def test_url_of_4_kib_reaches_the_server(http: httpx.AsyncClient, team_id: str) -> None:
    path = "/leads/" + "a" * (MAX_URL_BYTES - len("/leads/"))
    response = await http.get(path, headers=_member(team_id))
    assert response.status_code in (400, 404), response.text  # the server's: not a lead id
    assert response.json()["reason"] != "URI_TOO_LONG"


# -- content type: a body must be JSON ---------------------------------------------------------------------------


LEAD = json.dumps({"fields": {"email": "ct@example.com"}}).encode()


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", "application/json; charset=latin1", None],
    ids=["text", "form", "xml", "json-in-latin1", "missing"],
)
async def test_body_that_is_not_declared_json_is_415_unsupported_media_type(
    http: httpx.AsyncClient, team_id: str, content_type: str | None
) -> None:
    # Before: a text/plain body was parsed as JSON all the same.
    extra = {"content-type": content_type} if content_type else {}
    response = await http.post("/leads", content=LEAD, headers=_member(team_id, **extra))
    if content_type is None:
        assert "content-type" not in response.request.headers
    error = assert_gateway_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in error["message"]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
async def test_json_body_is_accepted_with_or_without_a_utf8_charset(
    http: httpx.AsyncClient, team_id: str, content_type: str
) -> None:
    response = await http.post("/leads", content=LEAD, headers=_member(team_id, **{"content-type": content_type}))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("content_type", [None, "text/plain"], ids=["no-content-type", "text"])
async def test_request_without_a_body_needs_no_content_type(
    http: httpx.AsyncClient, team_id: str, content_type: str | None
) -> None:
    extra = {"content-type": content_type} if content_type else {}
    response = await http.post("/integrations/memorycrm/callback", headers={**headers(team_id), **extra})
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "OAUTH_CALLBACK_INVALID"  # the server's: code and state are missing


async def test_native_grpc_requests_are_not_held_to_json(gateway_channel: grpc.aio.Channel, team_id: str) -> None:
    response = await leads_pb2_grpc.LeadsServiceStub(gateway_channel).CreateLead(
        leads_pb2.CreateLeadRequest(fields={"email": "native@example.com"}), metadata=bearer(team_id, "member")
    )
    assert response.created is True
