"""Validating a field mapping before it is saved: every problem named, field by field."""

from __future__ import annotations

import pytest

from crm_hub.core.fields import validate_mapping
from crm_hub.errors import MappingInvalid
from crm_hub.providers import CrmField

FIELDS = [
    CrmField(name="email", label="Email", type="email", required=True),
    CrmField(name="firstname", label="First name", type="string"),
    CrmField(name="company", label="Company", type="string"),
    CrmField(name="numemployees", label="Employees", type="number"),
    CrmField(name="score", label="Score", type="number", writable=False),
    CrmField(name="LastName", label="Last name", type="string", required=True),
]


def violations(mapping: dict[str, str]) -> dict[str, str]:
    with pytest.raises(MappingInvalid) as caught:
        validate_mapping(mapping, FIELDS, provider_label="CRM")
    assert caught.value.reason == "MAPPING_INVALID"
    return {v.field: v.description for v in caught.value.field_violations}


def test_a_valid_mapping_passes() -> None:
    validate_mapping({"email": "email", "name": "firstname", "last": "LastName"}, FIELDS, provider_label="CRM")


def test_unknown_target_is_named() -> None:
    found = violations({"email": "email", "last": "LastName", "company": "companyname"})
    assert found == {"mapping[company]": "'companyname' is not a CRM contact field"}


def test_read_only_target_is_refused() -> None:
    found = violations({"email": "email", "last": "LastName", "score": "score"})
    assert found == {"mapping[score]": "CRM field 'score' is read-only"}


def test_two_lead_fields_feeding_one_target_are_refused() -> None:
    found = violations({"email": "email", "last": "LastName", "name": "firstname", "nickname": "firstname"})
    assert found == {"mapping[nickname]": "'firstname' is already fed by lead field 'name'"}


def test_an_email_cannot_feed_a_number_field() -> None:
    found = violations({"email": "numemployees", "last": "LastName", "work_email": "email"})
    assert found == {"mapping[email]": "a lead's email cannot go into 'numemployees', a number field"}


def test_a_required_field_left_unfed_is_refused() -> None:
    found = violations({"email": "email", "name": "firstname"})
    assert found == {"mapping": "CRM requires 'LastName' (Last name); map a lead field onto it"}


def test_an_empty_mapping_is_refused() -> None:
    assert violations({}) == {"mapping": "map at least one lead field onto a CRM field"}
