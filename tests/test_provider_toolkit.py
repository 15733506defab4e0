"""The provider toolkit (`crm_hub.providers.http`): the HTTP client bounds each call by its timeout and by the
request's deadline, reports it to the core, classifies a missing answer without quoting the URL, posts OAuth
forms with the client's credentials and reads token answers; the helpers give error answers and OAuth refusals
their usual meaning, build consent URLs, read JSON defensively, parse Retry-After both ways, keep secrets out of
messages, check per-account API hosts and write one record per call with the batch semantics. Against real
HTTP apps, in-process and on a socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crm_hub.errors import AccessDenied, AuthExpired, ProviderError, RateLimited, RefreshRejected, Rejected, Unavailable
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


async def refusal(request: Request) -> Response:
    """An error answer of the status asked for, quoting the token it was sent, as careless CRMs do."""
    status = int(request.path_params["status"])
    said = {"message": f"request with {request.headers.get('authorization', '')} refused"}
    return JSONResponse(said, status_code=status, headers={"Retry-After": "7"})


@dataclass(frozen=True)
class OAuthApp:
    """An ``http.OAuthClient``, as a provider's settings are one."""

    client_id: str = "toy-client"
    client_secret: str = field(default="client-secret-abcd", repr=False)
    redirect_url: str = "https://hub.example/oauth/toycrm/callback"


OAUTH = OAuthApp()
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


async def token(request: Request) -> Response:
    """An RFC 6749 token endpoint: the client's credentials in the form, OAuth's error codes."""
    form = dict(parse_qsl((await request.body()).decode()))
    if (form.get("client_id"), form.get("client_secret")) != (OAUTH.client_id, OAUTH.client_secret):
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    if form.get("grant_type") == "refresh_token":
        if form.get("refresh_token") != TOKENS.refresh_token:
            described = {"error_description": f"refresh token {form.get('refresh_token')} was revoked"}
            return JSONResponse({"error": "invalid_grant", **described}, status_code=400)
        return JSONResponse({"access_token": "access-token-2", "expires_in": 1800})  # no refresh token, no host
    if form.get("code") != "good-code-1234":
        described = {"error_description": f"code {form.get('code')} has expired"}
        return JSONResponse({"error": "invalid_grant", **described}, status_code=400)
    answer = {"access_token": "access-token-1", "refresh_token": TOKENS.refresh_token, "expires_in": 3600}
    return JSONResponse(answer | {"scope": "contacts.read contacts.write", "api_host": "https://acme.toycrm.com"})


async def revoke(request: Request) -> Response:
    form = dict(parse_qsl((await request.body()).decode()))
    if (form.get("client_id"), form.get("client_secret")) != (OAUTH.client_id, OAUTH.client_secret):
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    return Response(status_code=200)


async def busy(request: Request) -> Response:
    return JSONResponse({"error": "temporarily_unavailable"}, status_code=503, headers={"Retry-After": "7"})


APP = Starlette(
    routes=[
        Route("/echo", echo),
        Route("/slow", slow),
        Route("/not-json", not_json),
        Route("/refusal/{status:int}", refusal),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/revoke", revoke, methods=["POST"]),
        Route("/oauth/busy", busy, methods=["POST"]),
    ]
)


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


@pytest.mark.parametrize(
    ("status", "kind", "reason"),
    [
        (401, AuthExpired, "AUTH_EXPIRED"),
        (403, AccessDenied, "FORBIDDEN"),
        (404, Rejected, "NOT_FOUND"),
        (409, Rejected, "REQUEST_INVALID"),
        (429, RateLimited, "RATE_LIMITED"),
        (503, Unavailable, "PROVIDER_UNAVAILABLE"),
    ],
)
async def test_an_error_answer_has_the_usual_meaning_of_its_status_and_quotes_the_crm_without_secrets(
    status: int, kind: type[ProviderError], reason: str
) -> None:
    crm = client()
    try:
        response = await crm.request("GET", f"/refusal/{status}", operation="lookup", tokens=TOKENS)
    finally:
        await crm.aclose()
    said = http.mapping(http.json_body(response))["message"]

    error = http.classify_status(
        response, provider="toycrm", label="ToyCRM", detail=said, secrets=http.secrets_of(TOKENS), metadata={"k": "v"}
    )

    assert type(error) is kind
    assert (error.reason, error.status, error.provider, error.metadata) == (reason, status, "toycrm", {"k": "v"})
    assert error.message.startswith("ToyCRM")
    assert error.message.endswith("request with Bearer [redacted] refused.")
    assert error.retry_after == (7.0 if status in (429, 503) else None), "Retry-After, where waiting helps"


