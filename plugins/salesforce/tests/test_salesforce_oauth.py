"""OAuth web server flow with PKCE, refresh with and without rotation, revocation, settings."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from crm_hub.errors import AccessDenied, AuthExpired, ConfigurationError, RefreshRejected, Rejected
from crm_hub.providers import TokenSet
from salesforce_support import (
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    INSTANCE_URL,
    LOGIN_URL,
    REDIRECT_URL,
    Clock,
    connect,
    consent,
    make_fake,
    pkce_pair,
)

from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce

# -- the consent URL ----------------------------------------------------------------------------------


def test_authorization_url_asks_the_login_host_for_a_code_with_pkce(provider: SalesforceProvider) -> None:
    url = provider.authorization_url(state="st/ate=1", code_challenge="challenge-abc")

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == LOGIN_URL
    assert parts.path == "/services/oauth2/authorize"
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URL],
        "scope": ["api refresh_token"],
        "state": ["st/ate=1"],
        "code_challenge": ["challenge-abc"],
        "code_challenge_method": ["S256"],
    }
    assert "scope=api%20refresh_token" in url


def test_authorization_url_without_a_challenge_sends_no_pkce_parameters(provider: SalesforceProvider) -> None:
    query = parse_qs(urlsplit(provider.authorization_url(state="s", code_challenge=None)).query)

    assert "code_challenge" not in query
    assert "code_challenge_method" not in query


# -- the round trip -------------------------------------------------------------------------------------


async def test_oauth_round_trip_with_pkce_yields_tokens_bound_to_the_instance_url(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    verifier, challenge = pkce_pair()
    answer = await consent(fake, provider.authorization_url(state="state-7", code_challenge=challenge))
    assert answer["state"] == "state-7"

    tokens = await provider.exchange_code(code=answer["code"], code_verifier=verifier)

    assert tokens.access_token in fake.sessions
    assert tokens.refresh_token in fake.refresh_tokens
    assert tokens.instance_url == INSTANCE_URL
    assert tokens.expires_at is None  # Salesforce sends no expires_in
    assert set(tokens.scopes) >= {"api", "refresh_token"}
    assert tokens.extra["org_id"] == fake.org_id
    assert tokens.extra["user_id"] == fake.user_id
    token_call = fake.calls_to("/services/oauth2/token")[0]
    assert token_call.host == urlsplit(LOGIN_URL).netloc
    assert token_call.body["code_verifier"] == verifier
    assert token_call.body["grant_type"] == "authorization_code"
    assert token_call.body["redirect_uri"] == REDIRECT_URL


async def test_api_calls_go_to_the_instance_url_not_the_login_host(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    tokens = await connect(fake, provider)

    await provider.list_fields(tokens)

    [describe] = fake.calls_to(f"{API}/sobjects/Contact/describe")
    assert describe.host == urlsplit(INSTANCE_URL).netloc
    assert describe.status == 200


async def test_the_fake_refuses_api_calls_sent_to_the_login_host(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    tokens = await connect(fake, provider)
    misdirected = TokenSet(access_token=tokens.access_token, instance_url=LOGIN_URL)

    with pytest.raises(AuthExpired):
        await provider.list_fields(misdirected)


async def test_a_wrong_pkce_verifier_is_refused_as_an_invalid_code(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    _, challenge = pkce_pair()
    answer = await consent(fake, provider.authorization_url(state="s", code_challenge=challenge))
    other_verifier, _ = pkce_pair()

    with pytest.raises(Rejected) as caught:
        await provider.exchange_code(code=answer["code"], code_verifier=other_verifier)

    assert caught.value.reason == "OAUTH_CODE_INVALID"
    assert "invalid code verifier" in caught.value.message
    assert other_verifier not in caught.value.message


async def test_a_missing_pkce_verifier_is_refused(fake: FakeSalesforce, provider: SalesforceProvider) -> None:
    _, challenge = pkce_pair()
    answer = await consent(fake, provider.authorization_url(state="s", code_challenge=challenge))

    with pytest.raises(Rejected) as caught:
        await provider.exchange_code(code=answer["code"], code_verifier=None)

    assert caught.value.reason == "OAUTH_CODE_INVALID"


async def test_consent_without_a_code_challenge_is_refused_when_pkce_is_required(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    answer = await consent(fake, provider.authorization_url(state="s", code_challenge=None))

    assert answer == {"error": "invalid_request", "error_description": "missing required code challenge", "state": "s"}


async def test_an_authorization_code_works_once(fake: FakeSalesforce, provider: SalesforceProvider) -> None:
    verifier, challenge = pkce_pair()
    answer = await consent(fake, provider.authorization_url(state="s", code_challenge=challenge))
    await provider.exchange_code(code=answer["code"], code_verifier=verifier)

    with pytest.raises(Rejected) as caught:
        await provider.exchange_code(code=answer["code"], code_verifier=verifier)

    assert caught.value.reason == "OAUTH_CODE_INVALID"


async def test_a_user_denying_consent_comes_back_with_access_denied(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    fake.consent = False
    _, challenge = pkce_pair()

    answer = await consent(fake, provider.authorization_url(state="s", code_challenge=challenge))

    assert answer["error"] == "access_denied"
    assert "code" not in answer


async def test_a_wrong_client_secret_is_a_configuration_problem_not_a_bad_code(
    fake: FakeSalesforce, clock: Clock
) -> None:
    wrong = SalesforceSettings(
        client_id=CLIENT_ID, client_secret="not-the-secret", redirect_url=REDIRECT_URL, login_url=LOGIN_URL
    )
    provider = SalesforceProvider(settings=wrong, transport=httpx.ASGITransport(fake.app))
    try:
        verifier, challenge = pkce_pair()
        answer = await consent(fake, provider.authorization_url(state="s", code_challenge=challenge))
        with pytest.raises(AccessDenied) as caught:
            await provider.exchange_code(code=answer["code"], code_verifier=verifier)
    finally:
        await provider.aclose()

    assert caught.value.reason == "OAUTH_CLIENT_INVALID"
    assert "not-the-secret" not in caught.value.message


# -- refresh ----------------------------------------------------------------------------------------------


async def test_refresh_without_rotation_returns_no_refresh_token_so_the_core_keeps_the_old_one(
    fake: FakeSalesforce, provider: SalesforceProvider
) -> None:
    tokens = await connect(fake, provider)

    fresh = await provider.refresh(tokens)

    assert fresh.refresh_token is None
    assert fresh.access_token != tokens.access_token
    assert fresh.instance_url == INSTANCE_URL
    assert fresh.extra["org_id"] == fake.org_id
    refresh_call = fake.calls_to("/services/oauth2/token")[-1]
    assert refresh_call.body["grant_type"] == "refresh_token"
    assert refresh_call.body["refresh_token"] == tokens.refresh_token
    # The old refresh token keeps working: nothing was rotated.
    again = await provider.refresh(tokens)
    assert again.access_token not in (tokens.access_token, fresh.access_token)


async def test_refresh_with_rotation_returns_the_new_refresh_token(clock: Clock, settings: SalesforceSettings) -> None:
    fake = make_fake(clock, rotate_refresh_tokens=True)
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app))
    try:
        tokens = await connect(fake, provider)
        fresh = await provider.refresh(tokens)
    finally:
        await provider.aclose()

    assert fresh.refresh_token is not None
    assert fresh.refresh_token != tokens.refresh_token
    assert fresh.refresh_token in fake.refresh_tokens


async def test_reusing_a_rotated_refresh_token_kills_the_whole_chain(
    clock: Clock, settings: SalesforceSettings
) -> None:
    fake = make_fake(clock, rotate_refresh_tokens=True)
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app))
    try:
        original = await connect(fake, provider)
        rotated = await provider.refresh(original)
        current = TokenSet(
            access_token=rotated.access_token, refresh_token=rotated.refresh_token, instance_url=rotated.instance_url
        )

        with pytest.raises(RefreshRejected) as caught:
            await provider.refresh(original)  # e.g. a second replica that missed the rotation
        with pytest.raises(RefreshRejected):
            await provider.refresh(current)  # the legitimate newest token is dead too
        with pytest.raises(AuthExpired):
            await provider.list_fields(current)  # and so are the chain's sessions
    finally:
        await provider.aclose()

    assert caught.value.metadata["oauth_error"] == "invalid_grant"
    assert original.refresh_token is not None
    assert original.refresh_token not in caught.value.message


async def test_a_revoked_refresh_token_is_refused(fake: FakeSalesforce, provider: SalesforceProvider) -> None:
    tokens = await connect(fake, provider)

    await provider.revoke(tokens)

    assert fake.calls_to("/services/oauth2/revoke")[0].body == {"token": tokens.refresh_token}
    with pytest.raises(RefreshRejected):
        await provider.refresh(tokens)
    with pytest.raises(AuthExpired):
        await provider.list_fields(tokens)


async def test_revoking_twice_is_quietly_accepted(fake: FakeSalesforce, provider: SalesforceProvider) -> None:
    tokens = await connect(fake, provider)
    await provider.revoke(tokens)

    await provider.revoke(tokens)  # 400 invalid_token: already what we wanted

    assert [call.status for call in fake.calls_to("/services/oauth2/revoke")] == [200, 400]


async def test_refresh_without_a_refresh_token_asks_for_a_reconnect(provider: SalesforceProvider) -> None:
    with pytest.raises(RefreshRejected):
        await provider.refresh(TokenSet(access_token="a", instance_url=INSTANCE_URL))


# -- settings ---------------------------------------------------------------------------------------------


def test_settings_come_from_the_environment_with_defaults() -> None:
    settings = SalesforceSettings.from_env(
        {
            "SALESFORCE_CLIENT_ID": " id ",
            "SALESFORCE_CLIENT_SECRET": "shh-secret",
            "SALESFORCE_REDIRECT_URL": "https://x.example.com/cb",
        }
    )

    assert settings.login_url == "https://login.salesforce.com"
    assert settings.api_version == "v58.0"
    assert settings.client_id == "id"
    assert "shh-secret" not in repr(settings)


def test_settings_take_a_sandbox_login_url_and_an_api_version() -> None:
    settings = SalesforceSettings.from_env(
        {
            "SALESFORCE_CLIENT_ID": "id",
            "SALESFORCE_CLIENT_SECRET": "s",
            "SALESFORCE_REDIRECT_URL": "https://x.example.com/cb",
            "SALESFORCE_LOGIN_URL": "https://test.salesforce.com/",
            "SALESFORCE_API_VERSION": "61.0",
        }
    )

    assert settings.login_url == "https://test.salesforce.com"
    assert settings.api_version == "v61.0"


def test_missing_settings_are_named() -> None:
    settings = SalesforceSettings.from_env({"SALESFORCE_CLIENT_ID": "id"})

    assert settings.missing == ("SALESFORCE_CLIENT_SECRET", "SALESFORCE_REDIRECT_URL")
    assert settings.problem is not None
    assert "SALESFORCE_CLIENT_SECRET, SALESFORCE_REDIRECT_URL are not set" in settings.problem


@pytest.mark.parametrize(
    ("login_url", "api_version"),
    [("http://login.salesforce.com", "v58.0"), ("login.salesforce.com", "v58.0"), (LOGIN_URL, "latest")],
)
def test_an_insecure_login_url_or_odd_api_version_is_refused(login_url: str, api_version: str) -> None:
    with pytest.raises(ConfigurationError):
        SalesforceSettings(
            client_id="id",
            client_secret=CLIENT_SECRET,
            redirect_url=REDIRECT_URL,
            login_url=login_url,
            api_version=api_version,
        )
