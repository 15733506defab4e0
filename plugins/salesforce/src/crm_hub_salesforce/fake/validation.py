"""Salesforce's rules for Contact values, as the fake applies them to creates and updates.

Two stages, as in Salesforce:

1. Deserializing the JSON (``deserialize``): an unknown field is ``INVALID_FIELD`` and a value of the wrong
   JSON type (``"abc"`` for a number, ``"yes"`` for a boolean, ``"2024-13-01"`` for a date) is
   ``JSON_PARSER_ERROR``. Both fail the whole request (HTTP 400), before any record is saved.
   Scalars are coerced the way Salesforce's parser does: numbers and booleans into text fields, numeric
   strings into number fields, ``"true"``/``"false"`` into booleans.
2. Validating each record (``validate``): read-only fields (INVALID_FIELD_FOR_INSERT_UPDATE), text length
   (STRING_TOO_LONG), email syntax (INVALID_EMAIL_ADDRESS), restricted picklists
   (INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST), numeric range (NUMBER_OUTSIDE_VALID_RANGE), id syntax of
   references (MALFORMED_ID) and required fields (REQUIRED_FIELD_MISSING). These are per-record errors.

``datetime`` fields also take a plain ``yyyy-MM-dd`` (stored as midnight UTC) — what crm_hub's core sends
for fields it calls ``date`` [UNVERIFIED against a real org].
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from crm_hub_salesforce.fake.ids import normalize_id

__all__ = ["RecordError", "RequestError", "deserialize", "format_datetime", "validate"]

# RFC 5322 "atext" local parts (so o'brien@ is fine) and dotted host names with a top-level domain.
_EMAIL = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?Z?$")
_TEXT = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "multipicklist", "combobox"})
_TEXT_LIKE = _TEXT | {"encryptedstring", "reference", "id"}
_NUMBERS = frozenset({"int", "long", "double", "currency", "percent"})
_KEY_PREFIXES = {"Account": "001", "Contact": "003", "User": "005", "Lead": "00Q"}


@dataclass(frozen=True)
class RecordError:
    """One error of one record: Salesforce's code, message and the fields concerned."""

    code: str
    message: str
    fields: tuple[str, ...] = ()
    #: Only for DUPLICATES_DETECTED on the single-record endpoints: the ``duplicateResut`` object.
    duplicate_result: Mapping[str, Any] | None = field(default=None, compare=False)

    def collection_json(self) -> dict[str, Any]:
        """In an sObject Collections result: ``statusCode``, no duplicate details."""
        return {"statusCode": self.code, "message": self.message, "fields": list(self.fields)}

    def rest_json(self) -> dict[str, Any]:
        """In a top-level REST error array: ``errorCode``."""
        body: dict[str, Any] = {}
        if self.duplicate_result is not None:
            body["duplicateResut"] = dict(self.duplicate_result)  # sic: Salesforce's spelling
        body.update({"errorCode": self.code, "message": self.message, "fields": list(self.fields)})
        return body


class RequestError(Exception):
    """A request Salesforce refuses whole (HTTP 400 with ``[{"message", "errorCode"}]``)."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def format_datetime(moment: datetime) -> str:
    """Salesforce's datetime form in answers: ``2013-05-20T20:49:32.000+0000``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def deserialize(record: Mapping[str, Any], fields: Mapping[str, Mapping[str, Any]], sobject: str) -> dict[str, Any]:
    """``record``'s values keyed by canonical field name (``fields`` is keyed by lowercase name)."""
    values: dict[str, Any] = {}
    for name, value in record.items():
        described = fields.get(name.lower())
        if described is None:
            raise RequestError("INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}")
        canonical = str(described["name"])
        if not described["createable"] and not described["updateable"]:
            values[canonical] = value  # refused per record (INVALID_FIELD_FOR_INSERT_UPDATE), whatever its type
            continue
        values[canonical] = _parse(value, described)
    return values


def _parser_error(value: Any, sf_type: str) -> RequestError:
    token = {
        bool: "VALUE_TRUE" if value is True else "VALUE_FALSE",
        int: "VALUE_NUMBER_INT",
        float: "VALUE_NUMBER_FLOAT",
        str: "VALUE_STRING",
        list: "START_ARRAY",
        dict: "START_OBJECT",
    }.get(type(value), "VALUE_STRING")
    shown = value if isinstance(value, str | int | float | bool) else token
    return RequestError(
        "JSON_PARSER_ERROR",
        f"Cannot deserialize instance of {sf_type} from {token} value {shown} or request may be missing a "
        "required field at [line:1, column:1]",
    )