async def test_a_token_form_carries_the_client_credentials_and_its_answer_reads_as_tokens() -> None:
    recorder = Recorder()
    crm = client()
    try:
        with observing(recorder):
            form = {"grant_type": "authorization_code", "code": "good-code-1234"}
            response = await crm.oauth_form("/oauth/token", form, client=OAUTH)
        answer = crm.json_object(response)
    finally:
        await crm.aclose()

    tokens = crm.token_set(answer, api_host="api_host", allowed_suffixes=(".toycrm.com",), now=NOW)

    assert (tokens.access_token, tokens.refresh_token) == ("access-token-1", TOKENS.refresh_token)
    assert tokens.expires_at == NOW + timedelta(seconds=3600)
    assert tokens.scopes == ("contacts.read", "contacts.write")
    assert tokens.instance_url == "https://acme.toycrm.com"
    assert recorder.seen == [("toycrm", "token", None), ("toycrm", "token", 200)]


async def test_a_refresh_answer_keeps_what_it_leaves_out_from_the_tokens_it_renews() -> None:
    renewed = replace(
        TOKENS, instance_url="https://acme.toycrm.com", scopes=("contacts.read",), extra={"account": "acme"}
    )
    crm = client()
    try:
        form = {"grant_type": "refresh_token", "refresh_token": str(renewed.refresh_token)}
        response = await crm.oauth_form("/oauth/token", form, client=OAUTH, tokens=renewed)
        answer = crm.json_object(response)
    finally:
        await crm.aclose()

    fresh = crm.token_set(answer, previous=renewed, api_host="api_host", allowed_suffixes=(".toycrm.com",))

    assert fresh.access_token == "access-token-2"
    assert (fresh.refresh_token, fresh.instance_url) == (renewed.refresh_token, "https://acme.toycrm.com")
    assert (fresh.scopes, dict(fresh.extra)) == (("contacts.read",), {"account": "acme"})
    assert fresh.expires_at is not None
    assert fresh.expires_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("form", "kind", "reason"),
    [
        ({"grant_type": "authorization_code", "code": "stale-code-9999"}, Rejected, "OAUTH_CODE_INVALID"),
        (
            {"grant_type": "refresh_token", "refresh_token": "revoked-token-0000"},
            RefreshRejected,
            "CREDENTIALS_EXPIRED",
        ),
    ],
)
async def test_a_refused_grant_is_classified_without_quoting_the_code_or_refresh_token(
    form: dict[str, str], kind: type[ProviderError], reason: str
) -> None:
    crm = client()
    try:
        with pytest.raises(kind) as refused:
            await crm.oauth_form("/oauth/token", form, client=OAUTH)
    finally:
        await crm.aclose()

    assert (refused.value.reason, refused.value.status) == (reason, 400)
    assert refused.value.metadata == {"oauth_error": "invalid_grant"}
    assert "[redacted]" in refused.value.message
    assert not any(secret in refused.value.message for secret in ("stale-code-9999", "revoked-token-0000"))


async def test_a_wrong_oauth_client_is_access_denied_naming_the_settings_that_hold_it() -> None:
    crm = client()
    try:
        with pytest.raises(AccessDenied) as denied:
            await crm.oauth_form(
                "/oauth/revoke", {"token": "t"}, client=replace(OAUTH, client_secret="rotated"), operation="revoke"
            )
        await crm.oauth_form("/oauth/revoke", {"token": "t"}, client=OAUTH, operation="revoke")  # 200: nothing raised
    finally:
        await crm.aclose()

    assert denied.value.reason == "OAUTH_CLIENT_INVALID"
    assert "TOYCRM_CLIENT_ID and TOYCRM_CLIENT_SECRET" in denied.value.message
    refusal = httpx.Response(400, json={"error": "unauthorized_client"})
    named = http.classify_oauth(refusal, provider="toycrm", label="ToyCRM", refreshing=False, client_settings="X")
    assert (named.reason, named.message) == (
        "OAUTH_CLIENT_INVALID",
        "ToyCRM does not accept this service's OAuth client: check X.",
    )


