"""HubSpotProvider: crm_hub's adapter to HubSpot's OAuth and CRM v3 contacts API.

A pure adapter: it is handed decrypted tokens for each call and never stores them. Everything crosses
one shared ``httpx.AsyncClient``; tests inject a transport (``httpx.ASGITransport(FakeHubSpot().app)``).

Batch writes and partial failures
    Contacts are written with HubSpot's batch endpoints, ``max_batch_size`` (100) per call. HubSpot
    refuses a whole batch when one record is invalid (400 VALIDATION_ERROR) or already exists (409,
    and it names only the first conflict). A one-record batch maps that answer onto its record exactly;
    a larger batch is then written again one record per call, so each record gets its own result or
    error (a duplicate's error carries the existing contact id). That costs up to one call per record,
    only on the failing batch.

    A call-level failure (rate limit, timeout, expired token) raises only while nothing has been written
    in this call; once some records are written, the remaining records carry that error in their
    ``WriteResult`` instead, so the caller never loses the ids of contacts that now exist.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import httpx
from crm_hub.errors import ProviderError, RefreshRejected, Rejected
from crm_hub.providers import (
    ContactInput,
    ContactUpdate,
    CrmField,
    CrmOperation,
    CrmProvider,
    FieldOption,
    FieldType,
    PartialWrite,
    ProviderCapabilities,
    Quota,
    RateLimit,
    TokenSet,
    WriteResult,
    http,
    write_in_batches,
)

from crm_hub_hubspot.errors import LABEL, PROVIDER, classify, classify_oauth, record_error
from crm_hub_hubspot.settings import HubSpotSettings

__all__ = ["SCOPES", "HubSpotProvider", "to_hubspot_value"]

#: What the integration asks for at consent (space separated in the authorize URL).
SCOPES: tuple[str, ...] = ("crm.objects.contacts.write", "crm.objects.contacts.read", "crm.schemas.contacts.read")

_TOKEN_PATH = "/oauth/v1/token"  # noqa: S105 - a path, not a secret
_REVOKE_PATH = "/oauth/v1/refresh-tokens/"
_PROPERTIES_PATH = "/crm/v3/properties/contacts"
_CONTACTS_PATH = "/crm/v3/objects/contacts"
_USER_AGENT = "crm-hub-hubspot/0.1"

_Item = TypeVar("_Item")


class HubSpotProvider(CrmProvider):
    """HubSpot contacts through a public OAuth app. One instance serves every team."""

    name: ClassVar[str] = "hubspot"
    label: ClassVar[str] = "HubSpot"
    capabilities: ClassVar[ProviderCapabilities] = ProviderCapabilities(
        max_batch_size=100,
        upsert_by_email=True,
        # HubSpot accepts code_verifier at the token endpoint; code_challenge on authorize is unverified
        # (crm-apis.md). Sending both is harmless where ignored.
        pkce=True,
        rotates_refresh_tokens=False,
        unique_email=True,  # a second contact with the same email is a 409
    )

    def __init__(
        self,
        *,
        settings: HubSpotSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 20.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``timeout`` bounds each HTTP call end to end (seconds); ``clock`` stamps token expiry (UTC)."""
        self.settings = settings
        self._now = clock or (lambda: datetime.now(UTC))
        self._http = http.CrmHttpClient(
            PROVIDER,
            LABEL,
            base_url=settings.api_base_url,
            transport=transport,
            timeout=timeout,
            user_agent=_USER_AGENT,
            quota=lambda response, _: _quota(response.headers),
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> HubSpotProvider:
        """A provider configured from ``HUBSPOT_*`` environment variables (see ``HubSpotSettings``)."""
        return cls(settings=HubSpotSettings.from_env(environ), transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    def configuration_problem(self) -> str | None:
        return self.settings.problem

    def rate_limits(self) -> Sequence[RateLimit]:
        return (self.settings.rate_limit,) if self.settings.rate_limit else ()

    # -- OAuth -----------------------------------------------------------------------------------

    def authorization_url(self, *, state: str, code_challenge: str | None) -> str:
        # HubSpot's consent URL takes no response_type.
        return http.authorization_url(
            self.settings.authorize_url,
            self.settings,
            state=state,
            code_challenge=code_challenge,
            response_type=None,
            scope=" ".join(SCOPES),
        )

    async def exchange_code(self, *, code: str, code_verifier: str | None) -> TokenSet:
        form = {"grant_type": "authorization_code", "redirect_uri": self.settings.redirect_url, "code": code}
        if code_verifier:
            form["code_verifier"] = code_verifier
        secrets = (code, self.settings.client_secret)
        response = await self._http.oauth_form(
            _TOKEN_PATH,
            form,
            client=self.settings,
            refused=lambda answer: classify_oauth(answer, refreshing=False, secrets=secrets),
        )
        return self._token_set(self._http.json_object(response), previous=None)

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise RefreshRejected(
                "There is no HubSpot refresh token to use; reconnect the integration.", provider=PROVIDER
            )
        form = {
            "grant_type": "refresh_token",
            "redirect_uri": self.settings.redirect_url,
            "refresh_token": tokens.refresh_token,
        }
        response = await self._http.oauth_form(
            _TOKEN_PATH,
            form,
            client=self.settings,
            refused=lambda answer: classify_oauth(answer, refreshing=True, secrets=self._secrets(tokens)),
        )
        return self._token_set(self._http.json_object(response), previous=tokens)

    async def revoke(self, tokens: TokenSet) -> None:
        """Delete the refresh token at HubSpot (which also ends the app's access through it)."""
        if not tokens.refresh_token:
            return
        path = _REVOKE_PATH + quote(tokens.refresh_token, safe="")
        response = await self._send("DELETE", path)
        if response.status_code in (200, 204, 404):  # 404: already gone, which is what we wanted
            return
        raise classify(response, secrets=self._secrets(tokens))

    # -- Fields ----------------------------------------------------------------------------------

    async def list_fields(self, tokens: TokenSet) -> list[CrmField]:
        response = await self._api("GET", _PROPERTIES_PATH, tokens, params={"archived": "false"})
        fields = [_crm_field(item) for item in http.mappings(self._http.json_object(response).get("results"))]
        return [field for field in fields if field is not None]

    # -- Contacts ----------------------------------------------------------------------------------

    async def find_contacts_by_email(self, tokens: TokenSet, emails: Sequence[str]) -> dict[str, list[str]]:
        """One batch read by ``idProperty=email`` per 100 distinct emails; unknown emails map to ``[]``."""
        found: dict[str, list[str]] = {}
        for email in emails:
            found.setdefault(http.normalize_email(email), [])
        wanted = [email for email in found if email]
        size = self.capabilities.max_batch_size
        for start in range(0, len(wanted), size):
            body = {
                "inputs": [{"id": email} for email in wanted[start : start + size]],
                "idProperty": "email",
                "properties": ["email"],
            }
            response = await self._api("POST", f"{_CONTACTS_PATH}/batch/read", tokens, json=body)
            payload = self._http.json_object(response)
            for result in http.mappings(payload.get("results")):
                email = http.normalize_email(str(http.mapping(result.get("properties")).get("email") or ""))
                contact_id = str(result.get("id") or "")
                if email in found and contact_id and contact_id not in found[email]:
                    found[email].append(contact_id)
            for error in http.mappings(payload.get("errors")):
                # Not-found emails are the normal case of a lookup; anything else is worth raising.
                if error.get("category") != "OBJECT_NOT_FOUND":
                    raise record_error(error, secrets=self._secrets(tokens))
        return found

    async def create_contacts(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        return await write_in_batches(
            contacts, self.capabilities.max_batch_size, lambda chunk: self._create_chunk(tokens, chunk)
        )

    async def update_contacts(self, tokens: TokenSet, updates: Sequence[ContactUpdate]) -> list[WriteResult]:
        return await write_in_batches(
            updates, self.capabilities.max_batch_size, lambda chunk: self._update_chunk(tokens, chunk)
        )

    async def upsert_contacts_by_email(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        """Batch upsert with ``idProperty=email``: one call per 100 records; ``created`` from HubSpot's ``new``."""
        results: list[WriteResult | None] = [None] * len(contacts)
        with_email: list[tuple[int, ContactInput]] = []
        for index, contact in enumerate(contacts):
            if _email_of(contact):
                with_email.append((index, contact))
            else:
                results[index] = WriteResult(
                    error=Rejected(
                        "A contact needs an email to be upserted into HubSpot.",
                        reason="FIELD_VALUE_INVALID",
                        provider=PROVIDER,
                    )
                )
        written = await write_in_batches(
            [contact for _, contact in with_email],
            self.capabilities.max_batch_size,
            lambda chunk: self._upsert_chunk(tokens, chunk),
        )
        for (index, _), result in zip(with_email, written, strict=True):
            results[index] = result
        return [result if result is not None else WriteResult(error=_no_result()) for result in results]

    # -- batch machinery -----------------------------------------------------------------------------

    async def _one_by_one(
        self, items: Sequence[_Item], write_one: Callable[[_Item], Awaitable[WriteResult]]
    ) -> list[WriteResult]:
        results: list[WriteResult] = []
        for item in items:
            try:
                results.append(await write_one(item))
            except ProviderError as error:
                raise PartialWrite(results, error) from error
        return results

    async def _create_chunk(self, tokens: TokenSet, chunk: Sequence[ContactInput]) -> list[WriteResult]:
        inputs = [{"properties": _properties(contact), "objectWriteTraceId": str(i)} for i, contact in enumerate(chunk)]
        response = await self._send("POST", f"{_CONTACTS_PATH}/batch/create", tokens=tokens, json={"inputs": inputs})
        if response.status_code in (200, 201, 207):
            return self._match_by_email(
                self._http.json_object(response),
                [_email_of(contact) for contact in chunk],
                tokens,
                created=True,
            )
        error = classify(response, secrets=self._secrets(tokens))
        if not _is_record_rejection(error):
            raise error
        if len(chunk) == 1:
            return [WriteResult(error=error)]
        return await self._one_by_one(chunk, lambda contact: self._create_one(tokens, contact))

    async def _create_one(self, tokens: TokenSet, contact: ContactInput) -> WriteResult:
        response = await self._send("POST", _CONTACTS_PATH, tokens=tokens, json={"properties": _properties(contact)})
        if response.status_code in (200, 201):
            return WriteResult(contact_id=str(self._http.json_object(response).get("id")), created=True)
        error = classify(response, secrets=self._secrets(tokens))
        if _is_record_rejection(error):
            return WriteResult(error=error)
        raise error

    async def _update_chunk(self, tokens: TokenSet, chunk: Sequence[ContactUpdate]) -> list[WriteResult]:
        inputs = [{"id": update.contact_id, "properties": _properties(update)} for update in chunk]
        response = await self._send("POST", f"{_CONTACTS_PATH}/batch/update", tokens=tokens, json={"inputs": inputs})
        if response.status_code in (200, 207):
            return self._match_by_id(
                self._http.json_object(response),
                [update.contact_id for update in chunk],
                tokens,
            )
        error = classify(response, secrets=self._secrets(tokens))
        if not _is_record_rejection(error):
            raise error
        if len(chunk) == 1:
            return [WriteResult(error=error)]
        return await self._one_by_one(chunk, lambda update: self._update_one(tokens, update))

    async def _update_one(self, tokens: TokenSet, update: ContactUpdate) -> WriteResult:
        path = f"{_CONTACTS_PATH}/{quote(update.contact_id, safe='')}"
        response = await self._send("PATCH", path, tokens=tokens, json={"properties": _properties(update)})
        if response.status_code == 200:
            return WriteResult(contact_id=str(self._http.json_object(response).get("id") or update.contact_id))
        error = classify(response, secrets=self._secrets(tokens))
        if _is_record_rejection(error) or error.reason == "NOT_FOUND":
            return WriteResult(error=error)
        raise error

    async def _upsert_chunk(self, tokens: TokenSet, chunk: Sequence[ContactInput]) -> list[WriteResult]:
        inputs = [
            {"id": _email_of(contact), "idProperty": "email", "properties": _properties(contact)} for contact in chunk
        ]
        response = await self._send("POST", f"{_CONTACTS_PATH}/batch/upsert", tokens=tokens, json={"inputs": inputs})
        if response.status_code in (200, 201, 207):
            return self._match_by_email(
                self._http.json_object(response),
                [_email_of(contact) for contact in chunk],
                tokens,
            )
        error = classify(response, secrets=self._secrets(tokens))
        if not _is_record_rejection(error):
            raise error
        if len(chunk) == 1:
            return [WriteResult(error=error)]
        # HubSpot upserts by email all-or-nothing: find the offending records by writing them one at a time.
        return await self._one_by_one(chunk, lambda contact: self._upsert_one(tokens, contact))

    async def _upsert_one(self, tokens: TokenSet, contact: ContactInput) -> WriteResult:
        [result] = await self._upsert_chunk(tokens, [contact])
        return result

    def _match_by_email(
        self, payload: Mapping[str, Any], emails: Sequence[str], tokens: TokenSet, *, created: bool = False
    ) -> list[WriteResult]:
        """Results in input order. HubSpot does not promise result order: match by trace id, then email."""
        matched: list[WriteResult | None] = [None] * len(emails)
        leftovers: list[Mapping[str, Any]] = []
        for result in http.mappings(payload.get("results")):
            index = _trace_index(result.get("objectWriteTraceId"), len(emails))
            if index is None or matched[index] is not None:
                email = http.normalize_email(str(http.mapping(result.get("properties")).get("email") or ""))
                index = next(
                    (i for i, wanted in enumerate(emails) if matched[i] is None and email and wanted == email), None
                )
            if index is None:
                leftovers.append(result)
                continue
            matched[index] = _write_result(result, created)
        for error in http.mappings(payload.get("errors")):
            context = http.mapping(error.get("context"))
            traces = context.get("objectWriteTraceId")
            for trace in traces if isinstance(traces, list) else [traces]:
                index = _trace_index(trace, len(emails))
                if index is not None and matched[index] is None:
                    matched[index] = WriteResult(error=record_error(error, secrets=self._secrets(tokens)))
            ids = context.get("ids")
            for value in ids if isinstance(ids, list) else []:
                for i, wanted in enumerate(emails):
                    if matched[i] is None and wanted and wanted == http.normalize_email(str(value)):
                        matched[i] = WriteResult(error=record_error(error, secrets=self._secrets(tokens)))
        for i, slot in enumerate(matched):  # records without an email: remaining results in order
            if slot is None and leftovers:
                matched[i] = _write_result(leftovers.pop(0), created)
        return [slot or WriteResult(error=_no_result()) for slot in matched]

    def _match_by_id(self, payload: Mapping[str, Any], ids: Sequence[str], tokens: TokenSet) -> list[WriteResult]:
        by_id: dict[str, WriteResult] = {}
        for result in http.mappings(payload.get("results")):
            by_id[str(result.get("id"))] = WriteResult(contact_id=str(result.get("id")))
        for error in http.mappings(payload.get("errors")):
            failed = http.mapping(error.get("context")).get("ids")
            for contact_id in failed if isinstance(failed, list) else []:
                by_id.setdefault(str(contact_id), WriteResult(error=record_error(error, secrets=self._secrets(tokens))))
        return [by_id.get(contact_id) or WriteResult(error=_no_result()) for contact_id in ids]

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _api(
        self,
        method: str,
        path: str,
        tokens: TokenSet,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """An authenticated API call whose every non-2xx answer raises its classified error."""
        response = await self._send(method, path, tokens=tokens, json=json, params=params)
        if response.status_code >= 300:
            raise classify(response, secrets=self._secrets(tokens))
        return response

    async def _send(
        self,
        method: str,
        path: str,
        *,
        tokens: TokenSet | None = None,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return await self._http.request(
            method, path, operation=_operation(method, path), tokens=tokens, json=json, params=params
        )

    def _secrets(self, tokens: TokenSet) -> tuple[str | None, ...]:
        return http.secrets_of(tokens, self.settings.client_secret)

    def _token_set(self, payload: Mapping[str, Any], *, previous: TokenSet | None) -> TokenSet:
        """The toolkit's reading (a refresh keeps the refresh token HubSpot does not rotate), and HubSpot's own
        fields: the granted ``scopes`` (not OAuth's ``scope``) and the account's ``hub_id``."""
        tokens = self._http.token_set(payload, previous=previous, now=self._now())
        scopes = payload.get("scopes")
        if isinstance(scopes, str):
            scopes = scopes.split()
        extra = dict(tokens.extra)
        if payload.get("hub_id") is not None:
            extra["hub_id"] = str(payload["hub_id"])
        return replace(
            tokens, scopes=tuple(str(scope) for scope in scopes) if isinstance(scopes, list) else (), extra=extra
        )


def _operation(method: str, path: str) -> CrmOperation:
    """What a request to ``path`` is for, in the core's words (rate budget, call counts, metrics); token calls go
    through ``oauth_form``, which says so itself."""
    if path.startswith(_REVOKE_PATH):
        return "revoke"
    if path.startswith(_PROPERTIES_PATH):
        return "fields"
    if path.endswith(("/batch/read", "/search")):
        return "lookup"
    if path.endswith("/batch/upsert"):
        return "upsert"
    if path.endswith("/batch/update") or method == "PATCH":
        return "update"
    return "create"


def _quota(headers: httpx.Headers) -> Quota | None:
    """HubSpot's own count of the account's rolling window, when it sends one (not on search answers)."""
    try:
        limit = int(headers["X-HubSpot-RateLimit-Max"])
        remaining = int(headers["X-HubSpot-RateLimit-Remaining"])
        interval = int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "10000"))
    except (KeyError, ValueError):
        return None
    return Quota(
        name=f"{interval // 1000}s", used=max(0, limit - remaining), limit=limit, window_seconds=interval // 1000
    )


# -- values and shapes -------------------------------------------------------------------------------


def to_hubspot_value(value: Any) -> str:
    """A property value the way HubSpot takes it: strings; booleans ``true``/``false``; dates ``YYYY-MM-DD``."""
    if value is None:
        return ""  # HubSpot clears a property set to ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number HubSpot can store")
        # HubSpot refuses exponent notation ("1e-14 was not a valid number").
        return str(int(value)) if value.is_integer() else format(Decimal(repr(value)), "f")
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return ";".join(to_hubspot_value(item) for item in value)  # multi-select checkboxes
    return str(value)


def _properties(record: ContactInput | ContactUpdate) -> dict[str, str]:
    properties = {str(name): to_hubspot_value(value) for name, value in record.properties.items()}
    if isinstance(record, ContactInput) and record.email and "email" not in properties:
        properties["email"] = record.email.strip()
    return properties


def _email_of(contact: ContactInput) -> str:
    return http.normalize_email(contact.email or str(contact.properties.get("email") or ""))


def _crm_field(prop: Mapping[str, Any]) -> CrmField | None:
    name = prop.get("name")
    if not isinstance(name, str) or not name or prop.get("archived") or prop.get("hidden"):
        return None
    field_type = _field_type(name, str(prop.get("type") or ""), str(prop.get("fieldType") or ""))
    options: tuple[FieldOption, ...] = ()
    if field_type == "select":
        options = tuple(
            FieldOption(value=str(option["value"]), label=str(option.get("label") or option["value"]))
            for option in http.mappings(prop.get("options"))
            if option.get("value") is not None and not option.get("hidden")
        )
    read_only = bool(http.mapping(prop.get("modificationMetadata")).get("readOnlyValue"))
    return CrmField(
        name=name,
        label=str(prop.get("label") or name),
        type=field_type,
        # HubSpot has no required contact properties; the email is the contact's identity.
        required=name == "email",
        writable=not read_only and not prop.get("calculated"),
        description=str(prop.get("description") or ""),
        options=options,
    )


def _field_type(name: str, hubspot_type: str, field_type: str) -> FieldType:
    if name == "email":
        return "email"
    if hubspot_type == "phone_number" or field_type == "phonenumber":
        return "phone"
    if hubspot_type == "string":
        return "textarea" if field_type == "textarea" else "string"
    mapped: dict[str, FieldType] = {
        "number": "number",
        "bool": "boolean",
        "date": "date",
        "datetime": "date",
        "enumeration": "select",
    }
    return mapped.get(hubspot_type, "string")


def _write_result(result: Mapping[str, Any], created: bool) -> WriteResult:
    new = result.get("new")
    return WriteResult(
        contact_id=str(result.get("id")),
        created=bool(new) if new is not None else created,
        created_at=_timestamp(result.get("createdAt")),
    )


def _timestamp(value: Any) -> datetime | None:
    """HubSpot's ISO 8601 instants (``2026-12-06T21:27:32.372Z``); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _trace_index(trace: Any, count: int) -> int | None:
    try:
        index = int(str(trace))
    except ValueError:
        return None
    return index if 0 <= index < count else None


def _is_record_rejection(error: ProviderError) -> bool:
    """A refusal of the records' data (invalid values, duplicate email) rather than of the call itself."""
    return isinstance(error, Rejected) and error.status in (400, 409)


def _no_result() -> Rejected:
    return Rejected("HubSpot reported no result for this record.", provider=PROVIDER)


# -- logging -----------------------------------------------------------------------------------------


class _RedactRefreshTokenPaths(logging.Filter):
    """httpx logs every request URL at INFO; the revoke URL carries a refresh token in its path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_names_refresh_token(arg) for arg in record.args):
            record.args = tuple(_redacted(arg) for arg in record.args)
        return True


def _names_refresh_token(value: object) -> bool:
    return isinstance(value, httpx.URL | str) and _REVOKE_PATH in str(value)


def _redacted(value: object) -> object:
    if not _names_refresh_token(value):
        return value
    text = str(value)
    return text[: text.index(_REVOKE_PATH) + len(_REVOKE_PATH)] + "[redacted]"


def _install_log_redaction(loggers: Iterable[str] = ("httpx",)) -> None:
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _RedactRefreshTokenPaths) for existing in logger.filters):
            logger.addFilter(_RedactRefreshTokenPaths())


_install_log_redaction()
