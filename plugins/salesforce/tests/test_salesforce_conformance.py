"""crm_hub's provider conformance suite, run against SalesforceProvider and the fake Salesforce."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest
from crm_hub.errors import AuthExpired
from crm_hub.providers import CrmProvider, TokenSet
from crm_hub.providers.http import pkce_challenge
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


class ForgetfulSalesforceProvider(SalesforceProvider):
    """A provider that drops the org's instance_url from refreshed tokens — the kit must catch it."""

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        return replace(await super().refresh(tokens), instance_url=None)


async def test_the_kit_fails_a_provider_that_loses_its_per_account_host_on_refresh() -> None:
    harness = SalesforceHarness()
    harness._provider = ForgetfulSalesforceProvider(
        settings=harness._provider.settings, transport=httpx.ASGITransport(harness.fake.app), timeout=5
    )
    kit = TestSalesforceConformance()
    provider = harness.provider
    try:
        verifier = "v" * 64
        code = await harness.consent(provider.authorization_url(state="s", code_challenge=pkce_challenge(verifier)))
        tokens = await provider.exchange_code(code=code, code_verifier=verifier)
        with pytest.raises(AuthExpired):
            await kit.test_api_calls_work_with_refreshed_tokens((harness, tokens))
    finally:
        await harness.aclose()
