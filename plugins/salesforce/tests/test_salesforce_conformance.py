"""crm_hub's provider conformance suite, run against SalesforceProvider and the fake Salesforce."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from crm_hub.providers import CrmProvider
from crm_hub.testing import ConformanceHarness, FailureKind, ProviderConformance, follow_consent
from salesforce_support import CLIENT_ID, CLIENT_SECRET, LOGIN_URL, REDIRECT_URL

from crm_hub_salesforce import SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce

_FAILURES: dict[FailureKind, int] = {"auth_expired": 401, "rate_limited": 503, "unavailable": 503}


class SalesforceHarness(ConformanceHarness):
    def __init__(self) -> None:
        self.fake = FakeSalesforce(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uri=REDIRECT_URL, duplicate_rules=True
        )
        settings = SalesforceSettings(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_url=REDIRECT_URL, login_url=LOGIN_URL
        )
        self._provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(self.fake.app), timeout=5)

    @property
    def provider(self) -> CrmProvider:
        return self._provider

    @property
    def enforces_unique_email(self) -> bool:
        return True  # Salesforce takes duplicate emails unless the org has duplicate rules; this fake org has them

    async def consent(self, auth_url: str) -> str:
        return (await follow_consent(auth_url, transport=httpx.ASGITransport(self.fake.app)))["code"]

    def write_calls(self) -> int:
        return len(self.fake.write_calls())

    def fail_next(self, kind: FailureKind) -> None:
        if kind == "rate_limited":
            # The concurrent long-request limit: a 403 REQUEST_LIMIT_EXCEEDED that waiting does fix.
            self.fake.fail_next(
                status=403,
                error_code="REQUEST_LIMIT_EXCEEDED",
                message="ConcurrentPerOrgLongTxn Limit exceeded.",
                path="/services/data",
            )
        else:
            self.fake.fail_next(status=_FAILURES[kind], path="/services/data")

    def valid_contact(self, email: str) -> dict[str, Any]:
        return {"Email": email, "FirstName": "Ada", "LastName": "Lovelace"}

    def invalid_contact(self, email: str) -> tuple[dict[str, Any], str]:
        return {"Email": email.replace("@", " at "), "LastName": "Lovelace"}, "Email"


class TestSalesforceConformance(ProviderConformance):
    @pytest.fixture
    def harness(self) -> ConformanceHarness:
        return SalesforceHarness()
