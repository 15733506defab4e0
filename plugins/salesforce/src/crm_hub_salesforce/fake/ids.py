"""Salesforce record ids: 15 case-sensitive characters plus a 3-character case-insensitive checksum.

The 15 characters are a 3-character key prefix (``003`` Contact, ``001`` Account, ``005`` User, ``00D``
organization), a 2-character pod, a reserved ``0`` and a 9-character base-62 number. The suffix encodes,
for each 5-character block, which characters are upper case, so an 18-character id survives
case-insensitive systems.
"""

from __future__ import annotations

import re

__all__ = ["checksum", "make_id", "normalize_id"]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_ID15 = re.compile(r"^[0-9A-Za-z]{15}$")
_POD = "5g"


def checksum(id15: str) -> str:
    """The 3-character suffix of a 15-character id."""
    suffix = ""
    for block in range(3):
        bits = 0
        for position, char in enumerate(id15[block * 5 : block * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += _SUFFIX[bits]
    return suffix


def make_id(prefix: str, number: int) -> str:
    """The 18-character id of record ``number`` with key prefix ``prefix`` (e.g. ``003``)."""
    digits = ""
    while True:
        number, remainder = divmod(number, 62)
        digits = _BASE62[remainder] + digits
        if number == 0:
            break
    id15 = f"{prefix}{_POD}0{digits.rjust(9, '0')}"
    if len(id15) != 15:
        raise ValueError("record number too large for a Salesforce id")
    return id15 + checksum(id15)


def normalize_id(value: str, prefix: str | None = None) -> str | None:
    """The 18-character form of a 15- or 18-character id (checksum verified), or None if malformed."""
    if len(value) == 18 and _ID15.match(value[:15]) and value[15:].upper() == checksum(value[:15]):
        id15 = value[:15]
    elif len(value) == 15 and _ID15.match(value):
        id15 = value
    else:
        return None
    if prefix is not None and not id15.startswith(prefix):
        return None
    return id15 + checksum(id15)