async def test_other_token_endpoint_failures_have_the_usual_meaning_unless_the_provider_classifies_them() -> None:
    statuses: list[int] = []

    def refused(response: httpx.Response) -> ProviderError:
        statuses.append(response.status_code)
        return Rejected("ToyCRM's own reading.", provider="toycrm")

    crm = client()
    try:
        with pytest.raises(Unavailable) as down:
            await crm.oauth_form("/oauth/busy", {"grant_type": "client_credentials"}, client=OAUTH)
        with pytest.raises(Rejected, match="ToyCRM's own reading"):
            await crm.oauth_form("/oauth/token", {"code": "stale-code-9999"}, client=OAUTH, refused=refused)
    finally:
        await crm.aclose()

    assert (down.value.retry_after, down.value.message) == (
        7.0,
        "ToyCRM is unavailable right now (HTTP 503); try again shortly: temporarily_unavailable.",
    )
    assert statuses == [400]


def test_a_token_answer_without_an_access_token_or_naming_a_host_elsewhere_gives_no_tokens() -> None:
    with pytest.raises(Unavailable, match="ToyCRM's token answer had no access token"):
        http.token_set({"refresh_token": "r-1234"}, provider="toycrm", label="ToyCRM")
    with pytest.raises(AccessDenied) as denied:
        http.token_set(
            {"access_token": "a-1234", "api_host": "https://toycrm.com.evil.example"},
            provider="toycrm",
            label="ToyCRM",
            api_host="api_host",
            allowed_suffixes=(".toycrm.com",),
        )
    assert denied.value.reason == "API_HOST_UNTRUSTED"
    for lifetime in (None, True, "3600", float("inf")):  # a lifetime that is not a finite number says nothing
        answer = {"access_token": "a-1234", "expires_in": lifetime}
        assert http.token_set(answer, provider="toycrm", label="ToyCRM").expires_at is None


def test_the_consent_url_carries_the_client_the_state_the_crms_own_parameters_and_the_pkce_challenge() -> None:
    url = http.authorization_url(
        "https://login.toycrm.com/oauth/authorize", OAUTH, state="st/ate=1", code_challenge="chal", scope="a b"
    )
    without = http.authorization_url(
        "https://app.toycrm.com/authorize?tenant=acme", OAUTH, state="s", code_challenge=None, response_type=None
    )

    assert parse_qs(urlsplit(url).query) == {
        "response_type": ["code"],
        "client_id": ["toy-client"],
        "redirect_uri": ["https://hub.example/oauth/toycrm/callback"],
        "scope": ["a b"],
        "state": ["st/ate=1"],
        "code_challenge": ["chal"],
        "code_challenge_method": ["S256"],
    }
    assert "scope=a%20b" in url
    assert parse_qs(urlsplit(without).query) == {
        "tenant": ["acme"],
        "client_id": ["toy-client"],
        "redirect_uri": ["https://hub.example/oauth/toycrm/callback"],
        "state": ["s"],
    }


async def test_one_by_one_a_refusal_raised_for_a_record_is_its_result_and_the_next_record_is_written() -> None:
    calls: list[str] = []

    async def write_one(email: str) -> WriteResult:
        calls.append(email)
        if email == "taken@example.com":
            raise Rejected("ToyCRM refused the email.", provider="toycrm", reason="FIELD_VALUE_INVALID")
        return WriteResult(contact_id=f"id-{email}", created=True)

    results = await http.write_one_by_one(["taken@example.com", "b@example.com"], write_one)

    assert isinstance(results[0].error, Rejected)
    assert results[0].error.reason == "FIELD_VALUE_INVALID"
    assert results[1].contact_id == "id-b@example.com"
    assert calls == ["taken@example.com", "b@example.com"]
