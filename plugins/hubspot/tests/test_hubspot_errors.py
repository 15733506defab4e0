"""HubSpot's failures become crm_hub's provider errors, with readable messages that never leak a secret."""

from __future__ import annotations

import json
import logging
import socket
import time

import httpx
import pytest
from crm_hub.errors import AccessDenied, AuthExpired, RateLimited, Rejected, Unavailable
from crm_hub.providers import ContactInput, TokenSet
from hubspot_support import CLIENT_SECRET

from crm_hub_hubspot import HubSpotProvider, HubSpotSettings, classify
from crm_hub_hubspot.fake import FakeHubSpot


def assert_no_secrets(error: Exception, tokens: TokenSet) -> None:
    text = f"{error} {error!r} {getattr(error, 'metadata', '')}"
    assert tokens.access_token not in text
    assert str(tokens.refresh_token) not in text
    assert CLIENT_SECRET not in text


async def test_an_expired_access_token_is_auth_expired(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    fake.expire_tokens()

    with pytest.raises(AuthExpired) as expired:
        await provider.list_fields(tokens)

    assert expired.value.status == 401
    assert expired.value.metadata["hubspot_category"] == "EXPIRED_AUTHENTICATION"
    assert "expired 0 second(s) ago" in expired.value.message
    assert_no_secrets(expired.value, tokens)


async def test_an_unknown_access_token_is_auth_expired_too(provider: HubSpotProvider) -> None:
    with pytest.raises(AuthExpired):
        await provider.find_contacts_by_email(TokenSet(access_token="made-up-token"), ["a@example.com"])


async def test_429_is_rate_limited_with_hubspots_retry_after(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    fake.fail_next(status=429, retry_after=7)

    with pytest.raises(RateLimited) as limited:
        await provider.find_contacts_by_email(tokens, ["a@example.com"])

    assert limited.value.retry_after == 7
    assert limited.value.metadata["policy"] == "TEN_SECONDLY_ROLLING"
    assert "ten_secondly_rolling limit" in limited.value.message


async def test_429_without_retry_after_leaves_the_backoff_to_the_core(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    fake.fail_next(status=429)

    with pytest.raises(RateLimited) as limited:
        await provider.list_fields(tokens)

    assert limited.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "retry_after", "expected_wait"),
    [
        pytest.param(423, None, 2.0, id="423-locked-waits-at-least-2s"),
        pytest.param(477, 30, 30.0, id="477-migration-honours-retry-after"),
        pytest.param(500, None, None, id="500"),
        pytest.param(502, None, None, id="502-html"),
        pytest.param(504, None, None, id="504-html"),
        pytest.param(524, None, None, id="524-html"),
    ],
)
async def test_transient_statuses_are_unavailable(
    provider: HubSpotProvider,
    fake: FakeHubSpot,
    tokens: TokenSet,
    status: int,
    retry_after: float | None,
    expected_wait: float | None,
) -> None:
    fake.fail_next(status=status, retry_after=retry_after)

    with pytest.raises(Unavailable) as unavailable:
        await provider.list_fields(tokens)

    assert unavailable.value.status == status
    assert unavailable.value.retry_after == expected_wait
    assert unavailable.value.message.endswith("try again shortly.")


async def test_a_hung_request_times_out_as_unavailable(
    fake: FakeHubSpot, settings: HubSpotSettings, tokens: TokenSet
) -> None:
    provider = HubSpotProvider(settings=settings, transport=httpx.ASGITransport(fake.app), timeout=0.2)
    fake.timeout_next(delay=5.0)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable) as unavailable:
            await provider.list_fields(tokens)
    finally:
        await provider.aclose()

    assert time.monotonic() - started < 2.0
    assert "did not answer in time" in unavailable.value.message
    assert fake.calls[0].status is None  # the fake never got to answer


async def test_a_refused_connection_is_unavailable(settings: HubSpotSettings, tokens: TokenSet) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens here once the socket closes
    unreachable = HubSpotSettings(
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        redirect_url=settings.redirect_url,
        api_base_url=f"http://127.0.0.1:{port}",
    )
    provider = HubSpotProvider(settings=unreachable, timeout=2.0)
    try:
        with pytest.raises(Unavailable) as unavailable:
            await provider.list_fields(tokens)
    finally:
        await provider.aclose()

    assert "Could not reach HubSpot (ConnectError)" in unavailable.value.message


