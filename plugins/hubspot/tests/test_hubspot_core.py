"""The core's CRM-facing half (ContactWriter) with HubSpot: upserts in one call, duplicates as ALREADY_EXISTS."""

from __future__ import annotations

import pytest
from crm_hub.core.retry import RetryPolicy
from crm_hub.core.sync import ContactWriter
from crm_hub.errors import AlreadyExists
from crm_hub.providers import TokenSet

from crm_hub_hubspot import HubSpotProvider
from crm_hub_hubspot.fake import FakeHubSpot

UPSERT = "/crm/v3/objects/contacts/batch/upsert"


@pytest.fixture
def writer() -> ContactWriter:
    return ContactWriter(RetryPolicy(attempts=1))


async def test_the_update_policy_syncs_with_a_single_upsert_call(
    writer: ContactWriter, provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    payload = {"email": "ada@example.com", "firstname": "Ada"}

    first = await writer.apply(provider, tokens, payload, "ada@example.com", "update", dry_run=False)
    second = await writer.apply(provider, tokens, payload | {"company": "Engines"}, "ada@example.com", "update", False)

    assert (first.action, second.action) == ("created", "updated")
    assert first.contact_id == second.contact_id
    assert [call.path for call in fake.calls] == [UPSERT, UPSERT]
    contact = fake.contact_by_email("ada@example.com")
    assert contact is not None
    assert contact.properties["company"] == "Engines"


async def test_create_new_on_an_existing_email_is_already_exists_with_the_contact_id(
    writer: ContactWriter, provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    existing = fake.add_contact({"email": "ada@example.com"})

    with pytest.raises(AlreadyExists) as refused:
        await writer.apply(provider, tokens, {"email": "ada@example.com"}, "ada@example.com", "create_new", False)

    assert refused.value.reason == "DUPLICATE_CONTACT"
    assert refused.value.metadata["contact_id"] == existing.id
    assert existing.id in refused.value.message


async def test_the_skip_policy_looks_up_once_and_writes_nothing(
    writer: ContactWriter, provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    existing = fake.add_contact({"email": "ada@example.com"})

    outcome = await writer.apply(provider, tokens, {"email": "ada@example.com"}, "ada@example.com", "skip", False)

    assert outcome.action == "skipped"
    assert outcome.contact_id == existing.id
    assert [call.path for call in fake.calls] == ["/crm/v3/objects/contacts/batch/read"]
    assert fake.write_calls() == []
