"""Salesforce's failures, classified into crm_hub's provider errors.

    Salesforce answer                                      raised / returned
    ─────────────────────────────────────────────────────  ───────────────────────────────────────────────
    401 INVALID_SESSION_ID (any 401)                       AuthExpired: the core refreshes and retries once
    400 invalid_grant at /services/oauth2/token            RefreshRejected (refresh) / Rejected OAUTH_CODE_INVALID
    400 invalid_client(_id) at the token endpoint          Rejected OAUTH_CLIENT_INVALID (fix the configuration)
    403 REQUEST_LIMIT_EXCEEDED "TotalRequests …"           DailyApiLimitReached (a RateLimited, retryable False)
    403 REQUEST_LIMIT_EXCEEDED "ConcurrentPerOrgLongTxn …" RateLimited (transient: retried with backoff)
    429                                                    RateLimited(retry_after = Retry-After, if sent)
    404 NOT_FOUND                                          Rejected NOT_FOUND
    400 REQUIRED_FIELD_MISSING                             Rejected REQUIRED_FIELD_MISSING, a FieldViolation per field
    400 INVALID_FIELD_FOR_INSERT_UPDATE                    Rejected FIELD_NOT_WRITABLE, a FieldViolation per field
    400 INVALID_EMAIL_ADDRESS, STRING_TOO_LONG, …          Rejected FIELD_VALUE_INVALID, a FieldViolation per field
    400 DUPLICATES_DETECTED                                Rejected DUPLICATE_CONTACT, metadata contact_id (+ others)
    400 MALFORMED_QUERY, INVALID_FIELD, other codes        Rejected with the errorCode as reason
    5xx (500 UNKNOWN_EXCEPTION, 503, …)                    Unavailable
    timeouts, refused connections                          Unavailable

Per-record errors of sObject Collections (``statusCode`` instead of ``errorCode``) are classified the same
way by ``record_error``. Every error keeps Salesforce's code in ``metadata["salesforce_error_code"]``.
Messages are written for a person, quote Salesforce's words where they help, and never contain a token
or the client secret (``secrets`` are scrubbed from anything Salesforce echoes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
from crm_hub.errors import (
    AccessDenied,
    AuthExpired,
    FieldViolation,
    ProviderError,
    RateLimited,
    RefreshRejected,
    Rejected,
    Unavailable,
)
from crm_hub.providers import DUPLICATE_CONTACT, http

__all__ = [
    "PROVIDER",
    "DailyApiLimitReached",
    "classify",
    "classify_oauth",
    "classify_transport",
    "duplicate_match_ids",
    "duplicate_rejection",
    "parse_limit_info",
    "record_error",
]

PROVIDER = "salesforce"
LABEL = "Salesforce"
_LIMIT_INFO = re.compile(r"(?:^|[\s,])api-usage=(\d+)/(\d+)")

#: Codes that say one of the record's values is wrong (the ``fields`` name which).
_VALUE_CODES = frozenset(
    {
        "INVALID_EMAIL_ADDRESS",
        "STRING_TOO_LONG",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "FIELD_INTEGRITY_EXCEPTION",
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "NUMBER_OUTSIDE_VALID_RANGE",
        "INVALID_FIELD_VALUE",
        "MALFORMED_ID",
        "INVALID_CROSS_REFERENCE_KEY",
        "INVALID_ID_FIELD",
        "JSON_PARSER_ERROR",
    }
)
#: A record that is gone (or never was), when the code names no field of it.
_MISSING_RECORD_CODES = frozenset(
    {"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY", "MALFORMED_ID", "INVALID_ID_FIELD"}
)


class DailyApiLimitReached(RateLimited):
    """The org's rolling 24-hour API allocation is used up (403 REQUEST_LIMIT_EXCEEDED, no Retry-After).

    ``retryable`` is False: the core's retry policy skips it, because hammering a daily limit every few
    seconds only burns what the org gets back. Syncs work again once the allocation frees up.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str = PROVIDER,
        status: int | None = 403,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, retry_after=None, provider=provider, status=status, metadata=metadata)
        self.retryable = False  # read by the core's retry policy


