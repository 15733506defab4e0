"""OAuth: the consent URL, the code exchange (with PKCE), refresh, revocation, and how refusals classify."""

from __future__ import annotations

import secrets
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from crm_hub.errors import AccessDenied, RefreshRejected, Rejected
from crm_hub.providers import TokenSet
from hubspot_support import CLIENT_ID, REDIRECT_URL, FakeClock, s256

from crm_hub_hubspot import SCOPES, HubSpotProvider, HubSpotSettings
from crm_hub_hubspot.fake import FakeHubSpot


async def consent(fake: FakeHubSpot, url: str) -> dict[str, str]:
    """Follow the authorize URL as the user's browser would; the fake consents and redirects back."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as browser:
        response = await browser.get(url)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URL
    return {key: values[0] for key, values in parse_qs(location.query).items()}


def test_authorization_url_asks_for_the_contact_scopes_with_a_pkce_challenge(provider: HubSpotProvider) -> None:
    url = urlsplit(provider.authorization_url(state="state-123", code_challenge="challenge-abc"))

    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://app.hubspot.com/oauth/authorize"
    assert parse_qs(url.query) == {
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URL],
        "scope": ["crm.objects.contacts.write crm.objects.contacts.read crm.schemas.contacts.read"],
        "state": ["state-123"],
        "code_challenge": ["challenge-abc"],
        "code_challenge_method": ["S256"],
    }
    assert "%20" in url.query
    assert "+" not in url.query
    assert provider.capabilities.pkce
    assert not provider.capabilities.rotates_refresh_tokens
    assert SCOPES == ("crm.objects.contacts.write", "crm.objects.contacts.read", "crm.schemas.contacts.read")


def test_authorization_url_without_pkce_has_no_challenge(provider: HubSpotProvider) -> None:
    query = parse_qs(urlsplit(provider.authorization_url(state="s", code_challenge=None)).query)

    assert "code_challenge" not in query
    assert "code_challenge_method" not in query


async def test_oauth_round_trip_trades_the_consented_code_for_working_tokens(
    provider: HubSpotProvider, fake: FakeHubSpot, clock: FakeClock
) -> None:
    verifier = secrets.token_urlsafe(48)
    redirect = await consent(fake, provider.authorization_url(state="state-1", code_challenge=s256(verifier)))
    assert redirect["state"] == "state-1"

    tokens = await provider.exchange_code(code=redirect["code"], code_verifier=verifier)

    assert tokens.expires_at == clock.utc() + timedelta(seconds=1800)
    assert tokens.scopes == SCOPES
    assert tokens.extra == {"hub_id": str(fake.hub_id)}
    assert tokens.refresh_token
    assert tokens.refresh_token.startswith("na1-")
    [token_call] = fake.calls_to("/oauth/v1/token")
    assert token_call.body["code_verifier"] == verifier
    assert token_call.body["grant_type"] == "authorization_code"
    assert token_call.body["redirect_uri"] == REDIRECT_URL
    fields = await provider.list_fields(tokens)
    assert "email" in {field.name for field in fields}


async def test_a_wrong_pkce_verifier_is_refused_as_an_invalid_code(
    provider: HubSpotProvider, fake: FakeHubSpot
) -> None:
    redirect = await consent(fake, provider.authorization_url(state="s", code_challenge=s256("the-right-verifier")))

    with pytest.raises(Rejected) as refused:
        await provider.exchange_code(code=redirect["code"], code_verifier="a-different-verifier")

    assert refused.value.reason == "OAUTH_CODE_INVALID"
    assert refused.value.provider == "hubspot"


async def test_a_missing_pkce_verifier_is_refused_when_the_consent_had_a_challenge(
    provider: HubSpotProvider, fake: FakeHubSpot
) -> None:
    redirect = await consent(fake, provider.authorization_url(state="s", code_challenge=s256("verifier")))

    with pytest.raises(Rejected) as refused:
        await provider.exchange_code(code=redirect["code"], code_verifier=None)

    assert refused.value.reason == "OAUTH_CODE_INVALID"


async def test_an_authorization_code_works_only_once(provider: HubSpotProvider, fake: FakeHubSpot) -> None:
    verifier = secrets.token_urlsafe(48)
    redirect = await consent(fake, provider.authorization_url(state="s", code_challenge=s256(verifier)))
    await provider.exchange_code(code=redirect["code"], code_verifier=verifier)

    with pytest.raises(Rejected) as refused:
        await provider.exchange_code(code=redirect["code"], code_verifier=verifier)

    assert refused.value.reason == "OAUTH_CODE_INVALID"
    assert "HubSpot refused the authorization code" in refused.value.message


async def test_a_declined_consent_redirects_back_with_an_error(provider: HubSpotProvider, fake: FakeHubSpot) -> None:
    fake.consent = False

    redirect = await consent(fake, provider.authorization_url(state="state-9", code_challenge=None))

    assert redirect["error"] == "access_denied"
    assert redirect["state"] == "state-9"
    assert "code" not in redirect


async def test_refresh_gives_a_new_access_token_and_keeps_the_refresh_token(
    provider: HubSpotProvider, fake: FakeHubSpot, clock: FakeClock
) -> None:
    payload = fake.grant_tokens()
    stale = TokenSet(
        access_token=payload["access_token"], refresh_token=payload["refresh_token"], extra={"hub_id": "1234567"}
    )
    clock.advance(1700)

    fresh = await provider.refresh(stale)

    assert fresh.access_token != stale.access_token
    assert fresh.refresh_token == stale.refresh_token  # HubSpot does not rotate refresh tokens
    assert fresh.expires_at == clock.utc() + timedelta(seconds=1800)
    assert fresh.extra["hub_id"] == str(fake.hub_id)
    [refresh_call] = fake.calls_to("/oauth/v1/token")
    assert refresh_call.body["grant_type"] == "refresh_token"
    assert refresh_call.body["refresh_token"] == stale.refresh_token


async def test_refresh_after_revocation_raises_refresh_rejected(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    await provider.revoke(tokens)
    assert fake.count("/oauth/v1/refresh-tokens/", method="DELETE") == 1

    with pytest.raises(RefreshRejected) as refused:
        await provider.refresh(tokens)

    assert refused.value.status == 400
    assert "refresh token is invalid, expired or revoked" in refused.value.message
    assert str(tokens.refresh_token) not in refused.value.message


async def test_revoking_twice_is_quietly_done(provider: HubSpotProvider, tokens: TokenSet) -> None:
    await provider.revoke(tokens)
    await provider.revoke(tokens)  # 404 the second time: nothing left to revoke


async def test_refresh_without_a_refresh_token_needs_a_reconnect(provider: HubSpotProvider, fake: FakeHubSpot) -> None:
    with pytest.raises(RefreshRejected):
        await provider.refresh(TokenSet(access_token="only-an-access-token"))

    assert fake.calls == []


async def test_a_wrong_client_secret_is_a_configuration_problem_and_never_quoted(
    fake: FakeHubSpot, tokens: TokenSet
) -> None:
    wrong = HubSpotSettings(client_id=CLIENT_ID, client_secret="not-the-secret", redirect_url=REDIRECT_URL)
    provider = HubSpotProvider(settings=wrong, transport=httpx.ASGITransport(fake.app))
    try:
        with pytest.raises(AccessDenied) as refused:
            await provider.refresh(tokens)
    finally:
        await provider.aclose()

    assert refused.value.reason == "OAUTH_CLIENT_INVALID"
    assert not isinstance(refused.value, RefreshRejected)  # reconnecting would not help
    assert "not-the-secret" not in refused.value.message
    assert "not-the-secret" not in repr(wrong)
