"""FakeHubSpot: one HubSpot account (portal) behind a real Starlette app.

It reproduces the shapes, status codes and headers of crm-apis.md: OAuth (consent, token, revoke),
contact properties, contacts (single, batch, search), bearer-token expiry, unique emails, value
validation, the 100-input batch limit, the 110 requests / 10 s rolling rate limit (search: 5 / s) and
the search index delay. Tests drive it in-process (``httpx.ASGITransport(fake.app)``) or on a socket
(``crm_hub_hubspot.fake.serving``), inspect ``calls`` and ``contacts``, and inject faults.

Where crm-apis.md is silent the fake picks a plausible behaviour and says so here:
- A batch with an invalid value is refused whole (400); a batch create whose email exists is refused
  whole (409, naming the first conflict); two inputs of one batch with the same email or id: 400.
- Batch read and batch update report unknown ids in a 207 (one OBJECT_NOT_FOUND error listing them).
- ``datetime`` properties also accept a plain ``YYYY-MM-DD`` (as midnight UTC).
- Only new contacts wait for the search index (``search_index_delay``); updates are searchable at once.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlencode

import httpx
from crm_hub.providers import RateLimit, TokenSet
from crm_hub.providers.http import pkce_challenge
from crm_hub.testing.fakes import AuthorizationCode, Call, FakeCrm, Fault
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from crm_hub_hubspot.fake.properties import CONTACT_PROPERTIES, PropertyError, format_instant, normalize_values
from crm_hub_hubspot.provider import HubSpotProvider
from crm_hub_hubspot.settings import HubSpotSettings

__all__ = ["DEFAULT_SCOPES", "Call", "FakeContact", "FakeHubSpot"]

DEFAULT_SCOPES: tuple[str, ...] = (
    "crm.objects.contacts.write",
    "crm.objects.contacts.read",
    "crm.schemas.contacts.read",
)
_READ = "crm.objects.contacts.read"
_WRITE = "crm.objects.contacts.write"
_SCHEMA = "crm.schemas.contacts.read"
_CONTACTS = "/crm/v3/objects/contacts"
_BATCH_LIMIT = 100
_SEARCH_PAGE_LIMIT = 200
_SEARCH_RESULT_LIMIT = 10_000
_CODE_TTL = 600.0
#: What HubSpot returns when no ``properties`` are asked for.
_DEFAULT_PROPERTIES = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")
_SEARCH_TEXT_PROPERTIES = ("email", "firstname", "lastname", "phone", "company")
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_READ_POSTS = ("/batch/read", "/search")

Limiter = Literal["api", "search"]
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class FakeContact:
    """A stored contact; every property value is a string."""

    id: str
    properties: dict[str, str]
    created_at: float
    updated_at: float
    searchable_at: float
    archived: bool = False

    @property
    def email(self) -> str:
        return self.properties.get("email", "")


@dataclass
class _AccessToken:
    refresh_token: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclass
class _Window:
    """A rolling window of accepted request times."""

    limit: int
    seconds: float
    times: deque[float] = field(default_factory=deque)

    def admit(self, now: float) -> bool:
        while self.times and self.times[0] <= now - self.seconds:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True

    def remaining(self) -> int:
        return max(self.limit - len(self.times), 0)


class FakeHubSpot(FakeCrm):
    """A fake HubSpot account. ``app`` is the ASGI app; everything else is for tests to look and poke.

    ``calls``, ``count``, ``calls_to``, ``fail_next`` and ``timeout_next`` come from
    ``crm_hub.testing.fakes.FakeCrm``; failures get HubSpot's body for their status (``fault_response``).
    """

    label: ClassVar[str] = "fake HubSpot"

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 - the fake's own test credential
        redirect_uri: str = "http://127.0.0.1/oauth/hubspot/callback",
        access_token_ttl: float = 1800.0,
        search_index_delay: float = 0.0,
        rate_limit: int = 110,
        rate_limit_interval: float = 10.0,
        search_rate_limit: int = 5,
        hub_id: int = 1234567,
        scopes: Sequence[str] = DEFAULT_SCOPES,
        properties: Iterable[Mapping[str, Any]] = CONTACT_PROPERTIES,
        first_contact_id: int = 37765128951,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` (seconds) drives token expiry, rate windows and the search index delay."""
        super().__init__(client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri)
        self.access_token_ttl = access_token_ttl
        self.search_index_delay = search_index_delay
        self.hub_id = hub_id
        #: Scopes the app may ask for; the authorize endpoint refuses others (invalid_scope).
        self.scopes = tuple(scopes)
        self.clock = clock
        #: False makes the next consents answer ``error=access_denied``, as a user clicking "Cancel".
        self.consent = True
        self.properties: dict[str, dict[str, Any]] = {str(p["name"]): dict(p) for p in properties}
        self.contacts: dict[str, FakeContact] = {}
        # email -> contact id: HubSpot answers a lookup by email from an index, so does the fake (a scan per
        # record made every batch of a big job slower than the last).
        self._by_email: dict[str, str] = {}
        self.auth_codes: dict[str, AuthorizationCode] = {}
        self.access_tokens: dict[str, _AccessToken] = {}
        #: Live refresh tokens and the scopes they grant.
        self.refresh_tokens: dict[str, tuple[str, ...]] = {}
        self._ids = itertools.count(first_contact_id)
        self._api_window = _Window(rate_limit, rate_limit_interval)
        self._search_window = _Window(search_rate_limit, 1.0)
        self.app: Starlette = Starlette(routes=self._routes())

    # -- what tests look at ------------------------------------------------------------------------

    def write_calls(self) -> list[Call]:
        """Requests that can change contacts (creates, updates, upserts), not reads, searches or OAuth."""
        return [
            call
            for call in self.calls
            if call.path.startswith("/crm/") and call.method in _WRITE_METHODS and not call.path.endswith(_READ_POSTS)
        ]

    def contact_by_email(self, email: str) -> FakeContact | None:
        wanted = email.strip().lower()
        contact = self.contacts.get(self._by_email.get(wanted, ""))
        return contact if contact is not None and not contact.archived and contact.email == wanted else None

    # -- what tests poke -------------------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every access token issued so far expires now (the next API call gets 401 EXPIRED_AUTHENTICATION)."""
        now = self.clock()
        for token in self.access_tokens.values():
            token.expires_at = min(token.expires_at, now)

    def grant_tokens(self, scopes: Sequence[str] | None = None) -> dict[str, Any]:
        """Tokens as if the OAuth dance had happened: the token endpoint's JSON answer."""
        granted = tuple(scopes) if scopes is not None else self.scopes
        refresh_token = f"na1-{secrets.token_hex(2)}-{uuid.uuid4()}"
        self.refresh_tokens[refresh_token] = granted
        return self._token_answer(refresh_token, granted)

    def grant_token_set(self, scopes: Sequence[str] | None = None) -> TokenSet:
        """``grant_tokens`` as the TokenSet crm_hub stores (expiry on the fake's clock)."""
        answer = self.grant_tokens(scopes)
        return TokenSet(
            access_token=answer["access_token"],
            refresh_token=answer["refresh_token"],
            expires_at=datetime.fromtimestamp(self.clock() + self.access_token_ttl, UTC),
            scopes=tuple(answer["scopes"]),
            extra={"hub_id": str(self.hub_id)},
        )

    def provider(
        self,
        *,
        base_url: str | None = None,
        timeout: float = 20.0,
        clock: Callable[[], datetime] | None = None,
    ) -> HubSpotProvider:
        """A HubSpotProvider set up for this fake: in-process, or over HTTP when ``base_url`` is given
        (from ``serving``), keeping to the fake's own rate limit. The caller closes it with ``aclose()``."""
        api = base_url.rstrip("/") if base_url else "https://api.hubapi.com"
        settings = HubSpotSettings(
            client_id=self.client_id,
            client_secret=self.client_secret,
            redirect_url=self.redirect_uri,
            api_base_url=api,
            authorize_url=f"{api}/oauth/authorize" if base_url else "https://app.hubspot.com/oauth/authorize",
            rate_limit=RateLimit(f"{self._api_window.seconds:g}s", self._api_window.limit, self._api_window.seconds),
        )
        transport = None if base_url else httpx.ASGITransport(self.app)
        return HubSpotProvider(settings=settings, transport=transport, timeout=timeout, clock=clock)

    def add_contact(self, properties: Mapping[str, Any], *, searchable: bool = True) -> FakeContact:
        """Seed a contact (not recorded as a call). ValueError if HubSpot would refuse it."""
        values, errors = normalize_values(self.properties, properties)
        if errors:
            raise ValueError("; ".join(error.message for error in errors))
        if values.get("email") and self.contact_by_email(values["email"]):
            raise ValueError(f"a contact with email {values['email']} exists")
        contact = self._create(values)
        if searchable:
            contact.searchable_at = contact.created_at
        return contact

    # -- routing and the checks every request passes --------------------------------------------------

    def _routes(self) -> list[Route]:
        api = self._api_endpoint
        return [
            Route("/oauth/authorize", self.recorded(self._authorize), methods=["GET"]),
            Route("/oauth/v1/token", self.recorded(self._token), methods=["POST"]),
            Route("/oauth/v3/token", self.recorded(self._token), methods=["POST"]),
            Route("/oauth/v1/refresh-tokens/{token}", self.recorded(self._revoke), methods=["DELETE"]),
            Route("/crm/v3/properties/contacts", api(self._list_properties, _SCHEMA), methods=["GET"]),
            Route(f"{_CONTACTS}/batch/read", api(self._batch_read, _READ), methods=["POST"]),
            Route(f"{_CONTACTS}/batch/create", api(self._batch_create, _WRITE), methods=["POST"]),
            Route(f"{_CONTACTS}/batch/update", api(self._batch_update, _WRITE), methods=["POST"]),
            Route(f"{_CONTACTS}/batch/upsert", api(self._batch_upsert, _WRITE), methods=["POST"]),
            Route(f"{_CONTACTS}/search", api(self._search, _READ, limiter="search"), methods=["POST"]),
            Route(_CONTACTS, api(self._create_contact, _WRITE), methods=["POST"]),
            Route(f"{_CONTACTS}/{{contact_id}}", api(self._get_contact, _READ), methods=["GET"]),
            Route(f"{_CONTACTS}/{{contact_id}}", api(self._update_contact, _WRITE), methods=["PATCH"]),
            Route(
                "/{path:path}",
                self.recorded(self._unknown_path),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
            ),
        ]

    def _api_endpoint(self, handler: Handler, scope: str, *, limiter: Limiter = "api") -> Handler:
        """A CRM API route: bearer token, scope, then the account's rate limit."""

        async def guarded(request: Request) -> Response:
            refused = self._authenticate(request, scope)
            if refused is not None:
                return refused
            now = self.clock()
            if limiter == "search":
                if not self._search_window.admit(now):
                    return _rate_limited("You have reached your secondly limit.", "SECONDLY")
                return await handler(request)  # search answers carry no rate-limit headers
            response: Response
            if not self._api_window.admit(now):
                response = _rate_limited("You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING")
            else:
                response = await handler(request)
            response.headers.update(self._rate_limit_headers())
            return response

        return self.recorded(guarded)

    def _rate_limit_headers(self) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self._api_window.seconds * 1000)),
            "X-HubSpot-RateLimit-Max": str(self._api_window.limit),
            "X-HubSpot-RateLimit-Remaining": str(self._api_window.remaining()),
        }

    def fault_response(self, fault: Fault) -> Response:
        """HubSpot's answer for the injected status (or ``fault.body``), plus ``Retry-After`` if set."""
        return _failure(fault)

    def _authenticate(self, request: Request, scope: str) -> Response | None:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("bearer ") or not header[7:].strip():
            return _error(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
                "INVALID_AUTHENTICATION",
            )
        token = self.access_tokens.get(header[7:].strip())
        if token is None or token.refresh_token not in self.refresh_tokens:
            return _error(401, "The OAuth token used to make this call is invalid.", "INVALID_AUTHENTICATION")
        now = self.clock()
        if token.expires_at <= now:
            return _error(
                401,
                f"The OAuth token used to make this call expired {int(now - token.expires_at)} second(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        if scope not in token.scopes:
            return _error(
                403,
                "This app hasn't been granted all required scopes to make this call.",
                "MISSING_SCOPES",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": [scope]},
                    }
                ],
            )
        return None

    # -- OAuth ---------------------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        if params.get("client_id") != self.client_id:
            return _error(400, "Authorization failed because the client_id is unknown.", "BAD_CLIENT_ID")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri != self.redirect_uri:
            # Never redirect to an address the app did not register.
            return _error(400, "Authorization failed because the redirect URL does not match.", "BAD_REDIRECT_URI")
        state = params.get("state")
        requested = tuple(params.get("scope", "").split())
        if not requested or any(scope not in self.scopes for scope in requested):
            return _redirect_error(redirect_uri, state, "invalid_scope", "The requested scopes do not match the app.")
        challenge = params.get("code_challenge")
        if challenge and params.get("code_challenge_method", "S256") != "S256":
            return _redirect_error(redirect_uri, state, "invalid_request", "code_challenge_method must be S256.")
        if not self.consent:
            return _redirect_error(redirect_uri, state, "access_denied", "The user declined to connect the app.")
        code = str(uuid.uuid4())
        self.auth_codes[code] = AuthorizationCode(redirect_uri, requested, challenge, self.clock() + _CODE_TTL)
        query = {"code": code} | ({"state": state} if state is not None else {})
        return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}", 302)

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client", "missing or unknown client id", "BAD_CLIENT_ID")
        if form.get("client_secret") != self.client_secret:
            return _oauth_error("invalid_client", "client secret is incorrect", "BAD_CLIENT_SECRET")
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._grant_from_code(form)
        if grant_type == "refresh_token":
            refresh_token = form.get("refresh_token", "")
            scopes = self.refresh_tokens.get(refresh_token)
            if scopes is None:
                return _oauth_error(
                    "invalid_grant",
                    "refresh token is invalid, expired or revoked",
                    "BAD_REFRESH_TOKEN",
                    "missing or invalid refresh token",
                )
            return JSONResponse(self._token_answer(refresh_token, scopes))
        return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported", "BAD_GRANT_TYPE")

    def _grant_from_code(self, form: Mapping[str, str]) -> Response:
        # Codes are single use: a code is gone once presented, even when the rest of the request is wrong.
        code = self.auth_codes.pop(form.get("code", ""), None)
        if code is None or code.expires_at <= self.clock():
            return _oauth_error("invalid_grant", "auth code not found", "BAD_AUTH_CODE", "missing or invalid auth code")
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("invalid_grant", "redirect_uri does not match", "BAD_REDIRECT_URI")
        if code.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or pkce_challenge(verifier) != code.code_challenge:
                return _oauth_error("invalid_grant", "code_verifier does not match the code_challenge", "BAD_AUTH_CODE")
        return JSONResponse(self.grant_tokens(code.scopes))

    def _token_answer(self, refresh_token: str, scopes: tuple[str, ...]) -> dict[str, Any]:
        access_token = f"CJ{secrets.token_urlsafe(24)}"
        self.access_tokens[access_token] = _AccessToken(refresh_token, scopes, self.clock() + self.access_token_ttl)
        return {
            "token_type": "bearer",
            "refresh_token": refresh_token,
            "access_token": access_token,
            "hub_id": self.hub_id,
            "scopes": list(scopes),
            "expires_in": int(self.access_token_ttl),
        }

    async def _revoke(self, request: Request) -> Response:
        token = request.path_params["token"]
        if self.refresh_tokens.pop(token, None) is None:
            return _error(404, "refresh token not found", "OBJECT_NOT_FOUND")
        return Response(status_code=204)

    # -- properties ------------------------------------------------------------------------------------

    async def _list_properties(self, request: Request) -> Response:
        archived = request.query_params.get("archived", "false").lower() == "true"
        results = [p for p in self.properties.values() if bool(p.get("archived")) == archived]
        return JSONResponse({"results": results})

    # -- contacts ----------------------------------------------------------------------------------------

    async def _create_contact(self, request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        values = _properties_of(body)
        if values is None:
            return _error(400, "Invalid input JSON: properties must be an object", "VALIDATION_ERROR")
        stored, errors = normalize_values(self.properties, values)
        if errors:
            return _validation_error(errors)
        existing = self._owner_of(stored.get("email"))
        if existing is not None:
            return _conflict(existing)
        return JSONResponse(self._object(self._create(stored)), 201)

    async def _get_contact(self, request: Request) -> Response:
        contact = self._find(request.path_params["contact_id"], request.query_params.get("idProperty"))
        if contact is None:
            return _not_found()
        names = [n for n in request.query_params.get("properties", "").split(",") if n]
        return JSONResponse(self._object(contact, names or _DEFAULT_PROPERTIES))

    async def _update_contact(self, request: Request) -> Response:
        contact = self._find(request.path_params["contact_id"], request.query_params.get("idProperty"))
        if contact is None:
            return _not_found()
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        values = _properties_of(body)
        if values is None:
            return _error(400, "Invalid input JSON: properties must be an object", "VALIDATION_ERROR")
        stored, errors = normalize_values(self.properties, values)
        if errors:
            return _validation_error(errors)
        owner = self._owner_of(stored.get("email"))
        if owner is not None and owner is not contact:
            return _conflict(owner)
        self._update(contact, stored)
        return JSONResponse(self._object(contact))

    async def _batch_read(self, request: Request) -> Response:
        body = await _batch_body(request)
        if isinstance(body, Response):
            return body
        id_property = body.get("idProperty")
        if id_property not in (None, "hs_object_id", "email"):
            return _error(400, f"{id_property} is not a unique property.", "VALIDATION_ERROR")
        names = [str(n) for n in body.get("properties") or []] or list(_DEFAULT_PROPERTIES)
        started = self._now_text()
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        for item in body["inputs"]:
            wanted = str(_mapping(item).get("id", ""))
            contact = self._find(wanted, id_property)
            if contact is None:
                missing.append(wanted)
            elif all(r["id"] != contact.id for r in results):
                results.append(self._object(contact, names))
        return _batch_answer(results, _not_found_errors(missing), started, self._now_text())

    async def _batch_create(self, request: Request) -> Response:
        body = await _batch_body(request)
        if isinstance(body, Response):
            return body
        started = self._now_text()
        prepared: list[dict[str, str]] = []
        for item in body["inputs"]:
            values = _properties_of(_mapping(item))
            if values is None:
                return _error(400, "Invalid input JSON: each input needs a properties object", "VALIDATION_ERROR")
            stored, errors = normalize_values(self.properties, values)
            if errors:
                return _validation_error(errors)  # the whole batch is refused
            prepared.append(stored)
        emails = [values["email"] for values in prepared if values.get("email")]
        for email in emails:
            existing = self._owner_of(email)
            if existing is not None:
                return _conflict(existing)  # HubSpot names only the first conflict
        repeated = sorted({email for email in emails if emails.count(email) > 1})
        if repeated:
            return _error(400, f"Duplicate emails found in batch input: {repeated}", "VALIDATION_ERROR")
        results = [self._object(self._create(values)) for values in prepared]
        return _batch_answer(results, [], started, self._now_text(), success_status=201)

    async def _batch_update(self, request: Request) -> Response:
        body = await _batch_body(request)
        if isinstance(body, Response):
            return body
        started = self._now_text()
        ids = [str(_mapping(item).get("id", "")) for item in body["inputs"]]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            return _error(
                400, f"Duplicate IDs found in batch input: {repeated}. IDs must be unique", "VALIDATION_ERROR"
            )
        planned: list[tuple[FakeContact, dict[str, str]]] = []
        missing: list[str] = []
        for item, wanted in zip(body["inputs"], ids, strict=True):
            values = _properties_of(_mapping(item))
            if values is None:
                return _error(400, "Invalid input JSON: each input needs a properties object", "VALIDATION_ERROR")
            stored, errors = normalize_values(self.properties, values)
            if errors:
                return _validation_error(errors)
            contact = self._find(wanted, _mapping(item).get("idProperty"))
            if contact is None:
                missing.append(wanted)
                continue
            owner = self._owner_of(stored.get("email"))
            if owner is not None and owner is not contact:
                return _conflict(owner)
            planned.append((contact, stored))
        for contact, stored in planned:
            self._update(contact, stored)
        results = [self._object(contact) for contact, _ in planned]
        return _batch_answer(results, _not_found_errors(missing), started, self._now_text())

    async def _batch_upsert(self, request: Request) -> Response:
        body = await _batch_body(request)
        if isinstance(body, Response):
            return body
        started = self._now_text()
        planned: list[tuple[str, dict[str, str]]] = []
        for item in body["inputs"]:
            entry = _mapping(item)
            if entry.get("idProperty") != "email":
                return _error(
                    400, "Upserts need idProperty set to a unique property such as email.", "VALIDATION_ERROR"
                )
            values = _properties_of(entry)
            if values is None:
                return _error(400, "Invalid input JSON: each input needs a properties object", "VALIDATION_ERROR")
            stored, errors = normalize_values(self.properties, {**values, "email": entry.get("id", "")})
            if errors:
                return _validation_error(errors)  # partial upserts are not supported with idProperty=email
            planned.append((stored["email"], stored))
        emails = [email for email, _ in planned]
        repeated = sorted({email for email in emails if emails.count(email) > 1})
        if repeated:
            return _error(
                400, f"Duplicate IDs found in batch input: {repeated}. IDs must be unique", "VALIDATION_ERROR"
            )
        results = []
        for email, stored in planned:
            contact = self.contact_by_email(email)
            new = contact is None
            if contact is None:
                contact = self._create(stored)
            else:
                self._update(contact, stored)
            results.append(self._object(contact) | {"new": new})
        return _batch_answer(results, [], started, self._now_text())

    async def _search(self, request: Request) -> Response:
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > 5:
            return _error(400, "There can be at most 5 filterGroups.", "VALIDATION_ERROR")
        filters_per_group = [_mapping(group).get("filters") or [] for group in groups]
        if any(len(filters) > 6 for filters in filters_per_group) or sum(map(len, filters_per_group)) > 18:
            return _error(400, "There can be at most 6 filters per group and 18 filters in all.", "VALIDATION_ERROR")
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= _SEARCH_PAGE_LIMIT:
            return _error(400, f"limit must be between 1 and {_SEARCH_PAGE_LIMIT}.", "VALIDATION_ERROR")
        try:
            after = int(str(body.get("after") or 0))
        except ValueError:
            return _error(400, "after must be a number.", "VALIDATION_ERROR")
        if after + limit > _SEARCH_RESULT_LIMIT:
            return _error(400, "Search cannot page past 10,000 results.", "VALIDATION_ERROR")
        for filters in filters_per_group:
            for flt in filters:
                if _mapping(flt).get("operator") not in _OPERATORS:
                    return _error(400, f"Unsupported operator {_mapping(flt).get('operator')}.", "VALIDATION_ERROR")
        now = self.clock()
        query = str(body.get("query") or "").lower()
        matches = [
            contact
            for contact in sorted(self.contacts.values(), key=lambda c: int(c.id))
            if not contact.archived
            and contact.searchable_at <= now
            and (not filters_per_group or any(_matches_all(contact, filters) for filters in filters_per_group))
            and (not query or any(query in contact.properties.get(n, "").lower() for n in _SEARCH_TEXT_PROPERTIES))
        ]
        names = [str(n) for n in body.get("properties") or []] or list(_DEFAULT_PROPERTIES)
        page = matches[after : after + limit]
        answer: dict[str, Any] = {"total": len(matches), "results": [self._object(c, names) for c in page]}
        if after + limit < len(matches):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return JSONResponse(answer)

    async def _unknown_path(self, request: Request) -> Response:
        return _error(404, f"No route for {request.method} {request.url.path}", "OBJECT_NOT_FOUND")

    # -- state -------------------------------------------------------------------------------------------

    def _create(self, values: Mapping[str, str]) -> FakeContact:
        now = self.clock()
        contact_id = str(next(self._ids))
        contact = FakeContact(contact_id, {}, now, now, now + self.search_index_delay)
        self.contacts[contact_id] = contact
        contact.properties.update({"createdate": _instant(now), "hs_object_id": contact_id})
        self._update(contact, values)
        return contact

    def _update(self, contact: FakeContact, values: Mapping[str, str]) -> None:
        now = self.clock()
        if self._by_email.get(contact.email) == contact.id:
            del self._by_email[contact.email]
        contact.properties.update(values)
        contact.properties = {name: value for name, value in contact.properties.items() if value != ""}
        email = contact.properties.get("email", "")
        if "@" in email:
            contact.properties["hs_email_domain"] = email.rsplit("@", 1)[1]
        else:
            contact.properties.pop("hs_email_domain", None)
        contact.properties["lastmodifieddate"] = _instant(now)
        contact.updated_at = now
        if contact.email:
            self._by_email[contact.email] = contact.id

    def _find(self, wanted: str, id_property: Any) -> FakeContact | None:
        if id_property == "email":
            return self.contact_by_email(wanted)
        contact = self.contacts.get(wanted)
        return contact if contact is not None and not contact.archived else None

    def _owner_of(self, email: str | None) -> FakeContact | None:
        return self.contact_by_email(email) if email else None

    def _object(self, contact: FakeContact, names: Iterable[str] | None = None) -> dict[str, Any]:
        """A SimplePublicObject: the asked-for properties (null when unset), or all that are set."""
        if names is None:
            properties: dict[str, str | None] = dict(contact.properties)
        else:
            properties = {name: contact.properties.get(name) for name in names if name in self.properties}
        return {
            "id": contact.id,
            "properties": properties,
            "createdAt": _instant(contact.created_at),
            "updatedAt": _instant(contact.updated_at),
            "archived": contact.archived,
        }

    def _now_text(self) -> str:
        return _instant(self.clock())


# -- answers -------------------------------------------------------------------------------------------


def _correlation_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, message: str, category: str, *, errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": _correlation_id()}
    if errors:
        body["errors"] = errors
    body["category"] = category
    return JSONResponse(body, status)


def _validation_error(errors: Sequence[PropertyError]) -> JSONResponse:
    """HubSpot's 400 for invalid values: the details as JSON inside the message, and as ``errors``."""
    details = [
        {"isValid": False, "message": e.message, "error": e.code, "name": e.name, "localizedErrorMessage": e.message}
        for e in errors
    ]
    return _error(
        400,
        "Property values were not valid: " + json.dumps(details, separators=(",", ":")),
        "VALIDATION_ERROR",
        errors=[{"message": e.message, "code": e.code, "context": {"propertyName": [e.name]}} for e in errors],
    )


def _not_found_errors(missing: Sequence[str]) -> list[dict[str, Any]]:
    """The one 207 error entry HubSpot gives for all the ids of a batch it could not find."""
    if not missing:
        return []
    message = "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid."
    return [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": message, "context": {"ids": list(missing)}}]


def _conflict(existing: FakeContact) -> JSONResponse:
    return _error(409, f"Contact already exists. Existing ID: {existing.id}", "CONFLICT")


def _not_found() -> JSONResponse:
    return _error(404, "resource not found", "OBJECT_NOT_FOUND")


def _rate_limited(message: str, policy: str) -> JSONResponse:
    return JSONResponse(
        {
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": _correlation_id(),
            "policyName": policy,
        },
        429,
    )


def _oauth_error(error: str, description: str, status: str, message: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description, "status": status, "message": message or description},
        400,
    )


def _redirect_error(redirect_uri: str, state: str | None, error: str, description: str) -> RedirectResponse:
    query = {"error": error, "error_description": description} | ({"state": state} if state is not None else {})
    return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}", 302)


