"""Helpers of the crm-hub-salesforce tests: constants, a hand-moved clock, the OAuth dance against the fake."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from crm_hub.providers import TokenSet
from crm_hub.providers.http import pkce_challenge, pkce_verifier

from crm_hub_salesforce import SalesforceProvider
from crm_hub_salesforce.fake import FakeSalesforce

CLIENT_ID = "3MVG9-test-client"
CLIENT_SECRET = "test-client-secret-9f2c"
REDIRECT_URL = "https://crm-hub.example.com/oauth/salesforce/callback"
LOGIN_URL = "https://login.fake.salesforce.invalid"
INSTANCE_URL = "https://acme.my.fake.salesforce.invalid"
API = "/services/data/v58.0"


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_fake(clock: Clock, **options: Any) -> FakeSalesforce:
    return FakeSalesforce(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=REDIRECT_URL,
        instance_url=INSTANCE_URL,
        clock=clock,
        **options,
    )


def tokens_from(answer: dict[str, object]) -> TokenSet:
    """A TokenSet from the token endpoint's JSON (as ``FakeSalesforce.grant_tokens`` returns it)."""
    return TokenSet(
        access_token=str(answer["access_token"]),
        refresh_token=str(answer["refresh_token"]) if answer.get("refresh_token") else None,
        instance_url=str(answer["instance_url"]),
    )


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = pkce_verifier()
    return verifier, pkce_challenge(verifier)


async def consent(fake: FakeSalesforce, authorization_url: str) -> dict[str, str]:
    """Follow the user's browser to the consent URL; the query of the redirect back (code, state or error)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app)) as browser:
        response = await browser.get(authorization_url)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URL)
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


async def connect(fake: FakeSalesforce, provider: SalesforceProvider) -> TokenSet:
    """The whole web server flow with PKCE, as the core runs it."""
    verifier, challenge = pkce_pair()
    answer = await consent(fake, provider.authorization_url(state="state-1", code_challenge=challenge))
    return await provider.exchange_code(code=answer["code"], code_verifier=verifier)
