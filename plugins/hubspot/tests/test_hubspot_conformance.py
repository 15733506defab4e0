"""crm_hub's provider conformance suite, run against HubSpotProvider and the fake HubSpot."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from crm_hub.providers import CrmProvider
from crm_hub.testing import ConformanceHarness, FailureKind, ProviderConformance, follow_consent

from crm_hub_hubspot.fake import FakeHubSpot

_FAILURES: dict[FailureKind, int] = {"auth_expired": 401, "rate_limited": 429, "unavailable": 502}


class HubSpotHarness(ConformanceHarness):
    def __init__(self) -> None:
        self.fake = FakeHubSpot()
        self._provider = self.fake.provider(timeout=5.0)

    @property
    def provider(self) -> CrmProvider:
        return self._provider

    async def consent(self, auth_url: str) -> str:
        return (await follow_consent(auth_url, transport=httpx.ASGITransport(self.fake.app)))["code"]

    def write_calls(self) -> int:
        return len(self.fake.write_calls())

    def fail_next(self, kind: FailureKind) -> None:
        self.fake.fail_next(status=_FAILURES[kind], path="/crm/")

    def valid_contact(self, email: str) -> dict[str, Any]:
        return {"email": email, "firstname": "Ada", "lifecyclestage": "lead", "numemployees": 12}

    def invalid_contact(self, email: str) -> tuple[dict[str, Any], str]:
        return {"email": email, "numemployees": "a dozen"}, "numemployees"


class TestHubSpotConformance(ProviderConformance):
    @pytest.fixture
    def harness(self) -> ConformanceHarness:
        return HubSpotHarness()
