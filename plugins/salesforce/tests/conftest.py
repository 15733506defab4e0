"""Fixtures: a FakeSalesforce driven by a test clock, and a SalesforceProvider talking to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from crm_hub.providers import TokenSet
from salesforce_support import CLIENT_ID, CLIENT_SECRET, LOGIN_URL, REDIRECT_URL, Clock, make_fake, tokens_from

from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def settings() -> SalesforceSettings:
    return SalesforceSettings(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_url=REDIRECT_URL, login_url=LOGIN_URL
    )


@pytest.fixture
def fake(clock: Clock) -> FakeSalesforce:
    return make_fake(clock)


@pytest.fixture
async def provider(fake: FakeSalesforce, settings: SalesforceSettings) -> AsyncIterator[SalesforceProvider]:
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app), timeout=2.0)
    yield provider
    await provider.aclose()


@pytest.fixture
def tokens(fake: FakeSalesforce) -> TokenSet:
    """Tokens of a connected org, without the OAuth dance."""
    return tokens_from(fake.grant_tokens())