async def test_missing_scopes_are_rejected_asking_for_a_reconnect(provider: HubSpotProvider, fake: FakeHubSpot) -> None:
    read_only = TokenSet(access_token=fake.grant_tokens(scopes=["crm.objects.contacts.read"])["access_token"])

    with pytest.raises(AccessDenied) as refused:
        await provider.list_fields(read_only)

    assert refused.value.reason == "MISSING_SCOPES"
    assert refused.value.status == 403


async def test_batch_writes_raise_call_level_errors_when_nothing_was_written(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    fake.expire_tokens()

    with pytest.raises(AuthExpired):
        await provider.upsert_contacts_by_email(tokens, [ContactInput(properties={}, email="a@example.com")])

    assert fake.contacts == {}


# -- classify() on HubSpot's exact bodies ---------------------------------------------------------------


def response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers or {})


def test_a_conflict_names_the_existing_contact() -> None:
    error = classify(
        response(
            409,
            {
                "status": "error",
                "message": "Contact already exists. Existing ID: 37765128953",
                "correlationId": "a4f1c0de-0000-4000-8000-000000000000",
                "category": "CONFLICT",
            },
        )
    )

    assert isinstance(error, Rejected)
    assert error.reason == "DUPLICATE_CONTACT"
    assert error.metadata["contact_id"] == "37765128953"
    assert error.metadata["correlation_id"] == "a4f1c0de-0000-4000-8000-000000000000"


def test_invalid_values_named_only_inside_the_message_are_still_field_violations() -> None:
    message = (
        "Property values were not valid: "
        '[{"isValid":false,"message":"Email address x@ is invalid","error":"INVALID_EMAIL","name":"email"}]'
    )
    error = classify(response(400, {"status": "error", "message": message, "category": "VALIDATION_ERROR"}))

    assert isinstance(error, Rejected)
    assert error.reason == "FIELD_VALUE_INVALID"
    assert [(v.field, v.description) for v in error.field_violations] == [("email", "Email address x@ is invalid")]
    assert error.message == "HubSpot rejected property values: email: Email address x@ is invalid."


def test_invalid_values_in_the_errors_list_name_each_property() -> None:
    body = {
        "status": "error",
        "message": "Property values were not valid: [...]",
        "category": "VALIDATION_ERROR",
        "errors": [
            {"message": "lots was not a valid number.", "code": "INVALID_INTEGER", "context": {"propertyName": ["n"]}},
            {
                "message": "x was not one of the allowed options",
                "code": "INVALID_OPTION",
                "context": {"propertyName": ["s"]},
            },
        ],
    }

    error = classify(response(400, body))

    assert [v.field for v in error.field_violations] == ["n", "s"]


def test_a_validation_error_naming_no_property_is_a_request_error() -> None:
    error = classify(response(400, {"status": "error", "message": "Batch too big", "category": "VALIDATION_ERROR"}))

    assert isinstance(error, Rejected)
    assert error.reason == "REQUEST_INVALID"
    assert error.field_violations == ()


def test_not_found_is_rejected_as_not_found() -> None:
    error = classify(
        response(404, {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"})
    )

    assert isinstance(error, Rejected)
    assert error.reason == "NOT_FOUND"


def test_an_http_date_retry_after_is_read_as_seconds() -> None:
    error = classify(response(429, {}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))

    assert isinstance(error, RateLimited)
    assert error.retry_after == 0.0  # in the past: retry now


def test_echoed_secrets_are_scrubbed_from_messages() -> None:
    error = classify(
        response(400, {"status": "error", "message": "bad token sekrit-token-123"}), secrets=["sekrit-token-123"]
    )

    assert "sekrit-token-123" not in error.message
    assert "[redacted]" in error.message


def test_the_revoke_url_is_redacted_from_httpx_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s %d %s"',
            "DELETE",
            httpx.URL("https://api.hubapi.com/oauth/v1/refresh-tokens/na1-secret-refresh"),
            "HTTP/1.1",
            204,
            "No Content",
        )

    assert "na1-secret-refresh" not in caplog.text
    assert "/oauth/v1/refresh-tokens/[redacted]" in caplog.text
