"""Finding, creating and updating contacts: batching, call counts, per-record results and their errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import httpx
import pytest
from crm_hub.providers import DUPLICATE_CONTACT, ContactInput, ContactUpdate, TokenSet
from salesforce_support import API, Clock, make_fake, tokens_from

from crm_hub_salesforce import SalesforceProvider, SalesforceSettings, to_salesforce_value
from crm_hub_salesforce.fake import FakeSalesforce

COLLECTIONS = f"{API}/composite/sobjects"


def lead(index: int, **fields: object) -> ContactInput:
    return ContactInput(properties={"LastName": f"Lead {index}", **fields}, email=f"lead{index}@example.com")


# -- find ---------------------------------------------------------------------------------------------------


async def test_finding_many_emails_is_one_query(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    ada = fake.add_contact({"LastName": "Lovelace", "Email": "Ada@Example.com"})
    grace = fake.add_contact({"LastName": "Hopper", "Email": "grace@example.com"})
    wanted = ["ada@example.com", " GRACE@example.com ", "nobody@example.com", "ada@EXAMPLE.com", ""]

    found = await provider.find_contacts_by_email(tokens, wanted)

    assert found == {"ada@example.com": [ada], "grace@example.com": [grace], "nobody@example.com": [], "": []}
    assert len(fake.query_calls()) == 1
    assert fake.count(API) == 1


async def test_no_emails_means_no_query(fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet) -> None:
    assert await provider.find_contacts_by_email(tokens, []) == {}
    assert await provider.find_contacts_by_email(tokens, ["  "]) == {"": []}
    assert fake.calls == []


async def test_several_contacts_with_one_email_come_oldest_first(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    # Created out of order: the newest contact has the lowest id, so only CreatedDate can order them.
    newest = fake.add_contact(
        {"LastName": "C", "Email": "dup@example.com"}, created_date=datetime(2024, 3, 1, tzinfo=UTC)
    )
    oldest = fake.add_contact(
        {"LastName": "A", "Email": "dup@example.com"}, created_date=datetime(2021, 1, 1, tzinfo=UTC)
    )
    middle = fake.add_contact(
        {"LastName": "B", "Email": "DUP@example.com"}, created_date=datetime(2022, 6, 1, tzinfo=UTC)
    )

    found = await provider.find_contacts_by_email(tokens, ["dup@example.com"])

    assert found == {"dup@example.com": [oldest, middle, newest]}


async def test_contacts_created_in_the_same_millisecond_are_ordered_by_id(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    first = fake.add_contact({"LastName": "A", "Email": "same@example.com"})
    second = fake.add_contact({"LastName": "B", "Email": "same@example.com"})

    assert await provider.find_contacts_by_email(tokens, ["same@example.com"]) == {"same@example.com": [first, second]}


async def test_more_than_200_emails_take_one_query_per_200(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    emails = [f"person{i}@example.com" for i in range(450)]
    known = fake.add_contact({"LastName": "Known", "Email": "person321@example.com"})

    found = await provider.find_contacts_by_email(tokens, emails)

    assert len(fake.query_calls()) == 3
    assert found["person321@example.com"] == [known]
    assert sum(len(ids) for ids in found.values()) == 1


async def test_long_emails_split_a_lookup_to_keep_the_url_short(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    emails = [f"{'x' * 60}.{i}@{'long-domain-name' * 4}.example.com" for i in range(200)]

    await provider.find_contacts_by_email(tokens, emails)

    calls = fake.query_calls()
    assert len(calls) > 1
    assert all(len(str(httpx.URL(call.path, params=call.query))) < 14_000 for call in calls)


async def test_a_lookup_follows_next_records_url(clock: Clock, settings: SalesforceSettings) -> None:
    fake = make_fake(clock, query_batch_size=2)
    ids = [fake.add_contact({"LastName": f"D{i}", "Email": "many@example.com"}) for i in range(5)]
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app))
    try:
        found = await provider.find_contacts_by_email(tokens_from(fake.grant_tokens()), ["many@example.com"])
    finally:
        await provider.aclose()

    assert found == {"many@example.com": ids}
    assert [call.path.startswith(f"{API}/query/01g") for call in fake.query_calls()] == [False, True, True]


# -- create ---------------------------------------------------------------------------------------------------


async def test_create_is_one_collection_call_with_per_record_results(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    results = await provider.create_contacts(tokens, [lead(1), lead(2, Title="CTO"), lead(3)])

    assert [result.ok and result.created for result in results] == [True, True, True]
    assert [(call.method, call.path) for call in fake.write_calls()] == [("POST", COLLECTIONS)]
    body = fake.write_calls()[0].body
    assert body["allOrNone"] is False
    assert body["records"][1] == {
        "LastName": "Lead 2",
        "Title": "CTO",
        "Email": "lead2@example.com",
        "attributes": {"type": "Contact"},
    }
    assert fake.contacts[str(results[1].contact_id)]["Title"] == "CTO"
    assert all(str(result.contact_id).startswith("003") and len(str(result.contact_id)) == 18 for result in results)


async def test_more_than_200_records_are_written_200_per_call(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    results = await provider.create_contacts(tokens, [lead(i) for i in range(450)])

    assert len(results) == 450
    assert all(result.ok for result in results)
    assert [len(call.body["records"]) for call in fake.write_calls()] == [200, 200, 50]
    assert len(fake.contacts) == 450
    # Results line up with the inputs across chunks.
    assert fake.contacts[str(results[321].contact_id)]["Email"] == "lead321@example.com"


async def test_one_bad_record_fails_alone(fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet) -> None:
    contacts = [lead(1), ContactInput(properties={"FirstName": "No last name"}, email="x@example.com"), lead(3)]

    results = await provider.create_contacts(tokens, contacts)

    assert [result.ok for result in results] == [True, False, True]
    error = results[1].error
    assert error is not None
    assert error.reason == "REQUIRED_FIELD_MISSING"
    assert [violation.field for violation in error.field_violations] == ["LastName"]
    assert error.metadata["salesforce_error_code"] == "REQUIRED_FIELD_MISSING"
    assert len(fake.contacts) == 2


@pytest.mark.parametrize(
    ("properties", "reason", "field"),
    [
        ({"Email": "not-an-email"}, "FIELD_VALUE_INVALID", "Email"),
        ({"Title": "T" * 129}, "FIELD_VALUE_INVALID", "Title"),
        ({"Preferred_Channel__c": "Fax"}, "FIELD_VALUE_INVALID", "Preferred_Channel__c"),  # inactive, restricted
        ({"AccountId": "not-an-id"}, "FIELD_VALUE_INVALID", "AccountId"),
        ({"CreatedDate": "2024-01-01T00:00:00Z"}, "FIELD_NOT_WRITABLE", "CreatedDate"),
    ],
)
async def test_invalid_values_are_rejected_naming_the_field(
    provider: SalesforceProvider, tokens: TokenSet, properties: dict[str, object], reason: str, field: str
) -> None:
    [result] = await provider.create_contacts(tokens, [ContactInput(properties={"LastName": "L", **properties})])

    assert result.error is not None
    assert result.error.reason == reason
    assert [violation.field for violation in result.error.field_violations] == [field]


async def test_values_keep_their_json_types(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    properties = {
        "LastName": "Typed",
        "HasOptedOutOfEmail": True,
        "NumberOfEmployees__c": 250,
        "Lifetime_Value__c": Decimal("1234.50"),
        "Birthdate": date(1990, 4, 1),
        "Interests__c": ["Product", "Pricing"],
    }

    [result] = await provider.create_contacts(tokens, [ContactInput(properties=properties)])

    sent = fake.write_calls()[0].body["records"][0]
    assert sent["HasOptedOutOfEmail"] is True
    assert sent["NumberOfEmployees__c"] == 250
    assert sent["Lifetime_Value__c"] == 1234.5
    assert sent["Birthdate"] == "1990-04-01"
    assert sent["Interests__c"] == "Product;Pricing"
    stored = fake.contacts[str(result.contact_id)]
    assert (stored["HasOptedOutOfEmail"], stored["Birthdate"]) == (True, "1990-04-01")


def test_values_convert_as_salesforce_takes_them() -> None:
    assert to_salesforce_value(False) is False
    assert to_salesforce_value(3) == 3
    assert to_salesforce_value(Decimal("12")) == 12
    assert to_salesforce_value(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05.000Z"
    assert to_salesforce_value({"b", "a"}) == "a;b"
    assert to_salesforce_value(None) is None
    with pytest.raises(ValueError, match="not a number"):
        to_salesforce_value(float("nan"))


async def test_a_value_that_cannot_be_sent_fails_its_record_only(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    results = await provider.create_contacts(tokens, [lead(1, Discount__c=float("inf")), lead(2)])

    assert results[0].error is not None
    assert results[0].error.reason == "FIELD_VALUE_INVALID"
    assert results[1].ok
    assert len(fake.write_calls()[0].body["records"]) == 1


# -- duplicates -------------------------------------------------------------------------------------------------


async def test_duplicate_rules_refusal_becomes_duplicate_contact_with_the_existing_id(
    clock: Clock, settings: SalesforceSettings
) -> None:
    fake = make_fake(clock, duplicate_rules=True)
    older = fake.add_contact(
        {"LastName": "Old", "Email": "taken@example.com"}, created_date=datetime(2020, 1, 1, tzinfo=UTC)
    )
    newer = fake.add_contact({"LastName": "New", "Email": "TAKEN@example.com"})
    provider = SalesforceProvider(settings=settings, transport=httpx.ASGITransport(fake.app))
    try:
        results = await provider.create_contacts(
            tokens_from(fake.grant_tokens()),
            [ContactInput(properties={"LastName": "Again"}, email="taken@example.com"), lead(2)],
        )
    finally:
        await provider.aclose()

    error = results[0].error
    assert error is not None
    assert error.reason == DUPLICATE_CONTACT
    assert error.metadata == {
        "salesforce_error_code": "DUPLICATES_DETECTED",
        "contact_id": older,
        "other_contact_ids": newer,
    }
    assert results[1].ok
    # The collection's per-record error names no record: one lookup (a query, not a write) names them.
    assert len(fake.write_calls()) == 1
    assert len(fake.query_calls()) == 1


async def test_a_duplicate_result_in_the_error_itself_is_used_without_a_lookup(
    settings: SalesforceSettings,
) -> None:
    answer = [
        {
            "success": False,
            "errors": [
                {
                    "statusCode": "DUPLICATES_DETECTED",
                    "message": "Use one of these records?",
                    "fields": [],
                    "duplicateResult": {
                        "matchResults": [
                            {"matchRecords": [{"record": {"Id": "003A"}}, {"record": {"Id": "003B"}}]},
                        ]
                    },
                }
            ],
        }
    ]
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request.url.path)
        return httpx.Response(200, json=answer)

    provider = SalesforceProvider(settings=settings, transport=httpx.MockTransport(handler))
    try:
        [result] = await provider.create_contacts(
            TokenSet(access_token="t", instance_url="https://x.my.salesforce.com"), [lead(1)]
        )
    finally:
        await provider.aclose()

    assert result.error is not None
    assert result.error.metadata["contact_id"] == "003A"
    assert result.error.metadata["other_contact_ids"] == "003B"
    assert requests == [COLLECTIONS]


# -- update ---------------------------------------------------------------------------------------------------


async def test_update_is_one_collection_patch_with_ids(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    first = fake.add_contact({"LastName": "One", "Email": "one@example.com"})
    second = fake.add_contact({"LastName": "Two", "Email": "two@example.com"})

    results = await provider.update_contacts(
        tokens, [ContactUpdate(first, {"Title": "CEO"}), ContactUpdate(second, {"Phone": "+1 555 0100"})]
    )

    assert [(result.contact_id, result.created, result.ok) for result in results] == [
        (first, False, True),
        (second, False, True),
    ]
    [call] = fake.write_calls()
    assert (call.method, call.path) == ("PATCH", COLLECTIONS)
    assert call.body["records"][0] == {"Title": "CEO", "attributes": {"type": "Contact"}, "id": first}
    assert fake.contacts[first]["Title"] == "CEO"
    assert fake.contacts[second]["Phone"] == "+1 555 0100"


async def test_updating_a_missing_contact_is_not_found(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    deleted = fake.add_contact({"LastName": "Gone"})
    fake.delete_contact(deleted)
    never = "0035g000000AbCdAAA"

    results = await provider.update_contacts(
        tokens, [ContactUpdate(deleted, {"Title": "x"}), ContactUpdate(never, {"Title": "x"}), ContactUpdate("", {})]
    )

    assert [result.error.reason if result.error else None for result in results] == ["NOT_FOUND"] * 3
    assert len(fake.write_calls()) == 1


async def test_clearing_a_required_field_on_update_is_refused(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    contact = fake.add_contact({"LastName": "Keep"})

    [result] = await provider.update_contacts(tokens, [ContactUpdate(contact, {"LastName": None})])

    assert result.error is not None
    assert result.error.reason == "REQUIRED_FIELD_MISSING"
    assert fake.contacts[contact]["LastName"] == "Keep"


async def test_more_than_200_updates_are_chunked(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    ids = [fake.add_contact({"LastName": f"U{i}"}) for i in range(201)]

    results = await provider.update_contacts(tokens, [ContactUpdate(i, {"Department": "Sales"}) for i in ids])

    assert all(result.ok for result in results)
    assert [len(call.body["records"]) for call in fake.write_calls()] == [200, 1]
