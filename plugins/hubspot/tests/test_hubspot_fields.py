"""Contact properties become crm_hub fields, typed by the spec's HubSpot type table."""

from __future__ import annotations

from crm_hub.providers import CrmField, FieldOption, TokenSet

from crm_hub_hubspot import HubSpotProvider
from crm_hub_hubspot.fake import FakeHubSpot


async def fields_by_name(provider: HubSpotProvider, tokens: TokenSet) -> dict[str, CrmField]:
    return {field.name: field for field in await provider.list_fields(tokens)}


async def test_property_types_follow_the_type_table(provider: HubSpotProvider, tokens: TokenSet) -> None:
    fields = await fields_by_name(provider, tokens)

    assert {name: field.type for name, field in fields.items()} == {
        "email": "email",  # the identity property
        "firstname": "string",
        "lastname": "string",
        "company": "string",
        "phone": "phone",  # string with fieldType phonenumber
        "hs_whatsapp_phone_number": "phone",  # type phone_number
        "website": "string",
        "message": "textarea",
        "lifecyclestage": "select",
        "hs_lead_status": "select",
        "numemployees": "number",
        "date_of_birth": "date",
        "newsletter_opt_in": "boolean",
        "createdate": "date",  # datetime
        "lastmodifieddate": "date",
        "hs_object_id": "number",
        "hs_email_domain": "string",
    }


async def test_archived_and_hidden_properties_are_left_out(provider: HubSpotProvider, tokens: TokenSet) -> None:
    fields = await fields_by_name(provider, tokens)

    assert "fax_number" not in fields  # archived
    assert "hs_legacy_import_id" not in fields  # hidden


async def test_select_fields_offer_the_visible_options(provider: HubSpotProvider, tokens: TokenSet) -> None:
    fields = await fields_by_name(provider, tokens)

    assert fields["lifecyclestage"].options[:2] == (
        FieldOption(value="subscriber", label="Subscriber"),
        FieldOption(value="lead", label="Lead"),
    )
    lead_statuses = [option.value for option in fields["hs_lead_status"].options]
    assert "NEW" in lead_statuses
    assert "LEGACY_IMPORTED" not in lead_statuses  # a hidden option
    assert fields["newsletter_opt_in"].options == ()  # booleans need no options


async def test_read_only_and_calculated_properties_are_not_writable(
    provider: HubSpotProvider, tokens: TokenSet
) -> None:
    fields = await fields_by_name(provider, tokens)

    assert {name for name, field in fields.items() if not field.writable} == {
        "createdate",
        "lastmodifieddate",
        "hs_object_id",
        "hs_email_domain",  # calculated
    }


async def test_email_is_the_one_required_field_and_descriptions_come_along(
    provider: HubSpotProvider, tokens: TokenSet
) -> None:
    fields = await fields_by_name(provider, tokens)

    assert [name for name, field in fields.items() if field.required] == ["email"]
    assert fields["email"] == CrmField(
        name="email", label="Email", type="email", required=True, description="A contact's email address"
    )


async def test_listing_fields_is_one_call_with_the_schema_scope(
    provider: HubSpotProvider, fake: FakeHubSpot, tokens: TokenSet
) -> None:
    await provider.list_fields(tokens)

    [call] = fake.calls
    assert (call.method, call.path, call.status) == ("GET", "/crm/v3/properties/contacts", 200)
