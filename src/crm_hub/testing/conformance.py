"""The provider conformance suite: what every crm_hub provider must do, checked against its fake CRM."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from crm_hub.core.retry import RetryPolicy
from crm_hub.core.sync import DUPLICATE_POLICIES, ContactWriter
from crm_hub.errors import (
    AlreadyExists,
    AuthExpired,
    ProviderError,
    RateLimited,
    RefreshRejected,
    Rejected,
    Unavailable,
)
from crm_hub.providers import DUPLICATE_CONTACT, FIELD_TYPES, ContactInput, ContactUpdate, CrmProvider, TokenSet
from crm_hub.providers.http import pkce_challenge, pkce_verifier

__all__ = ["ConformanceHarness", "FailureKind", "ProviderConformance", "follow_consent"]

FailureKind = Literal["auth_expired", "rate_limited", "unavailable"]

_EXPECTED_ERRORS: dict[FailureKind, type[ProviderError]] = {
    "auth_expired": AuthExpired,
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
}


async def follow_consent(auth_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, str]:
    """Open ``auth_url`` on a fake that consents at once; return the redirect's query (code, state or error)."""
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
        response = await client.get(auth_url)
    if response.status_code not in (301, 302, 303, 307):
        raise AssertionError(f"the consent page answered {response.status_code}, not a redirect")
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {key: values[0] for key, values in query.items()}


class ConformanceHarness(ABC):
    """What a provider package supplies: its provider wired to its fake, and a few handles on the fake."""

    @property
    @abstractmethod
    def provider(self) -> CrmProvider:
        """The provider under test, talking to the fake (e.g. through httpx.ASGITransport)."""

    @abstractmethod
    async def consent(self, auth_url: str) -> str:
        """Play the user at the consent screen and return the authorization code (see ``follow_consent``)."""

    @abstractmethod
    def write_calls(self) -> int:
        """How many requests that change data (create, update, upsert, delete) the fake has received."""

    @abstractmethod
    def fail_next(self, kind: FailureKind) -> None:
        """Make the fake answer the next API call as the CRM does for ``kind`` (401 expired, 429, 5xx)."""

    @abstractmethod
    def valid_contact(self, email: str) -> dict[str, Any]:
        """Properties (CRM field names, CRM-typed values) of a contact the CRM accepts."""

    @abstractmethod
    def invalid_contact(self, email: str) -> tuple[dict[str, Any], str]:
        """Properties the CRM refuses as invalid, and the name of the field at fault."""

    @property
    def enforces_unique_email(self) -> bool:
        """The fake refuses a second contact with the same email. Defaults to the provider's ``unique_email``
        capability; override for a CRM that does it only when configured to (Salesforce duplicate rules)."""
        return self.provider.capabilities.unique_email

    async def aclose(self) -> None:
        await self.provider.aclose()


def _pkce() -> tuple[str, str]:
    verifier = pkce_verifier()
    return verifier, pkce_challenge(verifier)


def _email() -> str:
    return f"conformance-{uuid.uuid4().hex[:12]}@example.com"


