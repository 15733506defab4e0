"""The provider toolkit (`crm_hub.providers.http`): the HTTP client bounds each call by its timeout and by the
request's deadline, reports it to the core, classifies a missing answer without quoting the URL; the helpers
read JSON defensively, parse Retry-After both ways, keep secrets out of messages, check per-account API hosts
and write one record per call with the batch semantics. Against real HTTP apps, in-process and on a socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crm_hub.errors import AccessDenied, AuthExpired, Rejected, Unavailable
from crm_hub.providers import CrmRequest, TokenSet, WriteResult, http, observing, request_deadline
from crm_hub.testing.fakes import serving

TOKENS = TokenSet(access_token="access-token-1234", refresh_token="refresh-token-5678")


async def echo(request: Request) -> Response:
    return JSONResponse({"authorization": request.headers.get("authorization"), "path": request.url.path})


async def slow(request: Request) -> Response:
    await asyncio.sleep(5)
    return PlainTextResponse("late")


async def not_json(request: Request) -> Response:
    return PlainTextResponse("<html>maintenance</html>", status_code=200)


APP = Starlette(routes=[Route("/echo", echo), Route("/slow", slow), Route("/not-json", not_json)])


def client(**options: object) -> http.CrmHttpClient:
    return http.CrmHttpClient(
        "toycrm", "ToyCRM", base_url="http://toycrm.test", transport=httpx.ASGITransport(APP), **options
    )  # type: ignore[arg-type]


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int | None]] = []

    async def started(self, provider: str, operation: str) -> None:
        self.seen.append((provider, operation, None))

    def finished(self, provider: str, operation: str, request: CrmRequest) -> None:
        self.seen.append((provider, operation, request.status))


async def test_a_request_carries_the_bearer_token_and_is_reported_to_the_core() -> None:
    recorder = Recorder()
    crm = client()
    try:
        with observing(recorder):
            response = await crm.request("GET", "/echo", operation="lookup", tokens=TOKENS)
    finally:
        await crm.aclose()

    assert crm.json_object(response) == {"authorization": "Bearer access-token-1234", "path": "/echo"}
    assert recorder.seen == [("toycrm", "lookup", None), ("toycrm", "lookup", 200)]


async def test_a_call_never_runs_past_the_requests_deadline_even_with_a_longer_timeout() -> None:
    crm = client(timeout=30.0)
    started = time.monotonic()
    try:
        with request_deadline(time.monotonic() + 0.3), pytest.raises(Unavailable) as raised:
            await crm.request("GET", "/slow", operation="lookup")
    finally:
        await crm.aclose()

    assert time.monotonic() - started < 2.0
    assert raised.value.message == "ToyCRM did not answer in time; try again shortly."
    assert raised.value.maybe_applied is True, "a request that was sent may have been applied"


async def test_a_request_whose_deadline_has_passed_is_not_sent() -> None:
    recorder = Recorder()
    crm = client()
    try:
        with observing(recorder), request_deadline(time.monotonic() - 1), pytest.raises(Unavailable) as raised:
            await crm.request("POST", "/echo", operation="create")
    finally:
        await crm.aclose()

    assert raised.value.maybe_applied is False
    assert recorder.seen == [], "nothing reached the CRM, nothing was counted"


async def test_an_unreachable_crm_is_unavailable_and_the_error_never_quotes_the_url() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    crm = http.CrmHttpClient("toycrm", "ToyCRM", base_url=f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(Unavailable) as raised:
            await crm.request("GET", "/v1/contacts?email=jane@example.com", operation="lookup", tokens=TOKENS)
    finally:
        await crm.aclose()

    assert raised.value.maybe_applied is False, "a connection that never opened carried no request"
    assert "jane@example.com" not in str(raised.value)
    assert str(port) not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


async def test_the_client_works_against_a_crm_on_a_socket() -> None:
    async with serving(APP) as url:
        crm = http.CrmHttpClient("toycrm", "ToyCRM", base_url=url)
        try:
            response = await crm.request("GET", "/echo", operation="fields", tokens=TOKENS)
        finally:
            await crm.aclose()
    assert response.status_code == 200
    assert response.json()["authorization"] == "Bearer access-token-1234"


async def test_a_success_that_is_not_a_json_object_is_unavailable_naming_the_crm() -> None:
    crm = client()
    try:
        response = await crm.request("GET", "/not-json", operation="lookup")
        with pytest.raises(Unavailable, match="ToyCRM answered HTTP 200 with a body that is not JSON"):
            crm.json_object(response)
    finally:
        await crm.aclose()


def test_json_helpers_take_what_the_crm_sent_without_trusting_its_shape() -> None:
    assert http.json_body(httpx.Response(400, content=b"")) is None
    assert http.json_body(httpx.Response(400, content=b"not json")) is None
    assert http.json_body(httpx.Response(400, json=[{"errorCode": "X"}])) == [{"errorCode": "X"}]
    assert http.mappings([{"a": 1}, "b", 3, {"c": 2}]) == [{"a": 1}, {"c": 2}]
    assert http.mappings({"a": 1}) == []
    assert http.mapping(["x"]) == {}
    assert http.mapping({"k": "v"}) == {"k": "v"}
    assert http.text("  hello ") == "hello"
    assert http.text(42) == ""


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert http.parse_retry_after("7") == 7.0
    assert http.parse_retry_after("-3") == 0.0
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 55 <= (http.parse_retry_after(in_a_minute) or 0) <= 60
    assert http.parse_retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)) == 0.0
    assert http.parse_retry_after(None) is None
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after("nan") is None


def test_messages_are_one_sentence_without_secrets_and_bounded() -> None:
    secrets = http.secrets_of(TOKENS, "client-secret-abcd")
    echoed = "token access-token-1234 and refresh-token-5678 with client-secret-abcd were refused"
    assert http.scrub(echoed, secrets) == "token [redacted] and [redacted] with [redacted] were refused"
    assert http.sentence("ToyCRM refused the contact", "email is invalid") == (
        "ToyCRM refused the contact: email is invalid."
    )
    assert http.sentence("ToyCRM refused the contact", "Really?") == "ToyCRM refused the contact: Really?"
    assert http.sentence("ToyCRM refused the contact", "  ") == "ToyCRM refused the contact."
    long = http.sentence("ToyCRM refused the contact", "x" * 1000)
    assert len(long) == http.MAX_MESSAGE_LENGTH
    assert long.endswith("…")


def test_the_pkce_challenge_is_the_unpadded_base64url_sha256_of_the_verifier() -> None:
    verifier = http.pkce_verifier()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    assert http.pkce_challenge(verifier) == expected
    assert http.pkce_verifier() != verifier


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        ("https://acme.my.toycrm.com", "https://acme.my.toycrm.com"),
        ("https://acme.my.toycrm.com/", "https://acme.my.toycrm.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://acme.my.toycrm.com", None),
        ("https://acme.my.toycrm.com/services?x=1", None),
        ("https://acme.my.toycrm.com#frag", None),
        ("https://evil.example.com", None),
        ("javascript:alert(1)", None),
        ("", None),
        (None, None),
    ],
)
def test_a_per_account_api_host_is_trusted_only_when_it_is_safe_to_send_tokens_to(
    value: object, trusted: str | None
) -> None:
    def check() -> str:
        return http.trusted_api_host(value, provider="toycrm", label="ToyCRM", allowed_suffixes=(".toycrm.com",))

    if trusted is None:
        with pytest.raises(AccessDenied) as raised:
            check()
        assert raised.value.reason == "API_HOST_UNTRUSTED"
    else:
        assert check() == trusted


async def test_one_record_per_call_gives_each_record_its_result_and_stops_at_a_call_level_error() -> None:
    calls: list[str] = []

    async def write_one(email: str) -> WriteResult:
        calls.append(email)
        if email == "bad@example.com":
            return WriteResult(error=Rejected("ToyCRM refused the email.", provider="toycrm"))
        if email == "expired@example.com":
            raise AuthExpired("ToyCRM no longer accepts the token.", provider="toycrm")
        return WriteResult(contact_id=f"id-{email}", created=True)

    emails = ["a@example.com", "bad@example.com", "expired@example.com", "never@example.com"]
    results = await http.write_one_by_one(emails, write_one)

    assert [result.contact_id for result in results[:1]] == ["id-a@example.com"]
    assert isinstance(results[1].error, Rejected)
    assert isinstance(results[2].error, AuthExpired)
    assert isinstance(results[3].error, AuthExpired)
    assert calls == emails[:3], "the call-level error stopped the writes"
    with pytest.raises(AuthExpired):  # nothing written yet: the whole call may be retried
        await http.write_one_by_one(["expired@example.com", "a@example.com"], write_one)


def test_emails_compare_trimmed_and_lower_cased() -> None:
    assert http.normalize_email("  Jane.Doe@Example.COM ") == "jane.doe@example.com"
    assert http.normalize_email(None) == ""
