"""Helpers shared by the HubSpot plugin's tests (a uniquely named module: test dirs here are not packages)."""

from __future__ import annotations

from datetime import UTC, datetime

from crm_hub.providers.http import pkce_challenge

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret-value"
REDIRECT_URL = "https://crm-hub.test/oauth/hubspot/callback"
API_BASE_URL = "https://api.hubapi.com"


class FakeClock:
    """Seconds since the epoch that only move when a test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


s256 = pkce_challenge
