"""Fixtures: a FakeHubSpot on a controllable clock, and a HubSpotProvider talking to it in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from crm_hub.providers import TokenSet
from hubspot_support import API_BASE_URL, CLIENT_ID, CLIENT_SECRET, REDIRECT_URL, FakeClock

from crm_hub_hubspot import HubSpotProvider, HubSpotSettings
from crm_hub_hubspot.fake import FakeHubSpot


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakeHubSpot:
    return FakeHubSpot(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URL, clock=clock)


@pytest.fixture
def settings() -> HubSpotSettings:
    return HubSpotSettings(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_url=REDIRECT_URL)


@pytest.fixture
async def provider(fake: FakeHubSpot, settings: HubSpotSettings, clock: FakeClock) -> AsyncIterator[HubSpotProvider]:
    provider = HubSpotProvider(settings=settings, transport=httpx.ASGITransport(fake.app), timeout=2.0, clock=clock.utc)
    try:
        yield provider
    finally:
        await provider.aclose()


@pytest.fixture
def tokens(fake: FakeHubSpot) -> TokenSet:
    """A connected account's tokens, as if the OAuth dance had happened."""
    return fake.grant_token_set()


@pytest.fixture
async def hubspot(fake: FakeHubSpot) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client on the fake, for tests of the fake itself."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(fake.app), base_url=API_BASE_URL) as client:
        yield client