def _batch_answer(
    results: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    started: str,
    completed: str,
    *,
    success_status: int = 200,
) -> JSONResponse:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    body["startedAt"] = started
    body["completedAt"] = completed
    return JSONResponse(body, 207 if errors else success_status)


def _failure(fault: Fault) -> Response:
    headers = fault.headers
    if fault.body is not None:
        content = fault.body if isinstance(fault.body, str | bytes) else json.dumps(fault.body)
        return Response(content, fault.status, headers=headers, media_type="application/json")
    if fault.status == 429:
        response: Response = _rate_limited("You have reached your ten_secondly_rolling limit.", "TEN_SECONDLY_ROLLING")
    elif fault.status == 401:
        response = _error(
            401, "The OAuth token used to make this call expired 0 second(s) ago.", "EXPIRED_AUTHENTICATION"
        )
    elif fault.status in (502, 504, 524):
        # Gateway errors come from the edge, as HTML.
        response = Response(
            f"<html><body><h1>{fault.status} Gateway error</h1></body></html>", fault.status, media_type="text/html"
        )
    elif fault.status == 423:
        response = _error(423, "The resource is locked; try again in a few seconds.", "LOCKED")
    elif fault.status == 477:
        response = _error(477, "This account is being migrated between data centers.", "MIGRATION_IN_PROGRESS")
    elif fault.status >= 500:
        response = _error(fault.status, "internal error", "INTERNAL_ERROR")
    else:
        response = _error(fault.status, "injected failure", "VALIDATION_ERROR")
    response.headers.update(headers)
    return response