class ProviderConformance:
    """Subclass in your provider's tests and define a ``harness`` fixture returning your ConformanceHarness.

    Works under pytest-asyncio's strict and auto modes alike (install ``crm-hub[testing]``).
    """

    pytestmark = pytest.mark.asyncio

    @pytest_asyncio.fixture
    async def kit(self, harness: ConformanceHarness) -> AsyncIterator[ConformanceHarness]:
        """The harness, closed after the test whatever happened in it."""
        try:
            yield harness
        finally:
            await harness.aclose()

    @pytest_asyncio.fixture
    async def connected(self, kit: ConformanceHarness) -> tuple[ConformanceHarness, TokenSet]:
        provider = kit.provider
        verifier, challenge = _pkce() if provider.capabilities.pkce else (None, None)
        code = await kit.consent(provider.authorization_url(state="conformance-state", code_challenge=challenge))
        return kit, await provider.exchange_code(code=code, code_verifier=verifier)

    # -- OAuth -----------------------------------------------------------------------------------

    async def test_authorization_url_carries_the_state_and_pkce_challenge(self, kit: ConformanceHarness) -> None:
        provider = kit.provider
        _, challenge = _pkce()
        url = provider.authorization_url(state="state-123", code_challenge=challenge)
        query = parse_qs(urlsplit(url).query)
        assert query.get("state") == ["state-123"]
        if provider.capabilities.pkce:
            assert query.get("code_challenge") == [challenge]
            assert query.get("code_challenge_method") == ["S256"]

    async def test_oauth_round_trip_gives_tokens_that_refresh(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        assert tokens.access_token
        assert tokens.refresh_token
        refreshed = await harness.provider.refresh(tokens)
        assert refreshed.access_token
        assert refreshed.access_token != tokens.access_token
        assert "access_token" not in repr(refreshed)
        assert refreshed.access_token not in repr(refreshed)
        for expiry in (tokens.expires_at, refreshed.expires_at):
            assert expiry is None or expiry.utcoffset() is not None, "expires_at is timezone-aware (or None)"

    async def test_api_calls_work_with_refreshed_tokens(self, connected: tuple[ConformanceHarness, TokenSet]) -> None:
        # A provider that keeps per-account details in the tokens (an API host, an account id) must keep them
        # through a refresh: the core only ever calls with the tokens the last refresh returned.
        harness, tokens = connected
        refreshed = await harness.provider.refresh(tokens)
        # The core keeps the refresh token it has when a refresh returns none.
        merged = refreshed if refreshed.refresh_token else replace(refreshed, refresh_token=tokens.refresh_token)
        assert await harness.provider.list_fields(merged), "fields are listed with the refreshed tokens"
        email = _email()
        [created] = await harness.provider.create_contacts(merged, [ContactInput(harness.valid_contact(email), email)])
        assert created.ok, created.error
        assert (await harness.provider.find_contacts_by_email(merged, [email]))[email] == [created.contact_id]

    async def test_revoked_tokens_no_longer_refresh(self, connected: tuple[ConformanceHarness, TokenSet]) -> None:
        harness, tokens = connected
        provider = harness.provider
        await provider.revoke(tokens)
        await provider.revoke(tokens)  # revoking again is harmless: the tokens are gone either way
        if type(provider).revoke is CrmProvider.revoke:
            return  # the CRM has no revocation: disconnecting forgets the tokens, which is all there is to do
        with pytest.raises(RefreshRejected):
            await provider.refresh(tokens)

    async def test_a_configured_provider_reports_no_configuration_problem(self, kit: ConformanceHarness) -> None:
        assert kit.provider.configuration_problem() is None, "the harness's provider is fully configured"

    async def test_an_authorization_code_works_once(self, kit: ConformanceHarness) -> None:
        provider = kit.provider
        verifier, challenge = _pkce() if provider.capabilities.pkce else (None, None)
        code = await kit.consent(provider.authorization_url(state="s", code_challenge=challenge))
        await provider.exchange_code(code=code, code_verifier=verifier)
        with pytest.raises(Rejected):
            await provider.exchange_code(code=code, code_verifier=verifier)

    # -- Fields ----------------------------------------------------------------------------------

    async def test_fields_are_normalized_to_the_common_types(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        fields = await harness.provider.list_fields(tokens)
        assert fields, "a CRM has contact fields"
        names = [field.name for field in fields]
        assert len(names) == len(set(names)), "field names are unique"
        assert {field.type for field in fields} <= set(FIELD_TYPES)
        assert any(field.type == "email" for field in fields), "the email field is typed email"
        for field in fields:
            assert field.label, f"{field.name} has a label"
            if field.type == "select":
                assert field.options, f"select field {field.name} lists its options"
            if field.required:
                assert field.writable, f"required field {field.name} can be written"

    # -- Contacts --------------------------------------------------------------------------------

    async def test_create_find_and_update_a_contact(self, connected: tuple[ConformanceHarness, TokenSet]) -> None:
        harness, tokens = connected
        provider, email = harness.provider, _email()
        [created] = await provider.create_contacts(tokens, [ContactInput(harness.valid_contact(email), email=email)])
        assert created.ok
        assert created.contact_id
        assert created.created
        found = await provider.find_contacts_by_email(tokens, [email, _email()])
        assert found[email] == [created.contact_id]
        assert [ids for key, ids in found.items() if key != email] == [[]]
        [updated] = await provider.update_contacts(
            tokens, [ContactUpdate(created.contact_id, harness.valid_contact(email))]
        )
        assert updated.ok
        assert updated.contact_id == created.contact_id
        assert not updated.created

    async def test_emails_are_matched_case_insensitively(self, connected: tuple[ConformanceHarness, TokenSet]) -> None:
        harness, tokens = connected
        email = _email()
        [created] = await harness.provider.create_contacts(tokens, [ContactInput(harness.valid_contact(email), email)])
        found = await harness.provider.find_contacts_by_email(tokens, [email.upper()])
        assert found == {email: [created.contact_id]}, "results are keyed by the lowercased email"

    async def test_the_same_email_twice_in_one_lookup_is_answered_once(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        email = _email()
        [created] = await harness.provider.create_contacts(tokens, [ContactInput(harness.valid_contact(email), email)])
        found = await harness.provider.find_contacts_by_email(tokens, [email, email.upper(), f" {email} "])
        assert found == {email: [created.contact_id]}, "one key per email, each contact listed once"

    async def test_more_records_than_one_batch_holds_are_all_written_in_order(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        size = harness.provider.capabilities.max_batch_size + 1
        emails = [_email() for _ in range(size)]
        before = harness.write_calls()
        results = await harness.provider.create_contacts(
            tokens, [ContactInput(harness.valid_contact(email), email=email) for email in emails]
        )
        assert len(results) == size
        assert all(result.ok for result in results)
        assert harness.write_calls() - before >= 2, "the provider split the records into batches"
        found = await harness.provider.find_contacts_by_email(tokens, emails)
        assert [found[email] for email in emails] == [[result.contact_id] for result in results]

    async def test_an_invalid_contact_is_rejected_naming_the_field(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        email = _email()
        properties, field = harness.invalid_contact(email)
        [result] = await harness.provider.create_contacts(tokens, [ContactInput(properties, email=email)])
        assert isinstance(result.error, Rejected)
        named = {violation.field for violation in result.error.field_violations} | {result.error.message}
        assert any(field in text for text in named), f"the error names {field}"

    async def test_a_second_contact_with_one_email_is_refused_naming_the_first_or_kept_beside_it(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        email = _email()
        contact = ContactInput(harness.valid_contact(email), email=email)
        [first] = await harness.provider.create_contacts(tokens, [contact])
        [second] = await harness.provider.create_contacts(tokens, [contact])
        if not harness.enforces_unique_email:
            # This CRM takes duplicates: a second, distinct contact, and lookups then list both, oldest first.
            assert second.ok
            assert second.contact_id != first.contact_id
            found = await harness.provider.find_contacts_by_email(tokens, [email])
            assert found[email] == [first.contact_id, second.contact_id]
            return
        assert isinstance(second.error, Rejected)
        assert second.error.reason == DUPLICATE_CONTACT
        assert second.error.metadata.get("contact_id") == first.contact_id

    async def test_upsert_by_email_creates_then_updates_or_refuses_when_not_declared(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        harness, tokens = connected
        email = _email()
        contact = ContactInput(harness.valid_contact(email), email=email)
        if not harness.provider.capabilities.upsert_by_email:
            # Not declared, so the core never calls it; a call anyway must fail loudly, not half-work.
            with pytest.raises(NotImplementedError):
                await harness.provider.upsert_contacts_by_email(tokens, [contact])
            return
        before = harness.write_calls()
        [first] = await harness.provider.upsert_contacts_by_email(tokens, [contact])
        [second] = await harness.provider.upsert_contacts_by_email(tokens, [contact])
        assert (first.ok, first.created, second.ok, second.created) == (True, True, True, False)
        assert second.contact_id == first.contact_id
        assert harness.write_calls() - before == 2

    # -- Errors ----------------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["auth_expired", "rate_limited", "unavailable"])
    @pytest.mark.parametrize("call", ["lookup", "write", "fields"])
    async def test_failures_are_classified(
        self, connected: tuple[ConformanceHarness, TokenSet], kind: FailureKind, call: str
    ) -> None:
        harness, tokens = connected
        provider, email = harness.provider, _email()
        harness.fail_next(kind)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "lookup": lambda: provider.find_contacts_by_email(tokens, [email]),
            "write": lambda: provider.create_contacts(tokens, [ContactInput(harness.valid_contact(email), email)]),
            "fields": lambda: provider.list_fields(tokens),
        }
        with pytest.raises(_EXPECTED_ERRORS[kind]) as caught:
            await calls[call]()
        assert tokens.access_token not in str(caught.value)

    # -- Dry run through the core ----------------------------------------------------------------

    async def test_create_new_onto_an_existing_email_does_what_its_dry_run_previewed(
        self, connected: tuple[ConformanceHarness, TokenSet]
    ) -> None:
        """``create_new`` always asks for a new contact: beside the existing one where the CRM takes several
        per email, ALREADY_EXISTS where it refuses them. The dry run previews exactly that, but for refusals
        the provider cannot know of beforehand (rules an org configures: ``enforces_unique_email`` without
        ``unique_email``)."""
        harness, tokens = connected
        email = _email()
        [existing] = await harness.provider.create_contacts(tokens, [ContactInput(harness.valid_contact(email), email)])
        writer = ContactWriter(RetryPolicy(attempts=1))
        payload = harness.valid_contact(email)
        preview = await writer.apply(harness.provider, tokens, payload, email, "create_new", dry_run=True)
        if harness.provider.capabilities.unique_email:
            assert (preview.action, preview.contact_id) == ("would_conflict", existing.contact_id)
        else:
            assert (preview.action, preview.other_contact_ids) == ("would_create", [existing.contact_id])
        if harness.enforces_unique_email:
            with pytest.raises(AlreadyExists) as caught:
                await writer.apply(harness.provider, tokens, payload, email, "create_new", dry_run=False)
            assert caught.value.metadata.get("contact_id") == existing.contact_id
            return
        outcome = await writer.apply(harness.provider, tokens, payload, email, "create_new", dry_run=False)
        assert outcome.action == "created"
        assert outcome.contact_id not in (None, existing.contact_id)
        found = await harness.provider.find_contacts_by_email(tokens, [email])
        assert found[email] == [existing.contact_id, outcome.contact_id]

    async def test_dry_runs_never_write(self, connected: tuple[ConformanceHarness, TokenSet]) -> None:
        harness, tokens = connected
        email = _email()
        [existing] = await harness.provider.create_contacts(tokens, [ContactInput(harness.valid_contact(email), email)])
        writer = ContactWriter(RetryPolicy(attempts=1))
        before = harness.write_calls()
        for policy in DUPLICATE_POLICIES:
            for lead_email in (email, _email()):
                payload = harness.valid_contact(lead_email)
                outcome = await writer.apply(harness.provider, tokens, payload, lead_email, policy, dry_run=True)
                assert outcome.dry_run
                assert outcome.action.startswith("would_")
                assert outcome.payload == payload
                if lead_email != email:
                    assert (outcome.action, outcome.contact_id) == ("would_create", None)
                elif policy == "create_new" and not harness.provider.capabilities.unique_email:
                    assert (outcome.action, outcome.contact_id) == ("would_create", None)
                    assert outcome.other_contact_ids == [existing.contact_id], "the match is reported"
                else:
                    assert outcome.contact_id == existing.contact_id
        assert harness.write_calls() == before, "a dry run never writes"
