"""Call-level failures: expired sessions, the daily API limit, outages, timeouts; and API usage tracking."""

from __future__ import annotations

import httpx
import pytest
from crm_hub.core.retry import RetryPolicy
from crm_hub.errors import AuthExpired, RateLimited, Rejected, Unavailable
from crm_hub.providers import DUPLICATE_CONTACT, ContactInput, TokenSet
from salesforce_support import API, CLIENT_SECRET, Clock, make_fake, tokens_from

from crm_hub_salesforce import DailyApiLimitReached, SalesforceProvider, SalesforceSettings, classify, record_error
from crm_hub_salesforce.fake import FakeSalesforce

# -- sessions --------------------------------------------------------------------------------------------------


async def test_an_expired_session_is_auth_expired(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.expire_sessions()

    with pytest.raises(AuthExpired) as caught:
        await provider.list_fields(tokens)

    assert caught.value.status == 401
    assert caught.value.metadata == {"salesforce_error_code": "INVALID_SESSION_ID"}
    assert tokens.access_token not in caught.value.message


async def test_after_auth_expired_a_refresh_makes_calls_work_again(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.expire_sessions()
    with pytest.raises(AuthExpired):
        await provider.find_contacts_by_email(tokens, ["a@example.com"])

    fresh = await provider.refresh(tokens)

    assert await provider.find_contacts_by_email(fresh, ["a@example.com"]) == {"a@example.com": []}


async def test_tokens_without_an_instance_url_ask_for_a_refresh(provider: SalesforceProvider) -> None:
    with pytest.raises(AuthExpired):
        await provider.list_fields(TokenSet(access_token="t"))


# -- the daily API limit ---------------------------------------------------------------------------------------


async def test_the_daily_limit_is_rate_limited_and_not_retryable(clock: Clock, settings: SalesforceSettings) -> None:
    fake = make_fake(clock, daily_limit=3)
    fake.api_usage = 3
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app))
    try:
        with pytest.raises(RateLimited) as caught:
            await provider.list_fields(tokens_from(fake.grant_tokens()))
    finally:
        await provider.aclose()

    error = caught.value
    assert isinstance(error, DailyApiLimitReached)
    assert error.retryable is False
    assert error.retry_after is None
    assert error.status == 403
    assert error.metadata == {"salesforce_error_code": "REQUEST_LIMIT_EXCEEDED", "api_usage": "3/3"}
    assert "daily API request limit" in error.message