# -- parsing and matching ---------------------------------------------------------------------------------


async def _json_object(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as error:
        return _error(400, f"Invalid input JSON: {error}", "VALIDATION_ERROR")
    if not isinstance(body, dict):
        return _error(400, "Invalid input JSON: expected an object", "VALIDATION_ERROR")
    return body


async def _batch_body(request: Request) -> dict[str, Any] | Response:
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        return _error(400, "Invalid input JSON: inputs must be an array", "VALIDATION_ERROR")
    if len(inputs) > _BATCH_LIMIT:
        return _error(
            400,
            f"Batch input limit exceeded: {len(inputs)} inputs were sent, at most {_BATCH_LIMIT} are allowed.",
            "VALIDATION_ERROR",
        )
    return body


def _properties_of(body: Mapping[str, Any]) -> dict[str, Any] | None:
    properties = body.get("properties", {})
    return dict(properties) if isinstance(properties, dict) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _instant(seconds: float) -> str:
    return format_instant(datetime.fromtimestamp(seconds, UTC))


_OPERATORS = frozenset({"EQ", "NEQ", "IN", "NOT_IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY"})
_UPPER = re.compile(r"[A-Z]")


def _matches_all(contact: FakeContact, filters: Sequence[Any]) -> bool:
    return all(_matches(contact, _mapping(flt)) for flt in filters)


def _matches(contact: FakeContact, flt: Mapping[str, Any]) -> bool:
    value = contact.properties.get(str(flt.get("propertyName")))
    operator = flt.get("operator")
    if operator == "HAS_PROPERTY":
        return bool(value)
    if operator == "NOT_HAS_PROPERTY":
        return not value
    stored = (value or "").lower()
    if operator in ("EQ", "NEQ"):
        equal = value is not None and stored == str(flt.get("value", "")).lower()
        return equal if operator == "EQ" else not equal
    # IN on string properties matches lowercase values only (crm-apis.md): uppercase never matches.
    values = [str(v) for v in flt.get("values") or []]
    found = value is not None and any(stored == v for v in values if not _UPPER.search(v))
    return found if operator == "IN" else not found
