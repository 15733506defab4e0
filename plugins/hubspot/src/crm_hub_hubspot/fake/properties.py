"""The fake account's contact properties (hand-written from crm-apis.md) and HubSpot's value rules.

Values are validated as HubSpot does for the v3 objects API and stored as strings:
``number`` plain decimals, ``bool`` ``true``/``false``, ``enumeration`` one of the option values (``;``
between several for checkboxes), ``date`` ``YYYY-MM-DD`` or epoch milliseconds at midnight UTC,
``datetime`` ISO 8601 or epoch milliseconds, and ``""`` clears any property. Each failure is a
``PropertyError`` with HubSpot's error code (INVALID_EMAIL, INVALID_INTEGER, INVALID_OPTION, …).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

__all__ = ["CONTACT_PROPERTIES", "PropertyError", "contact_property", "format_instant", "normalize_values"]

_CREATED_AT = "2019-10-30T03:30:17.883Z"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")
_MIDNIGHT_MS = 86_400_000


@dataclass(frozen=True)
class PropertyError:
    """One invalid property value, as HubSpot reports it (``error`` code, ``name``, ``message``)."""

    name: str
    code: str
    message: str


def contact_property(
    name: str,
    label: str,
    type: str,
    field_type: str,
    *,
    group: str = "contactinformation",
    description: str = "",
    options: Iterable[tuple[str, str] | tuple[str, str, bool]] = (),
    hubspot_defined: bool = True,
    unique: bool = False,
    hidden: bool = False,
    calculated: bool = False,
    read_only: bool = False,
    archived: bool = False,
    display_order: int = -1,
) -> dict[str, Any]:
    """A Property object as ``GET /crm/v3/properties/contacts`` returns it. Options: (value, label[, hidden])."""
    option_list = []
    for order, option in enumerate(options):
        value, option_label, *rest = option
        option_list.append(
            {"label": option_label, "value": value, "displayOrder": order, "hidden": bool(rest and rest[0])}
        )
    return {
        "updatedAt": _CREATED_AT,
        "createdAt": _CREATED_AT,
        "name": name,
        "label": label,
        "type": type,
        "fieldType": field_type,
        "description": description,
        "groupName": group,
        "options": option_list,
        "displayOrder": display_order,
        "calculated": calculated,
        "externalOptions": False,
        "hasUniqueValue": unique,
        "hidden": hidden,
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only or calculated,
        },
        "formField": not (read_only or calculated or hidden),
        "archived": archived,
    }


_LIFECYCLE_STAGES = (
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
)
_LEAD_STATUSES = (
    ("NEW", "New"),
    ("OPEN", "Open"),
    ("IN_PROGRESS", "In Progress"),
    ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"),
    ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
    ("CONNECTED", "Connected"),
    ("BAD_TIMING", "Bad Timing"),
    ("LEGACY_IMPORTED", "Imported (legacy)", True),  # a hidden option: still accepted, not offered
)

#: A realistic, hand-written slice of a portal's contact properties.
CONTACT_PROPERTIES: tuple[dict[str, Any], ...] = (
    contact_property(
        "email", "Email", "string", "text", unique=True, description="A contact's email address", display_order=3
    ),
    contact_property(
        "firstname", "First Name", "string", "text", description="A contact's first name", display_order=0
    ),
    contact_property("lastname", "Last Name", "string", "text", description="A contact's last name", display_order=1),
    contact_property(
        "company", "Company Name", "string", "text", description="Name of the contact's company", display_order=5
    ),
    contact_property("phone", "Phone Number", "string", "phonenumber", description="A contact's primary phone number"),
    contact_property(
        "hs_whatsapp_phone_number", "WhatsApp Phone Number", "phone_number", "phonenumber", group="conversations"
    ),
    contact_property("website", "Website URL", "string", "text", description="Associated company website"),
    contact_property(
        "message", "Message", "string", "textarea", group="conversioninformation", description="A free-form message"
    ),
    contact_property(
        "lifecyclestage",
        "Lifecycle Stage",
        "enumeration",
        "radio",
        description="The qualification of contacts to sales readiness",
        options=_LIFECYCLE_STAGES,
    ),
    contact_property(
        "hs_lead_status",
        "Lead Status",
        "enumeration",
        "radio",
        group="sales_properties",
        description="The contact's sales, prospecting or outreach status",
        options=_LEAD_STATUSES,
    ),
    contact_property(
        "numemployees",
        "Number of Employees",
        "number",
        "number",
        group="companyinformation",
        description="The number of company employees",
    ),
    contact_property(
        "date_of_birth",
        "Date of birth",
        "date",
        "date",
        description="The contact's date of birth",
        hubspot_defined=False,
    ),
    contact_property(
        "newsletter_opt_in",
        "Newsletter opt-in",
        "bool",
        "booleancheckbox",
        description="Whether the contact asked for the newsletter",
        options=(("true", "Yes"), ("false", "No")),
        hubspot_defined=False,
    ),
    contact_property(
        "createdate", "Create Date", "datetime", "date", description="When the contact was created", read_only=True
    ),
    contact_property(
        "lastmodifieddate", "Last Modified Date", "datetime", "date", description="Most recent change", read_only=True
    ),
    contact_property(
        "hs_object_id", "Record ID", "number", "number", description="The unique ID for this record", read_only=True
    ),
    contact_property(
        "hs_email_domain",
        "Email Domain",
        "string",
        "text",
        group="emailinformation",
        description="The domain of the contact's email address",
        calculated=True,
    ),
    contact_property(
        "fax_number", "Fax Number", "string", "text", description="An archived custom property", archived=True
    ),
    contact_property(
        "hs_legacy_import_id",
        "Legacy import id",
        "string",
        "text",
        description="Internal: kept for old imports",
        hidden=True,
    ),
)


def normalize_values(
    definitions: Mapping[str, Mapping[str, Any]], values: Mapping[str, Any]
) -> tuple[dict[str, str], list[PropertyError]]:
    """The values as HubSpot would store them (strings), and every error, in the input's order."""
    stored: dict[str, str] = {}
    errors: list[PropertyError] = []
    for name, raw in values.items():
        definition = definitions.get(name)
        if definition is None or definition.get("archived"):
            errors.append(PropertyError(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
            continue
        if definition.get("calculated"):
            errors.append(
                PropertyError(name, "READ_ONLY_VALUE", f'"{name}" is a calculated property; its value cannot be set.')
            )
            continue
        if definition["modificationMetadata"]["readOnlyValue"]:
            errors.append(
                PropertyError(name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')
            )
            continue
        value = _as_text(raw)
        if value is None:
            errors.append(PropertyError(name, "INVALID_PROPERTY_VALUE", f"{raw!r} is not a valid property value."))
            continue
        if value == "":
            stored[name] = ""  # "" clears the property
            continue
        result = _normalize(name, definition, value)
        if isinstance(result, PropertyError):
            errors.append(result)
        else:
            stored[name] = result
    return stored, errors


def _as_text(raw: Any) -> str | None:
    """JSON scalars become strings the way HubSpot stores them; objects and arrays are refused."""
    if raw is None:
        return ""
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(int(raw)) if isinstance(raw, float) and raw.is_integer() else str(raw)
    if isinstance(raw, str):
        return raw
    return None


def _normalize(name: str, definition: Mapping[str, Any], value: str) -> str | PropertyError:
    kind = definition["type"]
    if name == "email":
        if not _EMAIL.match(value):
            return PropertyError(name, "INVALID_EMAIL", f"Email address {value} is invalid")
        return value.lower()  # HubSpot keeps emails lowercased
    if kind == "number":
        if not _NUMBER.match(value):
            return PropertyError(name, "INVALID_INTEGER", f"{value} was not a valid number.")
        return value
    if kind == "bool":
        if value.lower() not in ("true", "false"):
            return PropertyError(name, "INVALID_BOOLEAN", f"{value} was not a valid boolean.")
        return value.lower()
    if kind == "enumeration":
        allowed = [str(option["value"]) for option in definition["options"]]
        chosen = value.split(";") if definition["fieldType"] == "checkbox" else [value]
        if any(choice not in allowed for choice in chosen):
            return PropertyError(
                name, "INVALID_OPTION", f"{value} was not one of the allowed options: [{', '.join(allowed)}]"
            )
        return value
    if kind == "date":
        return _date_value(name, value)
    if kind == "datetime":
        return _datetime_value(name, value)
    return value


def _date_value(name: str, value: str) -> str | PropertyError:
    if value.isdigit():
        millis = int(value)
        if millis % _MIDNIGHT_MS:
            moment = datetime.fromtimestamp(millis / 1000, UTC)
            return PropertyError(
                name,
                "INVALID_DATE",
                f"{value} is at {moment.hour}:{moment.minute}:{moment.second}.{millis % 1000} UTC, not midnight!",
            )
        return datetime.fromtimestamp(millis / 1000, UTC).date().isoformat()
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value).isoformat()
    except ValueError:
        return PropertyError(
            name, "INVALID_DATE", f"{value} is not a valid date; use YYYY-MM-DD or epoch milliseconds at midnight UTC."
        )


def _datetime_value(name: str, value: str) -> str | PropertyError:
    try:
        if value.isdigit():
            moment = datetime.fromtimestamp(int(value) / 1000, UTC)
        else:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            moment = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return PropertyError(name, "INVALID_LONG", f"{value} was not a valid long.")
    return format_instant(moment)


def format_instant(moment: datetime) -> str:
    """HubSpot's timestamp format: ``2020-02-29T03:30:17.000Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
