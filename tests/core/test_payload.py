"""Building the CRM payload: values coerced to the CRM's types, invalid values refused before any write."""

from __future__ import annotations

import pytest

from crm_hub.core.payload import build_payload, coerce_value
from crm_hub.errors import InvalidArgument
from crm_hub.providers import CrmField, FieldOption

STAGE = CrmField(
    name="lifecyclestage",
    label="Lifecycle stage",
    type="select",
    options=(FieldOption("lead", "Lead"), FieldOption("customer", "Customer")),
)
FIELDS = [
    CrmField(name="email", label="Email", type="email", required=True),
    CrmField(name="firstname", label="First name", type="string"),
    CrmField(name="numemployees", label="Employees", type="number"),
    CrmField(name="opted_in", label="Opted in", type="boolean"),
    CrmField(name="date_of_birth", label="Birthday", type="date"),
    STAGE,
]


@pytest.mark.parametrize(
    ("value", "field_type", "expected"),
    [
        ("42", "number", 42),
        (" 3.5 ", "number", 3.5),
        ("-7", "number", -7),
        ("1e3", "number", 1000.0),
        ("yes", "boolean", True),
        ("FALSE", "boolean", False),
        ("0", "boolean", False),
        ("2024-02-29", "date", "2024-02-29"),
        ("2024-02-29T23:30:00-02:00", "date", "2024-03-01"),
        ("2024-02-29T10:00:00Z", "date", "2024-02-29"),
        ("  Ada  ", "string", "Ada"),
    ],
)
def test_values_are_coerced_to_the_crm_field_type(value: str, field_type: str, expected: object) -> None:
    field = CrmField(name="x", label="X", type=field_type)  # type: ignore[arg-type]
    assert coerce_value(value, field) == expected
    assert type(coerce_value(value, field)) is type(expected)


def test_select_values_match_options_by_value_then_case_insensitively_by_label() -> None:
    assert coerce_value("customer", STAGE) == "customer"
    assert coerce_value("Customer", STAGE) == "customer"
    assert coerce_value("LEAD", STAGE) == "lead"


@pytest.mark.parametrize(
    ("value", "field_type", "complaint"),
    [
        ("forty", "number", "not a number"),
        ("1,000", "number", "not a number"),
        ("maybe", "boolean", "yes/no"),
        ("29/02/2024", "date", "not a date"),
        ("ada@", "email", "not an email"),
    ],
)
def test_invalid_values_are_refused_with_a_reason(value: str, field_type: str, complaint: str) -> None:
    field = CrmField(name="x", label="X", type=field_type)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=complaint):
        coerce_value(value, field)


def test_a_value_outside_the_options_is_refused_listing_them() -> None:
    with pytest.raises(ValueError, match=r"not one of the options \(lead, customer\)"):
        coerce_value("prospect", STAGE)


def test_payload_goes_through_the_mapping_and_leaves_out_empty_and_unmapped_fields() -> None:
    lead = {"email": "ada@example.com", "name": "Ada", "employees": "12", "phone": "", "unmapped": "x"}
    mapping = {"email": "email", "name": "firstname", "employees": "numemployees", "phone": "firstname_2"}
    fields = [*FIELDS, CrmField(name="firstname_2", label="Phone-ish", type="string")]
    assert build_payload(lead, mapping, fields, provider_label="HubSpot") == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "numemployees": 12,
    }


def test_every_invalid_value_is_named_in_one_error() -> None:
    lead = {"email": "ada@example.com", "employees": "many", "stage": "prospect"}
    mapping = {"email": "email", "employees": "numemployees", "stage": "lifecyclestage"}
    with pytest.raises(InvalidArgument) as caught:
        build_payload(lead, mapping, FIELDS, provider_label="HubSpot")
    assert caught.value.reason == "FIELD_VALUE_INVALID"
    assert {v.field for v in caught.value.field_violations} == {"fields[employees]", "fields[stage]"}
    assert "numemployees" in caught.value.message


def test_an_empty_value_for_a_required_field_is_refused_as_required_field_missing() -> None:
    with pytest.raises(InvalidArgument) as caught:
        build_payload(
            {"email": "  ", "name": "Ada"}, {"email": "email", "name": "firstname"}, FIELDS, provider_label="X"
        )
    assert caught.value.reason == "REQUIRED_FIELD_MISSING"
    assert [(v.field, v.description) for v in caught.value.field_violations] == [
        ("fields[email]", "X requires a value for 'email'")
    ]


def test_a_mapping_target_the_crm_no_longer_has_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        build_payload({"email": "a@b.co", "x": "1"}, {"email": "email", "x": "gone"}, FIELDS, provider_label="HubSpot")
    assert caught.value.field_violations[0].field == "mapping[x]"
    assert "no longer has a field 'gone'" in caught.value.field_violations[0].description


def test_a_select_option_with_a_wire_value_is_written_as_that_value_whichever_way_the_lead_names_it() -> None:
    owner = CrmField(
        name="owner_tier",
        label="Tier",
        type="select",
        options=(FieldOption("gold", "Gold", wire_value=42), FieldOption("silver", "Silver", wire_value=43)),
    )

    assert [coerce_value(text, owner) for text in ("gold", "Gold", "SILVER")] == [42, 42, 43]
    with pytest.raises(ValueError, match="not one of the options \\(gold, silver\\)"):
        coerce_value("42", owner)  # the wire value is the CRM's business, not a name leads may use