def _parse(value: Any, described: Mapping[str, Any]) -> Any:
    sf_type = str(described["type"])
    if value is None:
        return None
    if sf_type in _TEXT_LIKE:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            return str(value)
        raise _parser_error(value, "string")
    if sf_type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise _parser_error(value, "boolean")
    if sf_type in _NUMBERS:
        number: int | float
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _parser_error(value, "double")
        if isinstance(value, str):
            if not _NUMBER.match(value.strip()):
                raise _parser_error(value, "double")
            number = float(value)
        else:
            number = value
        if isinstance(number, float) and not math.isfinite(number):
            raise _parser_error(value, "double")
        if sf_type in ("int", "long"):
            if float(number) != int(number):
                raise _parser_error(value, "int")
            return int(number)
        return number
    if sf_type == "date":
        if isinstance(value, str) and _DATE.match(value):
            try:
                return date.fromisoformat(value).isoformat()
            except ValueError:
                pass
        raise _parser_error(value, "date")
    if sf_type == "datetime":
        if isinstance(value, str):
            parsed = _parse_datetime(value)
            if parsed is not None:
                return format_datetime(parsed)
        raise _parser_error(value, "datetime")
    if sf_type == "time":
        if isinstance(value, str) and _TIME.match(value):
            return value
        raise _parser_error(value, "time")
    return value


def _parse_datetime(value: str) -> datetime | None:
    try:
        if _DATE.match(value):
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        if not _DATETIME.match(value):
            return None
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def validate(
    values: Mapping[str, Any],
    fields: Mapping[str, Mapping[str, Any]],
    *,
    creating: bool,
) -> list[RecordError]:
    """The per-record errors of ``values`` (canonical names; ``fields`` keyed by lowercase name)."""
    verb = "create" if creating else "update"
    read_only = [name for name in values if not fields[name.lower()]["createable" if creating else "updateable"]]
    if read_only:
        listed = ", ".join(read_only)
        return [
            RecordError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to {verb} fields: {listed}. Please check the security settings of this field and verify "
                "that it is read/write for your profile or permission set.",
                tuple(read_only),
            )
        ]
    errors: list[RecordError] = []
    for name, value in values.items():
        error = _value_error(value, fields[name.lower()])
        if error is not None:
            errors.append(error)
    missing = [
        str(described["name"])
        for described in fields.values()
        if not described["nillable"]
        and described["createable" if creating else "updateable"]
        and described["type"] != "boolean"
        # on create: every such field without a default; on update: those the update sets
        and ((creating and not described["defaultedOnCreate"]) or str(described["name"]) in values)
        and values.get(str(described["name"])) in (None, "")
    ]
    if missing:
        errors.append(
            RecordError(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", tuple(missing)
            )
        )
    return errors


def _value_error(value: Any, described: Mapping[str, Any]) -> RecordError | None:
    if value is None:
        return None
    name, label, sf_type = str(described["name"]), str(described["label"]), str(described["type"])
    if sf_type in _TEXT_LIKE and described.get("length") and len(str(value)) > int(described["length"]):
        shown = str(value) if len(str(value)) <= 40 else str(value)[:37] + "..."
        return RecordError(
            "STRING_TOO_LONG", f"{label}: data value too large: {shown} (max length={described['length']})", (name,)
        )
    if sf_type == "email" and value != "" and not _EMAIL.match(str(value)):
        return RecordError("INVALID_EMAIL_ADDRESS", f"{label}: invalid email address: {value}", (name,))
    if sf_type in ("picklist", "multipicklist") and described.get("restrictedPicklist") and value != "":
        allowed = {str(option["value"]) for option in described.get("picklistValues") or [] if option.get("active")}
        chosen = str(value).split(";") if sf_type == "multipicklist" else [str(value)]
        bad = next((choice for choice in chosen if choice not in allowed), None)
        if bad is not None:
            return RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{label}: bad value for restricted picklist field: {bad}",
                (name,),
            )
    if sf_type in _NUMBERS and described.get("precision"):
        integer_digits = len(str(int(abs(float(value))))) if abs(float(value)) >= 1 else 0
        if integer_digits > int(described["precision"]) - int(described.get("scale") or 0):
            return RecordError(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{label}: value outside of valid range on numeric field: {value}",
                (name,),
            )
    if sf_type == "reference" and value != "":
        targets = [str(target) for target in described.get("referenceTo") or []]
        prefixes: list[str | None] = [_KEY_PREFIXES[target] for target in targets if target in _KEY_PREFIXES]
        if not any(normalize_id(str(value), prefix) for prefix in prefixes or [None]):
            return RecordError("MALFORMED_ID", f"{label}: id value of incorrect type: {value}", (name,))
    return None