async def test_the_core_retry_policy_does_not_hammer_a_daily_limit(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(5, status=403, error_code="REQUEST_LIMIT_EXCEEDED", message="TotalRequests Limit exceeded.")
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    with pytest.raises(DailyApiLimitReached):
        await RetryPolicy(sleep=sleep).run(lambda: provider.find_contacts_by_email(tokens, ["a@example.com"]))

    assert fake.count(API) == 1
    assert sleeps == []


async def test_too_many_concurrent_long_requests_is_a_retryable_rate_limit(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(status=403, error_code="REQUEST_LIMIT_EXCEEDED", message="ConcurrentPerOrgLongTxn Limit exceeded.")

    with pytest.raises(RateLimited) as caught:
        await provider.list_fields(tokens)

    assert not isinstance(caught.value, DailyApiLimitReached)
    assert getattr(caught.value, "retryable", True) is True


# -- outages and timeouts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_unavailable(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet, status: int
) -> None:
    fake.fail_next(status=status)

    with pytest.raises(Unavailable) as caught:
        await provider.find_contacts_by_email(tokens, ["a@example.com"])

    assert caught.value.status == status


async def test_a_503_with_retry_after_says_how_long_to_wait(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(status=503, retry_after=7)

    with pytest.raises(Unavailable) as caught:
        await provider.list_fields(tokens)

    assert caught.value.retry_after == 7.0


async def test_an_outage_is_retried_by_the_core_and_then_succeeds(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(2, status=503)

    async def no_wait(_: float) -> None:
        return None

    fields = await RetryPolicy(sleep=no_wait).run(lambda: provider.list_fields(tokens))

    assert fields
    assert fake.count(f"{API}/sobjects/Contact/describe") == 3


async def test_a_timeout_is_unavailable(clock: Clock, settings: SalesforceSettings) -> None:
    fake = make_fake(clock)
    fake.timeout_next(delay=5.0)
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app), timeout=0.05)
    try:
        with pytest.raises(Unavailable, match="did not answer in time"):
            await provider.find_contacts_by_email(tokens_from(fake.grant_tokens()), ["a@example.com"])
    finally:
        await provider.aclose()


async def test_a_refused_connection_is_unavailable(settings: SalesforceSettings) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = SalesforceProvider(settings=settings, transport=httpx.MockTransport(refuse))
    try:
        with pytest.raises(Unavailable, match="Could not reach Salesforce"):
            await provider.list_fields(TokenSet(access_token="t", instance_url="https://x.my.salesforce.com"))
        with pytest.raises(Unavailable):
            await provider.refresh(TokenSet(access_token="t", refresh_token="r", instance_url="https://x.invalid"))
    finally:
        await provider.aclose()


async def test_a_failure_after_some_chunks_were_written_keeps_their_ids(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(status=503, path=f"{API}/composite/sobjects", skip=1)
    contacts = [ContactInput(properties={"LastName": f"L{i}"}, email=f"l{i}@example.com") for i in range(250)]

    results = await provider.create_contacts(tokens, contacts)

    assert all(result.ok for result in results[:200])
    assert all(isinstance(result.error, Unavailable) for result in results[200:])
    assert len(fake.contacts) == 200


async def test_a_failure_before_anything_was_written_raises(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(status=500, path=f"{API}/composite/sobjects")

    with pytest.raises(Unavailable):
        await provider.create_contacts(tokens, [ContactInput(properties={"LastName": "L"})])


async def test_a_collection_over_200_records_is_refused_by_the_fake_with_exceeded_id_limit(
    fake: FakeSalesforce, tokens: TokenSet
) -> None:
    records = [{"attributes": {"type": "Contact"}, "LastName": f"L{i}"} for i in range(201)]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as client:
        response = await client.post(
            f"{tokens.instance_url}{API}/composite/sobjects",
            json={"allOrNone": False, "records": records},
            headers={"Authorization": f"Bearer {tokens.access_token}"},
        )

    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert fake.contacts == {}


async def test_an_unknown_field_fails_the_whole_call_as_rejected(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    with pytest.raises(Rejected) as caught:
        await provider.create_contacts(tokens, [ContactInput(properties={"LastName": "L", "Shoe_Size__c": 42})])

    assert caught.value.reason == "INVALID_FIELD"
    assert "Shoe_Size__c" in caught.value.message


async def test_secrets_echoed_by_salesforce_never_reach_a_message(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.fail_next(status=400, error_code="INVALID_REQUEST", message=f"bad token {tokens.access_token} {CLIENT_SECRET}")

    with pytest.raises(Rejected) as caught:
        await provider.list_fields(tokens)

    assert tokens.access_token not in caught.value.message
    assert CLIENT_SECRET not in caught.value.message
    assert "[redacted]" in caught.value.message


# -- API usage ------------------------------------------------------------------------------------------------


async def test_every_api_answer_reports_usage_and_the_provider_keeps_the_last(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    assert provider.last_api_usage is None

    await provider.list_fields(tokens)
    await provider.find_contacts_by_email(tokens, ["a@example.com"])

    assert provider.last_api_usage == (2, 100_000)
    assert tokens.instance_url is not None
    assert provider.api_usage_for(tokens.instance_url) == (2, 100_000)
    assert fake.api_usage == 2


async def test_usage_is_read_from_error_answers_too(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    fake.api_usage = 41
    fake.fail_next(status=500)

    with pytest.raises(Unavailable):
        await provider.list_fields(tokens)

    assert provider.last_api_usage == (41, 100_000)


# -- classification of answers the fake does not produce ------------------------------------------------------


def test_a_single_record_duplicate_answer_names_its_matches() -> None:
    body = [
        {
            "duplicateResut": {
                "allowSave": False,
                "matchResults": [{"matchRecords": [{"record": {"Id": "003OLD"}}, {"record": {"Id": "003NEW"}}]}],
            },
            "errorCode": "DUPLICATES_DETECTED",
            "message": "You're creating a duplicate record. We recommend you use an existing record instead.",
        }
    ]

    error = classify(httpx.Response(400, json=body))

    assert isinstance(error, Rejected)
    assert error.reason == DUPLICATE_CONTACT
    assert error.metadata == {
        "salesforce_error_code": "DUPLICATES_DETECTED",
        "contact_id": "003OLD",
        "other_contact_ids": "003NEW",
    }


def test_several_errors_of_one_record_are_all_reported() -> None:
    error = record_error(
        [
            {
                "statusCode": "REQUIRED_FIELD_MISSING",
                "message": "Required fields are missing: [LastName]",
                "fields": ["LastName"],
            },
            {
                "statusCode": "INVALID_EMAIL_ADDRESS",
                "message": "Email: invalid email address: nope",
                "fields": ["Email"],
            },
        ]
    )

    assert error.reason == "REQUIRED_FIELD_MISSING"
    assert [violation.field for violation in error.field_violations] == ["LastName", "Email"]
    assert "invalid email address" in error.message


def test_a_custom_validation_rule_names_its_fields() -> None:
    error = record_error(
        [
            {
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": "Phone must have 10 digits",
                "fields": ["Phone"],
            }
        ]
    )

    assert error.reason == "FIELD_VALUE_INVALID"
    assert error.field_violations[0].field == "Phone"
    assert error.field_violations[0].description == "Phone must have 10 digits"


def test_an_answer_that_is_not_json_is_still_classified() -> None:
    assert isinstance(classify(httpx.Response(503, text="<html>Maintenance</html>")), Unavailable)
    assert isinstance(classify(httpx.Response(400, text="oops")), Rejected)
