"""SalesforceProvider: crm_hub's adapter to Salesforce's OAuth web server flow and REST API (Contacts).

A pure adapter: it is handed decrypted tokens for each call and never stores them. Everything crosses one
shared ``httpx.AsyncClient``; tests inject a transport (``httpx.ASGITransport(FakeSalesforce().app)``).

Where calls go
    OAuth goes to ``settings.login_url`` (``/services/oauth2/authorize|token|revoke``); every API call goes
    to the org's ``instance_url`` (returned with the tokens, kept in ``TokenSet.instance_url``) under
    ``/services/data/{api_version}``.

Tokens
    Salesforce sends no ``expires_in``: ``expires_at`` stays None and the core refreshes when a call answers
    401 INVALID_SESSION_ID (``AuthExpired``). A refresh returns ``refresh_token=None`` unless the connected
    app rotates refresh tokens, in which case it returns the new one (the old one is then spent: reusing
    it makes Salesforce revoke the whole chain, so refreshes must be single-flight — the core's job).

Lookups
    ``find_contacts_by_email`` runs one SOQL query per 200 emails (fewer if the emails are long enough to
    push the URL past ~12,000 characters), following ``nextRecordsUrl``. Emails are quoted by
    ``crm_hub_salesforce.soql`` and compared case-insensitively. Ids come back oldest first
    (``ORDER BY CreatedDate ASC, Id ASC``): the core takes the first as *the* contact and reports the rest.

Writes and partial failures
    Creates and updates use sObject Collections (``/composite/sobjects``, 200 records per call,
    ``allOrNone: false``): Salesforce saves what it can and answers 200 with one result per record, so
    every record gets its own ``WriteResult``. Its per-record DUPLICATES_DETECTED error names no matching
    record, so the provider looks the refused records' emails up (one SOQL query per chunk) to put the
    existing contact's id in ``metadata["contact_id"]`` (others in ``"other_contact_ids"``). A rule that
    matched on something other than the email leaves those keys out.

    A call-level failure (rate limit, timeout, expired session) raises only while nothing has been written
    in this call; once some records are written, the remaining records carry that error in their
    ``WriteResult`` instead, so the caller never loses the ids of contacts that now exist.

API usage
    Every API answer carries ``Sforce-Limit-Info: api-usage=N/M``; the last value seen is
    ``last_api_usage`` (and per org, ``api_usage_for(instance_url)``). When the org's daily allocation is
    used up, calls raise ``DailyApiLimitReached`` (a ``RateLimited`` whose ``retryable`` is False).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from crm_hub.errors import (
    AuthExpired,
    FieldViolation,
    ProviderError,
    RefreshRejected,
    Rejected,
    Unavailable,
)
from crm_hub.providers import (
    ContactInput,
    ContactUpdate,
    CrmField,
    CrmOperation,
    CrmProvider,
    FieldOption,
    FieldType,
    ProviderCapabilities,
    Quota,
    TokenSet,
    WriteResult,
    http,
    write_in_batches,
)

from crm_hub_salesforce import soql
from crm_hub_salesforce.errors import LABEL, PROVIDER, classify, classify_oauth, parse_limit_info, record_error
from crm_hub_salesforce.settings import SalesforceSettings

__all__ = ["SCOPES", "TYPE_MAP", "SalesforceProvider", "to_salesforce_value"]

#: What the integration asks for at consent (space separated in the authorize URL).
SCOPES: tuple[str, ...] = ("api", "refresh_token")

#: Salesforce field types → crm_hub's. Types not listed are left out of ``list_fields``: compound fields
#: (``address``, ``location``: written through their component fields, e.g. MailingStreet), binary
#: (``base64``), polymorphic or structured values (``anyType``, ``complexvalue``, ``json``) and ``time``
#: (no common type can carry ``HH:mm:ss.SSSZ`` safely).
TYPE_MAP: Mapping[str, FieldType] = {
    "string": "string",
    "id": "string",
    # An 18-character id of another record (e.g. AccountId): text as far as a mapping is concerned.
    "reference": "string",
    # Stored encrypted by Salesforce, written as plain text.
    "encryptedstring": "string",
    # A picklist that also accepts free text: "select" would refuse the values it allows.
    "combobox": "string",
    "textarea": "textarea",
    "int": "number",
    "long": "number",
    "double": "number",
    "currency": "number",
    "percent": "number",
    "boolean": "boolean",
    "date": "date",
    "datetime": "date",
    "email": "email",
    "phone": "phone",
    "url": "url",
    "picklist": "select",
    "multipicklist": "select",
}

_OAUTH_AUTHORIZE = "/services/oauth2/authorize"
_OAUTH_TOKEN = "/services/oauth2/token"  # noqa: S105 - a path, not a secret
_OAUTH_REVOKE = "/services/oauth2/revoke"
_DATA = "/services/data/"
_COLLECTIONS = "/composite/sobjects"
_USER_AGENT = "crm-hub-salesforce/0.1"
#: Keep a lookup's URL well under Salesforce's 16,384-byte request URI limit.
_MAX_QUERY_URL_CHARS = 12_000
_MAX_QUERY_PAGES = 1_000

_Item = TypeVar("_Item")
logger = logging.getLogger(__name__)


def _operation(method: str, url: str, body: Any) -> CrmOperation:
    """What a request to ``url`` is for, in the core's words (rate budget, call counts, metrics); token calls go
    through ``oauth_form``, which says so itself."""
    if url.endswith(_OAUTH_REVOKE):
        return "revoke"
    if "/describe" in url:
        return "fields"
    if method == "GET":
        return "lookup"
    return "update" if method == "PATCH" else "create"


class SalesforceProvider(CrmProvider):
    """Salesforce Contacts through a connected app (web server flow with PKCE). One instance serves every team."""

    name: ClassVar[str] = "salesforce"
    label: ClassVar[str] = "Salesforce"
    capabilities: ClassVar[ProviderCapabilities] = ProviderCapabilities(
        max_batch_size=200,  # sObject Collections take at most 200 records
        upsert_by_email=False,  # Salesforce upserts by external id fields only; Email is not one
        pkce=True,
        rotates_refresh_tokens=True,  # when the connected app enables rotation
    )

    def __init__(
        self,
        *,
        settings: SalesforceSettings,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        """``timeout`` bounds each HTTP call end to end (seconds); ``transport`` replaces the network."""
        self.settings = settings
        self._http = http.CrmHttpClient(
            PROVIDER,
            LABEL,
            transport=transport,
            timeout=timeout,
            user_agent=_USER_AGENT,
            quota=self._api_quota,
        )
        self._last_api_usage: tuple[int, int] | None = None
        self._api_usage: dict[str, tuple[int, int]] = {}

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> SalesforceProvider:
        """A provider configured from ``SALESFORCE_*`` environment variables (see ``SalesforceSettings``)."""
        return cls(settings=SalesforceSettings.from_env(environ), transport=transport)

    def configuration_problem(self) -> str | None:
        return self.settings.problem

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- observability -----------------------------------------------------------------------------

    @property
    def last_api_usage(self) -> tuple[int, int] | None:
        """``(used, limit)`` from the last ``Sforce-Limit-Info`` header seen (any org), None before any."""
        return self._last_api_usage

    def api_usage_for(self, instance_url: str) -> tuple[int, int] | None:
        """``(used, limit)`` last seen for one org, by its instance URL."""
        return self._api_usage.get(instance_url.rstrip("/"))

    # -- OAuth -----------------------------------------------------------------------------------

    def authorization_url(self, *, state: str, code_challenge: str | None) -> str:
        url = self.settings.login_url + _OAUTH_AUTHORIZE
        return http.authorization_url(
            url, self.settings, state=state, code_challenge=code_challenge, scope=" ".join(SCOPES)
        )

    async def exchange_code(self, *, code: str, code_verifier: str | None) -> TokenSet:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_url}
        if code_verifier:
            form["code_verifier"] = code_verifier
        secrets = (code, code_verifier, self.settings.client_secret)
        response = await self._http.oauth_form(
            self.settings.login_url + _OAUTH_TOKEN,
            form,
            client=self.settings,
            refused=lambda answer: classify_oauth(answer, refreshing=False, secrets=secrets),
        )
        return self._token_set(self._http.json_object(response), previous=None)

    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """New access token. ``refresh_token`` is None unless Salesforce rotated it (then it is the new one)."""
        if not tokens.refresh_token:
            raise RefreshRejected(
                "There is no Salesforce refresh token to use; reconnect the integration.", provider=PROVIDER
            )
        response = await self._http.oauth_form(
            self.settings.login_url + _OAUTH_TOKEN,
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token},
            client=self.settings,
            refused=lambda answer: classify_oauth(answer, refreshing=True, secrets=self._secrets(tokens)),
        )
        return self._token_set(self._http.json_object(response), previous=tokens)

    async def revoke(self, tokens: TokenSet) -> None:
        """Revoke the refresh token (which ends its sessions too), else the access token. Best effort."""
        token = tokens.refresh_token or tokens.access_token
        response = await self._send("POST", self.settings.login_url + _OAUTH_REVOKE, form={"token": token})
        if response.status_code == 200:
            return
        error = http.mapping(http.json_body(response)).get("error")
        if response.status_code == 400 and error in ("invalid_token", "unsupported_token_type"):
            return  # already revoked or expired: what we wanted
        raise classify_oauth(response, refreshing=False, secrets=self._secrets(tokens))

    # -- Fields ----------------------------------------------------------------------------------

    async def list_fields(self, tokens: TokenSet) -> list[CrmField]:
        """Contact's fields from ``describe``, mapped by ``TYPE_MAP`` (unmapped types left out)."""
        response = await self._api("GET", self._data_url(tokens, "/sobjects/Contact/describe"), tokens)
        fields = (_crm_field(item) for item in http.mappings(self._http.json_object(response).get("fields")))
        return [field for field in fields if field is not None]

    # -- Contacts ----------------------------------------------------------------------------------

    async def find_contacts_by_email(self, tokens: TokenSet, emails: Sequence[str]) -> dict[str, list[str]]:
        """Contact ids per lowercased email, oldest first; one SOQL query per ≤ 200 emails."""
        found: dict[str, list[str]] = {}
        for email in emails:
            found.setdefault(http.normalize_email(email), [])
        wanted = [email for email in found if email]
        for chunk in _email_chunks(wanted, self.capabilities.max_batch_size, _MAX_QUERY_URL_CHARS):
            query = soql.contacts_by_email(chunk)
            async for record in self._query(tokens, query):
                email = http.normalize_email(str(record.get("Email") or ""))
                contact_id = record.get("Id")
                if email in found and isinstance(contact_id, str) and contact_id not in found[email]:
                    found[email].append(contact_id)
        return found

    async def create_contacts(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        return await write_in_batches(
            contacts, self.capabilities.max_batch_size, lambda chunk: self._create_chunk(tokens, chunk)
        )

    async def update_contacts(self, tokens: TokenSet, updates: Sequence[ContactUpdate]) -> list[WriteResult]:
        return await write_in_batches(
            updates, self.capabilities.max_batch_size, lambda chunk: self._update_chunk(tokens, chunk)
        )

    # -- batch machinery -----------------------------------------------------------------------------

    async def _create_chunk(self, tokens: TokenSet, chunk: Sequence[ContactInput]) -> list[WriteResult]:
        prepared = [_prepare(contact.properties, email=_email_of(contact)) for contact in chunk]
        records = [{**fields, "attributes": {"type": "Contact"}} for fields in prepared if isinstance(fields, dict)]
        answers = await self._collection(tokens, "POST", records) if records else []
        # Per-record duplicate refusals name no record: find the existing contacts by email, in one query.
        unnamed = {
            index: _email_of(chunk[index])
            for index, answer in enumerate(_aligned(prepared, answers))
            if _is_unnamed_duplicate(answer) and _email_of(chunk[index])
        }
        existing = await self._existing_contacts(tokens, unnamed.values()) if unnamed else {}
        results: list[WriteResult] = []
        for index, answer in enumerate(_aligned(prepared, answers)):
            if isinstance(answer, Rejected):
                results.append(WriteResult(error=answer))
            elif answer is None:
                results.append(WriteResult(error=_no_result()))
            elif answer.get("success") is True and isinstance(answer.get("id"), str):
                results.append(WriteResult(contact_id=str(answer["id"]), created=True))
            else:
                duplicates = existing.get(unnamed.get(index, ""), [])
                error = record_error(answer.get("errors"), secrets=self._secrets(tokens), duplicate_ids=duplicates)
                results.append(WriteResult(error=error))
        return results

    async def _update_chunk(self, tokens: TokenSet, chunk: Sequence[ContactUpdate]) -> list[WriteResult]:
        prepared: list[dict[str, Any] | Rejected] = []
        for update in chunk:
            if not update.contact_id.strip():
                prepared.append(
                    Rejected("No contact id given to update in Salesforce.", reason="NOT_FOUND", provider=PROVIDER)
                )
                continue
            fields = _prepare(update.properties, email=None)
            prepared.append(
                {**fields, "attributes": {"type": "Contact"}, "id": update.contact_id}
                if isinstance(fields, dict)
                else fields
            )
        records = [fields for fields in prepared if isinstance(fields, dict)]
        answers = await self._collection(tokens, "PATCH", records) if records else []
        results: list[WriteResult] = []
        for update, answer in zip(chunk, _aligned(prepared, answers), strict=True):
            if isinstance(answer, Rejected):
                results.append(WriteResult(error=answer))
            elif answer is None:
                results.append(WriteResult(error=_no_result()))
            elif answer.get("success") is True:
                results.append(WriteResult(contact_id=str(answer.get("id") or update.contact_id)))
            else:
                error = record_error(answer.get("errors"), secrets=self._secrets(tokens), updating=True)
                results.append(WriteResult(error=error))
        return results

    async def _collection(self, tokens: TokenSet, method: str, records: list[dict[str, Any]]) -> list[Any]:
        """One sObject Collections call; its per-record answers (a 200 whatever each record's fate)."""
        body = {"allOrNone": False, "records": records}
        response = await self._api(method, self._data_url(tokens, _COLLECTIONS), tokens, json=body)
        try:
            answers = response.json()
        except ValueError:
            answers = None
        # Records may have been saved: an unreadable answer becomes per-record errors, never a retry.
        return answers if isinstance(answers, list) else []

    async def _existing_contacts(self, tokens: TokenSet, emails: Iterable[str]) -> dict[str, list[str]]:
        try:
            return await self.find_contacts_by_email(tokens, list(emails))
        except ProviderError as error:  # naming the duplicate is a courtesy; the refusal stands without it
            logger.info("could not look up the contacts a duplicate rule matched", extra={"reason": error.reason})
            return {}

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _query(self, tokens: TokenSet, query: str) -> AsyncIterator[Mapping[str, Any]]:
        """The records of a SOQL query, page after page (``nextRecordsUrl`` while ``done`` is false)."""
        response = await self._api("GET", self._data_url(tokens, "/query"), tokens, params={"q": query})
        seen: set[str] = set()
        for _ in range(_MAX_QUERY_PAGES):
            page = self._http.json_object(response)
            for record in http.mappings(page.get("records")):
                yield record
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) is not False or not isinstance(next_url, str):
                return
            if not next_url.startswith(_DATA) or next_url in seen:
                raise Unavailable("Salesforce answered a query with an unusable nextRecordsUrl.", provider=PROVIDER)
            seen.add(next_url)
            response = await self._api("GET", _instance_url(tokens) + next_url, tokens)
        raise Unavailable("Salesforce's query answer did not end; giving up.", provider=PROVIDER)

    def _data_url(self, tokens: TokenSet, path: str) -> str:
        return f"{_instance_url(tokens)}{_DATA}{self.settings.api_version}{path}"

    async def _api(
        self,
        method: str,
        url: str,
        tokens: TokenSet,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """An authenticated API call whose every non-2xx answer raises its classified error."""
        response = await self._send(method, url, tokens=tokens, json=json, params=params)
        if response.status_code >= 300:
            usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
            raise classify(response, secrets=self._secrets(tokens), api_usage=usage)
        return response

    async def _send(
        self,
        method: str,
        url: str,
        *,
        tokens: TokenSet | None = None,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return await self._http.request(
            method, url, operation=_operation(method, url, json), tokens=tokens, json=json, form=form, params=params
        )

    def _api_quota(self, response: httpx.Response, tokens: TokenSet | None) -> Quota | None:
        usage = self._note_api_usage(tokens, response) if tokens is not None else None
        return Quota(name="daily", used=usage[0], limit=usage[1], window_seconds=86_400) if usage else None

    def _note_api_usage(self, tokens: TokenSet, response: httpx.Response) -> tuple[int, int] | None:
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is None:
            return None
        self._last_api_usage = usage
        if tokens.instance_url:
            self._api_usage[tokens.instance_url.rstrip("/")] = usage
        used, limit = usage
        if limit and used >= 0.9 * limit:
            logger.warning(
                "Salesforce org is close to its daily API limit",
                extra={"instance": tokens.instance_url, "api_used": used, "api_limit": limit},
            )
        return usage

    def _secrets(self, tokens: TokenSet) -> tuple[str | None, ...]:
        return http.secrets_of(tokens, self.settings.client_secret)

    def _token_set(self, payload: Mapping[str, Any], *, previous: TokenSet | None) -> TokenSet:
        """The toolkit's reading (access token, scopes, what a refresh keeps), and Salesforce's own: the org's
        ``instance_url`` (an answer without one is retried), the identity, a refresh token only when rotated."""
        tokens = self._http.token_set(payload, previous=previous)
        instance_url = http.text(payload.get("instance_url")) or tokens.instance_url
        if not instance_url:
            raise Unavailable("Salesforce's token answer had no instance_url; try again.", provider=PROVIDER)
        return replace(
            tokens,
            # None when Salesforce did not rotate it: the core keeps the refresh token it has.
            refresh_token=http.text(payload.get("refresh_token")) or None,
            expires_at=None,  # no expires_in: the session lasts the org's timeout; a 401 says when it ended
            instance_url=http.trusted_api_host(
                instance_url, provider=PROVIDER, label=LABEL, what="an instance_url", reason="INSTANCE_URL_INVALID"
            ),
            extra=_identity(payload, previous),
        )


# -- values and shapes -------------------------------------------------------------------------------


def to_salesforce_value(value: Any) -> Any:
    """A field value the way Salesforce's JSON takes it: booleans and numbers as such, dates ``yyyy-MM-dd``,
    datetimes ``yyyy-MM-ddTHH:mm:ss.SSSZ``, multi-select values joined with ``;``; None clears a field."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number Salesforce can store")
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return ";".join(str(to_salesforce_value(item)) for item in value)
    if isinstance(value, set | frozenset):
        return ";".join(sorted(str(to_salesforce_value(item)) for item in value))
    return str(value)


def _prepare(properties: Mapping[str, Any], *, email: str | None) -> dict[str, Any] | Rejected:
    """The record's fields as JSON values, or the Rejected naming the values that cannot be sent."""
    fields: dict[str, Any] = {}
    violations: list[FieldViolation] = []
    for name, value in properties.items():
        try:
            fields[str(name)] = to_salesforce_value(value)
        except ValueError as error:
            violations.append(FieldViolation(str(name), str(error)))
    if violations:
        return Rejected(
            "Some values cannot be sent to Salesforce: " + "; ".join(f"{v.field}: {v.description}" for v in violations),
            reason="FIELD_VALUE_INVALID",
            field_violations=violations,
            provider=PROVIDER,
        )
    if email and not any(name.lower() == "email" for name in fields):
        fields["Email"] = email
    return fields


def _aligned(
    prepared: Sequence[dict[str, Any] | Rejected], answers: Sequence[Any]
) -> Iterator[Mapping[str, Any] | Rejected | None]:
    """Per input: its local rejection, or Salesforce's answer for it (None if Salesforce gave none)."""
    sent = iter(answers)
    for item in prepared:
        if isinstance(item, Rejected):
            yield item
            continue
        answer = next(sent, None)
        yield answer if isinstance(answer, Mapping) else None


def _is_unnamed_duplicate(answer: Mapping[str, Any] | Rejected | None) -> bool:
    if not isinstance(answer, Mapping) or answer.get("success") is True:
        return False
    errors = answer.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) else {}
    code = first.get("statusCode") or first.get("errorCode")
    return code == "DUPLICATES_DETECTED" and not (first.get("duplicateResut") or first.get("duplicateResult"))


def _email_chunks(emails: Sequence[str], max_count: int, max_chars: int) -> Iterator[list[str]]:
    """Emails in groups of at most ``max_count`` whose URL-encoded query stays under ``max_chars``."""
    base = len(quote(soql.CONTACTS_BY_EMAIL.format(emails="()"), safe=""))
    chunk: list[str] = []
    size = base
    for email in emails:
        cost = len(quote(soql.quote(email), safe="")) + len(quote(", ", safe=""))
        if chunk and (len(chunk) >= max_count or size + cost > max_chars):
            yield chunk
            chunk, size = [], base
        chunk.append(email)
        size += cost
    if chunk:
        yield chunk


def _email_of(contact: ContactInput) -> str:
    """The email Salesforce sees: the Email property if mapped, else the contact's email."""
    for name, value in contact.properties.items():
        if str(name).lower() == "email" and isinstance(value, str) and value.strip():
            return http.normalize_email(value)
    return http.normalize_email(contact.email or "")


def _crm_field(item: Mapping[str, Any]) -> CrmField | None:
    name = item.get("name")
    field_type = TYPE_MAP.get(str(item.get("type") or ""))
    if not isinstance(name, str) or not name or field_type is None or item.get("deprecatedAndHidden"):
        return None
    createable = bool(item.get("createable"))
    options: tuple[FieldOption, ...] = ()
    if field_type == "select":
        options = tuple(
            FieldOption(value=str(option["value"]), label=str(option.get("label") or option["value"]))
            for option in http.mappings(item.get("picklistValues"))
            if option.get("value") is not None and option.get("active", True)
        )
    return CrmField(
        name=name,
        label=str(item.get("label") or name),
        type=field_type,
        # Salesforce's rule: a value is needed on create when the field can't be null and gets no default.
        required=createable and not item.get("nillable") and not item.get("defaultedOnCreate"),
        # Read-only fields (formulas, system fields) stay listed so users see them, but can't be mapped to.
        writable=createable or bool(item.get("updateable")),
        description=str(item.get("inlineHelpText") or ""),
        options=options,
    )


def _instance_url(tokens: TokenSet) -> str:
    if not tokens.instance_url:
        # Refreshing brings the instance_url back with the new session.
        raise AuthExpired("The Salesforce tokens name no instance URL; refreshing them.", provider=PROVIDER)
    return tokens.instance_url.rstrip("/")


def _identity(payload: Mapping[str, Any], previous: TokenSet | None) -> dict[str, str]:
    """Non-secret extras: the identity URL (``…/id/{org}/{user}``), org and user ids, issued_at."""
    extra = dict(previous.extra) if previous is not None else {}
    identity = payload.get("id")
    if isinstance(identity, str) and identity:
        extra["identity_url"] = identity
        parts = urlsplit(identity).path.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-3] == "id":
            extra["org_id"], extra["user_id"] = parts[-2], parts[-1]
    issued_at = payload.get("issued_at")
    if isinstance(issued_at, str | int) and str(issued_at):
        extra["issued_at"] = str(issued_at)
    return extra


def _no_result() -> Rejected:
    return Rejected("Salesforce reported no result for this record; it may or may not be saved.", provider=PROVIDER)
