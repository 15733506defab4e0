"""SOQL string literals for untrusted values, and the one query the provider runs.

A lead's email goes into a SOQL ``WHERE`` clause. SOQL has no bind parameters over REST, so each value
is quoted here: inside single quotes, the backslash escapes SOQL defines (``\\\\ \\' \\" \\n \\r \\t \\b \\f``)
plus ``\\uXXXX`` for every other control character. The result is always exactly one string literal:
no input can close the quote early or leave a backslash dangling, so no input can add a condition.
Interpolate values only through ``quote`` / ``string_list``, never with an f-string.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["CONTACTS_BY_EMAIL", "contacts_by_email", "escape", "quote", "string_list"]

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}

#: Oldest first, ties by id: the core picks the first id of an email as *the* contact (deterministic).
CONTACTS_BY_EMAIL = "SELECT Id, Email FROM Contact WHERE Email IN {emails} ORDER BY CreatedDate ASC, Id ASC"


def _needs_unicode_escape(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029)


def escape(value: str) -> str:
    """The body of a SOQL string literal for ``value`` (without the surrounding quotes)."""
    parts: list[str] = []
    for char in value:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            parts.append(escaped)
        elif _needs_unicode_escape(char):
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(char)
    return "".join(parts)


def quote(value: str) -> str:
    """``value`` as one SOQL string literal: ``o'brien@example.com`` → ``'o\\'brien@example.com'``."""
    if not isinstance(value, str):  # a number or None here would be a caller's bug, not a literal
        raise TypeError(f"SOQL string literals are made from str, not {type(value).__name__}")
    return f"'{escape(value)}'"


def string_list(values: Iterable[str]) -> str:
    """A parenthesized list of string literals for ``IN``; ValueError when empty (``IN ()`` is malformed)."""
    literals = [quote(value) for value in values]
    if not literals:
        raise ValueError("an IN list needs at least one value")
    return "(" + ", ".join(literals) + ")"


def contacts_by_email(emails: Sequence[str]) -> str:
    """The query for contacts having any of ``emails`` (Salesforce compares them case-insensitively)."""
    return CONTACTS_BY_EMAIL.format(emails=string_list(emails))
