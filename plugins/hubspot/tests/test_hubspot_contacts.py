"""Contacts: lookups by email, batch create/update/upsert, duplicates, invalid values and chunking."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from crm_hub.errors import RateLimited, Rejected
from crm_hub.providers import ContactInput, ContactUpdate, TokenSet

from crm_hub_hubspot import HubSpotProvider, to_hubspot_value
from crm_hub_hubspot.fake import FakeHubSpot

BATCH_READ = "/crm/v3/objects/contacts/batch/read"
BATCH_CREATE = "/crm/v3/objects/contacts/batch/create"
BATCH_UPDATE = "/crm/v3/objects/contacts/batch/update"
BATCH_UPSERT = "/crm/v3/objects/contacts/batch/upsert"


def lead(email: str, **properties: object) -> ContactInput:
    return ContactInput(properties={"email": email, **properties}, email=email)


# -- find --------------------------------------------------------------------------------------------


async def test_find_is_one_batch_read_for_up_to_a_hundred_emails(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    ada = fake.add_contact({"email": "ada@example.com", "firstname": "Ada"})
    bob = fake.add_contact({"email": "bob@example.com"})
    emails = ["Ada@Example.com", "bob@example.com"] + [f"nobody{i}@example.com" for i in range(98)]

    found = await provider.find_contacts_by_email(tokens, emails)

    assert fake.count(BATCH_READ) == 1
    assert len(fake.calls) == 1
    assert found["ada@example.com"] == [ada.id]
    assert found["bob@example.com"] == [bob.id]
    assert found["nobody7@example.com"] == []
    assert len(found) == 100
    [call] = fake.calls
    assert call.body["idProperty"] == "email"
    assert call.body["properties"] == ["email"]
    assert call.status == 207  # the unknown emails come back as errors of a partial answer


async def test_find_reads_beyond_a_hundred_emails_in_batches_of_a_hundred(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    last = fake.add_contact({"email": "person149@example.com"})

    found = await provider.find_contacts_by_email(tokens, [f"person{i}@example.com" for i in range(150)])

    assert fake.count(BATCH_READ) == 2
    assert [len(call.body["inputs"]) for call in fake.calls] == [100, 50]
    assert found["person149@example.com"] == [last.id]


async def test_find_with_no_emails_makes_no_call(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    assert await provider.find_contacts_by_email(tokens, []) == {}
    assert fake.calls == []


# -- create --------------------------------------------------------------------------------------------


async def test_create_writes_a_batch_in_one_call_and_returns_ids_in_input_order(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    results = await provider.create_contacts(
        tokens, [lead("ada@example.com", firstname="Ada"), lead("bob@example.com", firstname="Bob")]
    )

    assert fake.count(BATCH_CREATE) == 1
    assert len(fake.write_calls()) == 1
    assert all(result.ok and result.created for result in results)
    assert [fake.contacts[str(result.contact_id)].properties["firstname"] for result in results] == ["Ada", "Bob"]


async def test_creating_more_than_a_hundred_contacts_takes_several_batch_calls(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    contacts = [lead(f"lead{i}@example.com") for i in range(250)]

    results = await provider.create_contacts(tokens, contacts)

    assert [len(call.body["inputs"]) for call in fake.calls_to(BATCH_CREATE)] == [100, 100, 50]
    assert all(result.ok for result in results)
    assert [fake.contacts[str(r.contact_id)].email for r in results] == [f"lead{i}@example.com" for i in range(250)]


async def test_creating_an_existing_email_is_a_duplicate_naming_the_existing_contact(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    existing = fake.add_contact({"email": "ada@example.com"})

    [result] = await provider.create_contacts(tokens, [lead("ADA@example.com", firstname="Ada")])

    assert isinstance(result.error, Rejected)
    assert result.error.reason == "DUPLICATE_CONTACT"
    assert result.error.metadata["contact_id"] == existing.id
    assert result.error.status == 409
    assert result.contact_id is None
    assert fake.count(BATCH_CREATE) == 1
    assert len(fake.contacts) == 1


async def test_a_batch_with_a_duplicate_is_retried_one_by_one_so_each_record_gets_its_answer(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    existing = fake.add_contact({"email": "bob@example.com"})

    results = await provider.create_contacts(
        tokens, [lead("ada@example.com"), lead("bob@example.com"), lead("cy@example.com")]
    )

    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error is not None
    assert results[1].error.metadata["contact_id"] == existing.id
    assert fake.count(BATCH_CREATE) == 1
    assert fake.count("/crm/v3/objects/contacts", method="POST") - fake.count(BATCH_CREATE) == 3
    assert fake.contact_by_email("ada@example.com")
    assert fake.contact_by_email("cy@example.com")


async def test_an_invalid_value_is_rejected_naming_the_property(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    [result] = await provider.create_contacts(tokens, [lead("ada@example.com", numemployees="lots")])

    assert isinstance(result.error, Rejected)
    assert result.error.reason == "FIELD_VALUE_INVALID"
    assert [(v.field, v.description) for v in result.error.field_violations] == [
        ("numemployees", "lots was not a valid number.")
    ]
    assert "numemployees" in result.error.message
    assert fake.contacts == {}


async def test_an_invalid_record_in_a_batch_fails_alone(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    results = await provider.create_contacts(
        tokens, [lead("ada@example.com"), lead("bob@example.com", lifecyclestage="royalty")]
    )

    assert results[0].ok
    assert results[1].error is not None
    assert results[1].error.field_violations[0].field == "lifecyclestage"
    assert [c.email for c in fake.contacts.values()] == ["ada@example.com"]


async def test_values_are_sent_the_way_hubspot_takes_them(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    [result] = await provider.create_contacts(
        tokens,
        [
            lead(
                "ada@example.com",
                newsletter_opt_in=True,
                numemployees=250,
                date_of_birth=date(1815, 12, 10),
                lifecyclestage="lead",
            )
        ],
    )

    stored = fake.contacts[str(result.contact_id)].properties
    assert stored["newsletter_opt_in"] == "true"
    assert stored["numemployees"] == "250"
    assert stored["date_of_birth"] == "1815-12-10"
    assert stored["lifecyclestage"] == "lead"
    [call] = fake.calls
    assert call.body["inputs"][0]["properties"]["newsletter_opt_in"] == "true"


def test_value_conversion() -> None:
    assert to_hubspot_value(False) == "false"
    assert to_hubspot_value(12.0) == "12"
    assert to_hubspot_value(1.5e-7) == "0.00000015"  # HubSpot refuses exponent notation
    assert to_hubspot_value(date(2024, 2, 29)) == "2024-02-29"
    assert to_hubspot_value(datetime(2020, 2, 29, 3, 30, 17, tzinfo=UTC)) == "2020-02-29T03:30:17.000Z"
    assert to_hubspot_value(None) == ""
    assert to_hubspot_value(["a", "b"]) == "a;b"


# -- update ----------------------------------------------------------------------------------------------


async def test_update_writes_a_batch_in_one_call(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    ada = fake.add_contact({"email": "ada@example.com", "firstname": "Ada"})
    bob = fake.add_contact({"email": "bob@example.com"})

    results = await provider.update_contacts(
        tokens,
        [
            ContactUpdate(contact_id=ada.id, properties={"company": "Analytical Engines"}),
            ContactUpdate(contact_id=bob.id, properties={"firstname": "Bob"}),
        ],
    )

    assert [(r.contact_id, r.created, r.ok) for r in results] == [(ada.id, False, True), (bob.id, False, True)]
    assert fake.count(BATCH_UPDATE) == 1
    assert len(fake.calls) == 1
    assert ada.properties["company"] == "Analytical Engines"
    assert ada.properties["firstname"] == "Ada"
    assert bob.properties["firstname"] == "Bob"


async def test_updating_an_unknown_contact_fails_for_that_record_only(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    ada = fake.add_contact({"email": "ada@example.com"})

    results = await provider.update_contacts(
        tokens,
        [
            ContactUpdate(contact_id="999", properties={"firstname": "Nobody"}),
            ContactUpdate(contact_id=ada.id, properties={"firstname": "Ada"}),
        ],
    )

    assert results[0].error is not None
    assert results[0].error.reason == "NOT_FOUND"
    assert results[1].ok
    assert ada.properties["firstname"] == "Ada"
    assert fake.count(BATCH_UPDATE) == 1


async def test_changing_an_email_to_one_in_use_is_a_duplicate(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    ada = fake.add_contact({"email": "ada@example.com"})
    bob = fake.add_contact({"email": "bob@example.com"})

    [result] = await provider.update_contacts(
        tokens, [ContactUpdate(contact_id=bob.id, properties={"email": "ada@example.com"})]
    )

    assert result.error is not None
    assert result.error.reason == "DUPLICATE_CONTACT"
    assert result.error.metadata["contact_id"] == ada.id


# -- upsert ----------------------------------------------------------------------------------------------


async def test_upsert_is_one_call_that_creates_or_updates_by_email(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    ada = fake.add_contact({"email": "ada@example.com", "firstname": "Ada"})

    results = await provider.upsert_contacts_by_email(
        tokens, [lead("bob@example.com", firstname="Bob"), lead("ADA@example.com", company="Engines")]
    )

    assert fake.count(BATCH_UPSERT) == 1
    assert len(fake.calls) == 1
    assert [r.created for r in results] == [True, False]
    assert results[1].contact_id == ada.id
    assert ada.properties["company"] == "Engines"
    assert ada.properties["firstname"] == "Ada"
    bob = fake.contact_by_email("bob@example.com")
    assert bob is not None
    assert results[0].contact_id == bob.id
    assert fake.calls[0].body["inputs"][0]["idProperty"] == "email"


async def test_upsert_needs_an_email_and_sends_nothing_without_one(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    [result] = await provider.upsert_contacts_by_email(tokens, [ContactInput(properties={"firstname": "Anonymous"})])

    assert result.error is not None
    assert result.error.reason == "FIELD_VALUE_INVALID"
    assert fake.calls == []


async def test_an_invalid_upsert_record_fails_alone(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    results = await provider.upsert_contacts_by_email(
        tokens, [lead("ada@example.com"), lead("bob@example.com", hs_object_id="5")]
    )

    assert results[0].ok
    assert results[0].created
    assert results[1].error is not None
    assert results[1].error.field_violations[0].field == "hs_object_id"


# -- partial writes --------------------------------------------------------------------------------------


async def test_a_rate_limit_before_anything_was_written_raises_for_the_whole_call(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    fake.fail_next(status=429, retry_after=3, path=BATCH_CREATE)

    with pytest.raises(RateLimited) as limited:
        await provider.create_contacts(tokens, [lead(f"lead{i}@example.com") for i in range(250)])

    assert limited.value.retry_after == 3
    assert fake.count(BATCH_CREATE) == 1
    assert fake.contacts == {}


async def test_a_rate_limit_after_a_batch_was_written_marks_only_the_remaining_records(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    fake.fail_next(status=429, retry_after=3, path=BATCH_CREATE, skip=1)

    results = await provider.create_contacts(tokens, [lead(f"lead{i}@example.com") for i in range(250)])

    assert all(result.ok for result in results[:100])
    assert all(isinstance(result.error, RateLimited) for result in results[100:])
    assert fake.count(BATCH_CREATE) == 2  # it stops at the refusal instead of hammering on
    assert len(fake.contacts) == 100