def classify(
    response: httpx.Response,
    *,
    secrets: Iterable[str | None] = (),
    api_usage: tuple[int, int] | None = None,
) -> ProviderError:
    """The provider error for a non-success answer from Salesforce's REST API (the caller raises it)."""
    secrets = list(secrets)
    status = response.status_code
    first = _first_error(http.json_body(response))
    code = http.text(first.get("errorCode")) or http.text(first.get("statusCode"))
    message = http.scrub(http.text(first.get("message")), secrets)
    metadata = {"salesforce_error_code": code} if code else {}

    if status == 401:
        return AuthExpired(
            http.sentence(f"Salesforce no longer accepts the session ({code or 'HTTP 401'})", message),
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if code == "REQUEST_LIMIT_EXCEEDED" or status == 429:
        return _rate_limited(response, code, message, metadata, api_usage)
    if status >= 500:
        return http.classify_status(response, provider=PROVIDER, label=LABEL, detail=message, metadata=metadata)
    if status == 404 or code == "NOT_FOUND":
        return Rejected(
            http.sentence("Salesforce has no such record or resource", message),
            reason="NOT_FOUND",
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if code:
        return _rejection(code, message, _fields(first), status, metadata, first, secrets)
    return Rejected(
        http.sentence(f"Salesforce refused the request (HTTP {status})", message),
        provider=PROVIDER,
        status=status,
        metadata=metadata,
    )


def record_error(
    errors: Sequence[Mapping[str, Any]] | Any,
    *,
    secrets: Iterable[str | None] = (),
    updating: bool = False,
    duplicate_ids: Sequence[str] = (),
) -> Rejected:
    """The error of one record of an sObject Collections answer (its ``errors`` array; 200 overall).

    Several errors of one record become one Rejected: the first one's code, every named field.
    ``duplicate_ids`` name the existing contacts of a DUPLICATES_DETECTED refusal that names none itself.
    """
    entries = [error for error in errors if isinstance(error, Mapping)] if isinstance(errors, list) else []
    if not entries:
        return Rejected("Salesforce did not save this record and gave no reason.", provider=PROVIDER, status=400)
    first = entries[0]
    code = http.text(first.get("statusCode")) or http.text(first.get("errorCode")) or "UNKNOWN_EXCEPTION"
    secret_list = list(secrets)
    if updating and code in _MISSING_RECORD_CODES and set(_fields(first)) <= {"Id"}:
        return Rejected(
            http.sentence("Salesforce has no such contact", http.scrub(http.text(first.get("message")), secret_list)),
            reason="NOT_FOUND",
            provider=PROVIDER,
            status=404,
            metadata={"salesforce_error_code": code},
        )
    if code == "DUPLICATES_DETECTED":
        message = http.scrub(http.text(first.get("message")), secret_list)
        return duplicate_rejection(message, duplicate_match_ids(first) or list(duplicate_ids), code=code)
    if len(entries) == 1:
        message = http.scrub(http.text(first.get("message")), secret_list)
        return _rejection(code, message, _fields(first), 400, {"salesforce_error_code": code}, first, secret_list)
    # Several problems with one record: report them all, so one round of fixes is enough.
    fields: list[str] = []
    descriptions: list[str] = []
    for entry in entries:
        fields.extend(name for name in _fields(entry) if name not in fields)
        text = http.scrub(http.text(entry.get("message")), secret_list)
        if text:
            descriptions.append(text.rstrip("."))
    violations = _violations(entries, secret_list)
    return Rejected(
        http.truncate(f"Salesforce rejected the record: {'; '.join(descriptions) or code}."),
        reason=_reason_for(code, fields),
        field_violations=violations,
        provider=PROVIDER,
        status=400,
        metadata={"salesforce_error_code": code},
    )


def classify_oauth(response: httpx.Response, *, refreshing: bool, secrets: Iterable[str | None] = ()) -> ProviderError:
    """A failed call to ``/services/oauth2/token``: ``{"error": …, "error_description": …}``."""
    body = http.json_body(response)
    payload = body if isinstance(body, Mapping) else {}
    oauth_error = http.text(payload.get("error"))
    description = http.scrub(http.text(payload.get("error_description")), secrets)
    status = response.status_code
    metadata = {"oauth_error": oauth_error} if oauth_error else {}
    if status >= 500:
        return Unavailable(
            f"Salesforce's login service is unavailable right now (HTTP {status}); try again shortly.",
            retry_after=http.parse_retry_after(response.headers.get("Retry-After")),
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if oauth_error in ("invalid_grant", "inactive_user", "inactive_org"):
        if refreshing:
            return RefreshRejected(
                http.sentence("Salesforce refused the refresh token", description),
                provider=PROVIDER,
                status=status,
                metadata=metadata,
            )
        return Rejected(
            http.sentence("Salesforce refused the authorization code", description),
            reason="OAUTH_CODE_INVALID",
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if oauth_error in ("invalid_client_id", "invalid_client", "redirect_uri_mismatch", "unauthorized_client"):
        # The service's own connected app is set up wrongly: reconnecting would not help, the config does.
        return AccessDenied(
            http.sentence(
                "Salesforce does not accept this service's connected app (check SALESFORCE_CLIENT_ID, "
                "SALESFORCE_CLIENT_SECRET and SALESFORCE_REDIRECT_URL)",
                description,
            ),
            reason="OAUTH_CLIENT_INVALID",
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if oauth_error == "rate_limit_exceeded" or status == 429:
        return RateLimited(
            "Salesforce's login service asks us to slow down; try again shortly.",
            retry_after=http.parse_retry_after(response.headers.get("Retry-After")),
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    return Rejected(
        http.sentence(
            f"Salesforce's login service refused the request ({oauth_error or f'HTTP {status}'})", description
        ),
        reason="OAUTH_REQUEST_INVALID",
        provider=PROVIDER,
        status=status,
        metadata=metadata,
    )


def classify_transport(error: Exception) -> Unavailable:
    """A request that got no HTTP answer: timed out, refused, reset. Never quotes the URL."""
    return http.classify_transport(error, provider=PROVIDER, label=LABEL)


def parse_limit_info(value: str | None) -> tuple[int, int] | None:
    """``(used, limit)`` from ``Sforce-Limit-Info: api-usage=10018/100000`` (other entries ignored)."""
    if not value:
        return None
    match = _LIMIT_INFO.search(value)
    return (int(match.group(1)), int(match.group(2))) if match else None


def duplicate_match_ids(error: Mapping[str, Any]) -> list[str]:
    """The ids a DUPLICATES_DETECTED error names, in Salesforce's order.

    The single-record endpoints put them under ``duplicateResut`` (sic; ``duplicateResult`` is read too)
    → ``matchResults[].matchRecords[].record.Id``. sObject Collections' per-record errors carry none.
    """
    result = error.get("duplicateResut") or error.get("duplicateResult")
    ids: list[str] = []
    if not isinstance(result, Mapping):
        return ids
    for match in http.mappings(result.get("matchResults")):
        for record in http.mappings(match.get("matchRecords")):
            found = record.get("record")
            record_id = found.get("Id") if isinstance(found, Mapping) else None
            if isinstance(record_id, str) and record_id and record_id not in ids:
                ids.append(record_id)
    return ids


def duplicate_rejection(message: str, ids: Sequence[str], *, code: str = "DUPLICATES_DETECTED") -> Rejected:
    """Rejected DUPLICATE_CONTACT; ``contact_id`` is the first id, ``other_contact_ids`` the rest."""
    metadata = {"salesforce_error_code": code}
    if ids:
        metadata["contact_id"] = ids[0]
        if len(ids) > 1:
            metadata["other_contact_ids"] = ",".join(ids[1:])
    detail = f" (id {ids[0]})" if ids else ""
    return Rejected(
        http.sentence(f"Salesforce's duplicate rules refused the contact{detail}", message),
        reason=DUPLICATE_CONTACT,
        provider=PROVIDER,
        status=400,
        metadata=metadata,
    )


# -- helpers ---------------------------------------------------------------------------------------


def _rate_limited(
    response: httpx.Response,
    code: str,
    message: str,
    metadata: dict[str, str],
    api_usage: tuple[int, int] | None,
) -> RateLimited:
    if code == "REQUEST_LIMIT_EXCEEDED" and "concurrent" not in message.lower():
        usage = api_usage or parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            metadata = {**metadata, "api_usage": f"{usage[0]}/{usage[1]}"}
        counted = f" ({usage[0]:,} of {usage[1]:,} requests in the last 24 hours)" if usage else ""
        return DailyApiLimitReached(
            f"The Salesforce org's daily API request limit is reached{counted}. Syncs resume when the rolling "
            "24-hour allocation frees up, or after the org's limit is raised; retrying now would not help.",
            status=response.status_code,
            metadata=metadata,
        )
    return RateLimited(
        http.sentence("Salesforce asks us to slow down", message),
        retry_after=http.parse_retry_after(response.headers.get("Retry-After")),
        provider=PROVIDER,
        status=response.status_code,
        metadata=metadata,
    )


def _rejection(
    code: str,
    message: str,
    fields: list[str],
    status: int,
    metadata: dict[str, str],
    error: Mapping[str, Any],
    secrets: Iterable[str | None],
) -> Rejected:
    if code == "DUPLICATES_DETECTED":
        return duplicate_rejection(message, duplicate_match_ids(error), code=code)
    reason = _reason_for(code, fields)
    violations = _violations([error], secrets)
    if reason == "MALFORMED_QUERY":
        # Salesforce quotes the query and points at the fault; its last line says what is wrong.
        lines = [line for line in message.splitlines() if line.strip()]
        return Rejected(
            http.sentence(
                "Salesforce refused the contact lookup as malformed SOQL (a crm_hub bug)", lines[-1] if lines else ""
            ),
            reason=reason,
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if reason == "REQUIRED_FIELD_MISSING" and fields:
        return Rejected(
            f"Salesforce requires a value for {', '.join(fields)}.",
            reason=reason,
            field_violations=violations,
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    lead = {
        "REQUIRED_FIELD_MISSING": "Salesforce requires values the record lacks",
        "FIELD_NOT_WRITABLE": "Salesforce does not let this service write some fields",
        "FIELD_VALUE_INVALID": "Salesforce rejected a value",
    }.get(reason, f"Salesforce rejected the request ({code})")
    return Rejected(
        http.sentence(lead, message),
        reason=reason,
        field_violations=violations,
        provider=PROVIDER,
        status=status,
        metadata=metadata,
    )


def _reason_for(code: str, fields: Sequence[str]) -> str:
    if code == "REQUIRED_FIELD_MISSING":
        return "REQUIRED_FIELD_MISSING"
    if code == "INVALID_FIELD_FOR_INSERT_UPDATE":
        return "FIELD_NOT_WRITABLE"
    if code in _VALUE_CODES and (fields or code in ("INVALID_EMAIL_ADDRESS", "JSON_PARSER_ERROR")):
        return "FIELD_VALUE_INVALID"
    return code


def _violations(errors: Sequence[Mapping[str, Any]], secrets: Iterable[str | None]) -> list[FieldViolation]:
    secret_list = list(secrets)
    violations: dict[tuple[str, str], FieldViolation] = {}
    for error in errors:
        code = http.text(error.get("statusCode")) or http.text(error.get("errorCode"))
        description = http.scrub(http.text(error.get("message")), secret_list) or code
        if code == "REQUIRED_FIELD_MISSING":
            description = "Salesforce requires a value for this field"
        names = _fields(error)
        if not names and code == "INVALID_EMAIL_ADDRESS":
            names = ["Email"]
        for name in names:
            violations.setdefault((name, description), FieldViolation(name, http.truncate(description)))
    return list(violations.values())


def _first_error(body: Any) -> Mapping[str, Any]:
    """Top-level REST errors are an array of ``{message, errorCode, fields?}``; take the first."""
    if isinstance(body, list):
        return next((item for item in body if isinstance(item, Mapping)), {})
    return body if isinstance(body, Mapping) else {}


def _fields(error: Mapping[str, Any]) -> list[str]:
    fields = error.get("fields")
    return [str(name) for name in fields if isinstance(name, str) and name] if isinstance(fields, list) else []
