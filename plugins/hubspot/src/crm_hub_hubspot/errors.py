"""HubSpot's failures, classified into crm_hub's provider errors.

    HTTP answer                                        raised / returned
    ─────────────────────────────────────────────────  ──────────────────────────────────────────────────
    401 (EXPIRED_AUTHENTICATION, INVALID_AUTHENTICATION) AuthExpired: the core refreshes and retries once
    400/401 invalid_grant at /oauth/v1/token            RefreshRejected (refresh) / Rejected OAUTH_CODE_INVALID
    429 (TEN_SECONDLY_ROLLING, SECONDLY, …)             RateLimited(retry_after = Retry-After, if sent)
    423 Locked                                          Unavailable(retry_after ≥ 2 s)
    477 Migration in progress                           Unavailable(retry_after = Retry-After)
    5xx (500, 502, 504, 524, …)                         Unavailable
    timeouts, refused connections                       Unavailable
    400 VALIDATION_ERROR naming properties              Rejected FIELD_VALUE_INVALID, one FieldViolation each
    400 VALIDATION_ERROR naming none                    Rejected REQUEST_INVALID
    409 "Contact already exists. Existing ID: N"        Rejected DUPLICATE_CONTACT, metadata contact_id=N
    404                                                 Rejected NOT_FOUND
    403 MISSING_SCOPES                                  Rejected MISSING_SCOPES
    other 4xx                                           Rejected

Messages are written for a person, quote HubSpot's own words where they help, and never contain a token
or the client secret (``secrets`` are scrubbed from anything HubSpot echoes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from crm_hub.errors import (
    AccessDenied,
    FieldViolation,
    ProviderError,
    RefreshRejected,
    Rejected,
    Unavailable,
)
from crm_hub.providers import DUPLICATE_CONTACT, http
from crm_hub.providers.http import parse_retry_after

__all__ = [
    "PROVIDER",
    "classify",
    "classify_oauth",
    "classify_transport",
    "parse_retry_after",
    "record_error",
]

PROVIDER = "hubspot"
LABEL = "HubSpot"

_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")
_INVALID_VALUES_PREFIX = "Property values were not valid:"
#: HubSpot asks for at least two seconds after a 423 Locked.
_LOCKED_RETRY_AFTER = 2.0


def classify(response: httpx.Response, *, secrets: Iterable[str | None] = ()) -> ProviderError:
    """The provider error for a non-success answer from HubSpot's API (the caller raises it)."""
    status = response.status_code
    body = dict(http.mapping(http.json_body(response)))
    category = http.text(body.get("category") or body.get("errorType"))
    hubspot_message = http.scrub(http.text(body.get("message")), secrets)
    metadata = _metadata(body, category)

    if status in (401, 429) or status >= 500:
        # The usual meanings (http.classify_status); a 5xx body says nothing a person could act on.
        detail = hubspot_message if status < 500 else ""
        return http.classify_status(response, provider=PROVIDER, label=LABEL, detail=detail, metadata=metadata)
    if status == 423:
        retry_after = max(parse_retry_after(response.headers.get("Retry-After")) or 0.0, _LOCKED_RETRY_AFTER)
        return Unavailable(
            "HubSpot has locked the account's data for a moment (423 Locked); try again shortly.",
            retry_after=retry_after,
            provider=PROVIDER,
            status=status,
            metadata=metadata,
            maybe_applied=False,  # refused before doing anything
        )
    if status == 477:  # "Migration in progress": an outage like a 5xx, whatever its number says
        return Unavailable(
            "HubSpot is unavailable right now (HTTP 477); try again shortly.",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    return _rejection(status, body, category, hubspot_message, metadata, secrets)


def record_error(error: Mapping[str, Any], *, secrets: Iterable[str | None] = ()) -> Rejected | AccessDenied:
    """The error of one record inside a 207 batch answer (``errors[i]`` of a batch response)."""
    category = http.text(error.get("category"))
    message = http.scrub(http.text(error.get("message")), secrets)
    status = _int(error.get("status"))
    metadata = {"hubspot_category": category} if category else {}
    if category == "OBJECT_NOT_FOUND":
        return Rejected(
            http.sentence("HubSpot has no such contact", message),
            reason="NOT_FOUND",
            provider=PROVIDER,
            status=404,
            metadata=metadata,
        )
    return _rejection(status or 400, error, category, message, metadata, secrets)


def classify_oauth(response: httpx.Response, *, refreshing: bool, secrets: Iterable[str | None] = ()) -> ProviderError:
    """A failed call to the token endpoint: invalid_grant means the code or refresh token is no good."""
    body = dict(http.mapping(http.json_body(response)))
    oauth_error = http.text(body.get("error"))
    oauth_status = http.text(body.get("status"))
    description = http.scrub(http.text(body.get("error_description") or body.get("message")), secrets)
    if response.status_code in (400, 401) and (
        oauth_error == "invalid_grant" or oauth_status in ("BAD_REFRESH_TOKEN", "BAD_AUTH_CODE")
    ):
        if refreshing:
            return RefreshRejected(
                http.sentence("HubSpot refused the refresh token", description),
                provider=PROVIDER,
                status=response.status_code,
                metadata={"oauth_error": oauth_error or "invalid_grant"},
            )
        return Rejected(
            http.sentence("HubSpot refused the authorization code", description),
            reason="OAUTH_CODE_INVALID",
            provider=PROVIDER,
            status=response.status_code,
            metadata={"oauth_error": oauth_error or "invalid_grant"},
        )
    if response.status_code in (400, 401) and (
        oauth_error == "invalid_client" or oauth_status in ("BAD_CLIENT_ID", "BAD_CLIENT_SECRET")
    ):
        # The service's own app credentials are wrong: reconnecting would not help, fixing the config does.
        return AccessDenied(
            "HubSpot does not recognise this service's OAuth client (check HUBSPOT_CLIENT_ID and "
            "HUBSPOT_CLIENT_SECRET).",
            reason="OAUTH_CLIENT_INVALID",
            provider=PROVIDER,
            status=response.status_code,
            metadata={"oauth_error": oauth_error or "invalid_client"},
        )
    return classify(response, secrets=secrets)


def classify_transport(error: Exception) -> Unavailable:
    """A request that got no HTTP answer: timed out, refused, reset. Never quotes the URL."""
    return http.classify_transport(error, provider=PROVIDER, label=LABEL)


# -- helpers ---------------------------------------------------------------------------------------


def _rejection(
    status: int,
    body: Mapping[str, Any],
    category: str,
    hubspot_message: str,
    metadata: dict[str, str],
    secrets: Iterable[str | None],
) -> Rejected | AccessDenied:
    if status == 409 or category == "CONFLICT":
        existing = _EXISTING_ID.search(hubspot_message)
        if existing:
            return Rejected(
                f"HubSpot already has a contact with this email (id {existing.group(1)}).",
                reason=DUPLICATE_CONTACT,
                provider=PROVIDER,
                status=409,
                metadata={**metadata, "contact_id": existing.group(1)},
            )
        return Rejected(
            http.sentence("HubSpot reported a conflict", hubspot_message),
            reason="CONFLICT",
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if status == 404 or category == "OBJECT_NOT_FOUND":
        return Rejected(
            http.sentence("HubSpot has no such record", hubspot_message),
            reason="NOT_FOUND",
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if status == 403 or category == "MISSING_SCOPES":
        reason = "MISSING_SCOPES" if category == "MISSING_SCOPES" else "FORBIDDEN"
        return AccessDenied(
            http.sentence(
                "HubSpot refused access; reconnect the integration to grant the needed scopes", hubspot_message
            )
            if reason == "MISSING_SCOPES"
            else http.sentence("HubSpot refused access", hubspot_message),
            reason=reason,
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    if category == "VALIDATION_ERROR" or status == 400:
        violations = _field_violations(body, secrets)
        if violations:
            details = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
            return Rejected(
                http.truncate(f"HubSpot rejected property values: {details}."),
                reason="FIELD_VALUE_INVALID",
                field_violations=violations,
                provider=PROVIDER,
                status=status,
                metadata=metadata,
            )
        return Rejected(
            http.sentence("HubSpot rejected the request", hubspot_message),
            reason="REQUEST_INVALID",
            provider=PROVIDER,
            status=status,
            metadata=metadata,
        )
    return Rejected(
        http.sentence(f"HubSpot refused the request (HTTP {status})", hubspot_message),
        provider=PROVIDER,
        status=status,
        metadata=metadata,
    )


def _field_violations(body: Mapping[str, Any], secrets: Iterable[str | None]) -> list[FieldViolation]:
    """The offending properties: from ``errors[].context.propertyName``, else the message's embedded JSON."""
    violations: dict[tuple[str, str], FieldViolation] = {}
    errors = body.get("errors")
    if isinstance(errors, list):
        for error in errors:
            if not isinstance(error, Mapping):
                continue
            context = error.get("context")
            names = context.get("propertyName") if isinstance(context, Mapping) else None
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list):
                continue
            description = http.scrub(http.text(error.get("message")), secrets) or http.text(error.get("code"))
            for name in names:
                violations.setdefault((str(name), description), FieldViolation(str(name), description))
    if violations:
        return list(violations.values())
    message = http.text(body.get("message"))
    if message.startswith(_INVALID_VALUES_PREFIX):
        try:
            entries = json.loads(message[len(_INVALID_VALUES_PREFIX) :].strip())
        except ValueError:
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, Mapping) and entry.get("name"):
                name = str(entry["name"])
                description = http.scrub(http.text(entry.get("message")), secrets) or http.text(entry.get("error"))
                violations.setdefault((name, description), FieldViolation(name, description))
    return list(violations.values())


def _metadata(body: Mapping[str, Any], category: str) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if category:
        metadata["hubspot_category"] = category
    correlation_id = body.get("correlationId")
    if isinstance(correlation_id, str) and correlation_id:
        metadata["correlation_id"] = correlation_id[:64]
    policy = body.get("policyName")
    if isinstance(policy, str) and policy:
        metadata["policy"] = policy[:64]
    return metadata


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
