"""Contact fields from describe, normalized to crm_hub's field types (the spec's Salesforce type table)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from crm_hub.providers import CrmField, FieldOption, TokenSet
from salesforce_support import API, INSTANCE_URL

from crm_hub_salesforce import TYPE_MAP, SalesforceProvider, SalesforceSettings
from crm_hub_salesforce.fake import FakeSalesforce, describe_field, picklist


@pytest.fixture
async def fields(provider: SalesforceProvider, tokens: TokenSet) -> dict[str, CrmField]:
    return {field.name: field for field in await provider.list_fields(tokens)}


async def test_list_fields_is_one_describe_call(
    fake: FakeSalesforce, provider: SalesforceProvider, tokens: TokenSet
) -> None:
    await provider.list_fields(tokens)

    assert [(call.method, call.path) for call in fake.api_calls()] == [("GET", f"{API}/sobjects/Contact/describe")]


async def test_last_name_is_the_only_required_field(fields: dict[str, CrmField]) -> None:
    assert [field.name for field in fields.values() if field.required] == ["LastName"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Id", "string"),  # id
        ("AccountId", "string"),  # reference
        ("LastName", "string"),
        ("Description", "textarea"),
        ("MailingStreet", "textarea"),
        ("NumberOfEmployees__c", "number"),  # double
        ("Lifetime_Value__c", "number"),  # currency
        ("Discount__c", "number"),  # percent
        ("HasOptedOutOfEmail", "boolean"),
        ("Birthdate", "date"),
        ("CreatedDate", "date"),  # datetime
        ("Email", "email"),
        ("Phone", "phone"),
        ("Website__c", "url"),
        ("LeadSource", "select"),  # picklist
        ("Interests__c", "select"),  # multipicklist
        ("Badge_Code__c", "string"),  # encryptedstring
    ],
)
async def test_salesforce_types_map_to_the_common_types(fields: dict[str, CrmField], name: str, expected: str) -> None:
    assert fields[name].type == expected


async def test_compound_and_location_fields_are_left_out(fields: dict[str, CrmField]) -> None:
    assert "MailingAddress" not in fields  # address: written through MailingStreet, MailingCity, ...
    assert "Office_Location__c" not in fields  # location


async def test_read_only_fields_are_listed_but_not_writable(fields: dict[str, CrmField]) -> None:
    assert fields["Id"].writable is False
    assert fields["CreatedDate"].writable is False
    assert fields["Name"].writable is False
    assert fields["Engagement_Score__c"].writable is False  # a formula
    assert fields["Email"].writable is True
    assert fields["HasOptedOutOfEmail"].required is False  # not nillable, but defaulted on create


async def test_picklists_offer_only_their_active_values(fields: dict[str, CrmField]) -> None:
    assert fields["LeadSource"].options == (
        FieldOption("Web", "Web"),
        FieldOption("Phone Inquiry", "Phone Inquiry"),
        FieldOption("Partner Referral", "Partner Referral"),
        FieldOption("Purchased List", "Purchased List"),
        FieldOption("Other", "Other"),
    )
    assert "Fax" not in [option.value for option in fields["Preferred_Channel__c"].options]


async def test_labels_and_help_text_come_through(fields: dict[str, CrmField]) -> None:
    assert fields["Phone"].label == "Business Phone"
    assert fields["NumberOfEmployees__c"].description == "Head count of the contact's company."


async def test_every_type_of_the_spec_table_and_the_odd_ones(settings: SalesforceSettings) -> None:
    """Types the fake's Contact lacks (int, combobox, time, base64, anyType), and deprecated fields."""
    described = [
        describe_field("Visits__c", "Visits", "int", custom=True, digits=9),
        describe_field("Nickname__c", "Nickname", "combobox", length=40, picklist_values=picklist("Bob")),
        describe_field("Best_Time__c", "Best time", "time"),
        describe_field("Photo__c", "Photo", "base64"),
        describe_field("Any__c", "Any", "anyType"),
        {**describe_field("Old__c", "Old", "string", length=10), "deprecatedAndHidden": True},
        describe_field("Pipe__c", "Pipe", "picklist", picklist_values=[{"value": "A", "label": None, "active": True}]),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"{API}/sobjects/Contact/describe"
        return httpx.Response(200, json={"name": "Contact", "fields": described})

    provider = SalesforceProvider(settings=settings, transport=httpx.MockTransport(handler))
    try:
        fields = {field.name: field for field in await provider.list_fields(_tokens())}
    finally:
        await provider.aclose()

    assert {name: field.type for name, field in fields.items()} == {
        "Visits__c": "number",
        "Nickname__c": "string",  # free text allowed: "select" would refuse what Salesforce accepts
        "Pipe__c": "select",
    }
    assert fields["Pipe__c"].options == (FieldOption("A", "A"),)


def test_the_type_table_covers_the_spec() -> None:
    spec: dict[str, Any] = {
        "string": "string",
        "id": "string",
        "textarea": "textarea",
        "int": "number",
        "double": "number",
        "currency": "number",
        "percent": "number",
        "boolean": "boolean",
        "date": "date",
        "datetime": "date",
        "email": "email",
        "phone": "phone",
        "url": "url",
        "picklist": "select",
        "multipicklist": "select",
    }
    assert {name: TYPE_MAP[name] for name in spec} == spec


def _tokens() -> TokenSet:
    return TokenSet(access_token="00D!token", instance_url=INSTANCE_URL)
