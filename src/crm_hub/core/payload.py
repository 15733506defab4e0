"""Building a CRM payload from a lead: through the mapping, with each value coerced to its field's type.

Invalid values are refused here, before any write, naming the lead field and the CRM field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from crm_hub.errors import FieldViolation, InvalidArgument
from crm_hub.providers import CrmField

__all__ = ["build_payload", "coerce_value", "required_values_missing"]

_TRUE = frozenset({"true", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "no", "n", "0", "off"})
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def coerce_value(value: str, field: CrmField) -> Any:
    """The lead's string value in the CRM field's type; ValueError with a human reason if it can't be."""
    text = value.strip()
    if field.type == "number":
        if not _NUMBER.fullmatch(text):
            raise ValueError(f"{text[:40]!r} is not a number")
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text[:40]!r} is too large a number")
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if field.type == "boolean":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(f"{text[:40]!r} is not a yes/no value (use true or false)")
    if field.type == "date":
        return _as_date(text).isoformat()
    if field.type == "select":
        for option in field.options:
            if text == option.value:
                return option.written
        for option in field.options:  # be forgiving about case and labels, never about unknown values
            if text.lower() in (option.value.lower(), option.label.lower()):
                return option.written
        allowed = ", ".join(option.value for option in field.options[:10])
        raise ValueError(f"{text[:40]!r} is not one of the options ({allowed})")
    if field.type == "email" and not _EMAIL.fullmatch(text):
        raise ValueError(f"{text[:80]!r} is not an email address")
    return text


def _as_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a date (use YYYY-MM-DD)") from None
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def build_payload(
    lead_fields: Mapping[str, str],
    mapping: Mapping[str, str],
    fields: list[CrmField],
    *,
    provider_label: str,
    check_required: bool = True,
) -> dict[str, Any]:
    """CRM properties for the lead. Empty lead values are left out (sending "" would clear CRM data).

    Invalid values are refused (FIELD_VALUE_INVALID). Missing required values too (REQUIRED_FIELD_MISSING),
    unless ``check_required`` is False: the sync checks them only when it is about to create a contact —
    updating an existing one does not need them (see ``required_values_missing``).
    """
    by_name = {field.name: field for field in fields}
    payload: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    for lead_field, target in sorted(mapping.items()):
        field = by_name.get(target)
        if field is None:
            violations.append(
                FieldViolation(f"mapping[{lead_field}]", f"{provider_label} no longer has a field {target!r}")
            )
            continue
        value = lead_fields.get(lead_field, "")
        if not value.strip():
            continue
        try:
            payload[target] = coerce_value(value, field)
        except ValueError as error:
            violations.append(
                FieldViolation(f"fields[{lead_field}]", f"for {provider_label} field {target!r}: {error}")
            )
    if violations:
        raise InvalidArgument(
            "The lead cannot be synced: " + "; ".join(f"{v.field}: {v.description}" for v in violations[:5]) + ".",
            reason="FIELD_VALUE_INVALID",
            field_violations=violations,
        )
    if check_required and (missing := required_values_missing(payload, mapping, fields, provider_label=provider_label)):
        raise missing
    return payload


def required_values_missing(
    payload: Mapping[str, Any], mapping: Mapping[str, str], fields: list[CrmField], *, provider_label: str
) -> InvalidArgument | None:
    """The error to raise if a contact were created from ``payload`` without a required field, or None."""
    violations = []
    for field in fields:
        if field.required and field.writable and field.name not in payload:
            feeders = [lead for lead, target in mapping.items() if target == field.name]
            where = f"fields[{feeders[0]}]" if feeders else "mapping"
            violations.append(FieldViolation(where, f"{provider_label} requires a value for {field.name!r}"))
    if not violations:
        return None
    return InvalidArgument(
        "The lead cannot be synced: " + "; ".join(f"{v.field}: {v.description}" for v in violations[:5]) + ".",
        reason="REQUIRED_FIELD_MISSING",
        field_violations=violations,
    )
