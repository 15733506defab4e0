"""FakeSalesforce: one Salesforce org behind a real Starlette app.

It reproduces the shapes, status codes and headers of crm-apis.md: the OAuth web server flow (consent,
token with PKCE and single-use codes, refresh with optional rotation, revoke), Contact describe, SOQL
queries (``crm_hub_salesforce.fake.soql``), single-record and sObject Collections writes with per-record
results, session expiry (401 INVALID_SESSION_ID), value rules (``crm_hub_salesforce.fake.validation``),
optional duplicate rules, ``Sforce-Limit-Info`` on every API answer and the rolling 24-hour API allocation
(403 REQUEST_LIMIT_EXCEEDED). Tests drive it in-process (``httpx.ASGITransport(fake.app)``) or on a socket
(``crm_hub_salesforce.fake.serving``), inspect ``calls`` and ``contacts``, and inject faults.

Login host and instance host: in reality OAuth lives on ``login.salesforce.com`` (or a My Domain) and the
API on the org's ``instance_url``. The fake serves both from one app (``/services/oauth2/*`` and
``/services/data/*`` don't collide), but answers API calls addressed to any host other than its
``instance_url``'s with 401 INVALID_SESSION_ID, as the login host would: a client that ignores
``instance_url`` fails here as it would against Salesforce.

Where crm-apis.md is silent the fake picks a plausible behaviour and says so here:
- Sessions end after ``session_ttl`` seconds without use (Salesforce's session timeout is an inactivity
  timeout); a refresh starts a new session and leaves older ones running.
- Reusing a rotated-away refresh token revokes its whole chain: every refresh token and session descending
  from the same authorization. Revoking a refresh token ends its chain too; revoking an access token
  ends that session. An unknown token at ``/revoke`` is 400 ``invalid_token``.
- Authorization codes live 15 minutes and are spent by the first token request that presents valid client
  credentials, whatever its outcome. PKCE is required unless ``require_pkce=False``; only S256.
- Duplicate rules (``duplicate_rules=True``) match a new contact's Email against existing contacts,
  case-insensitively, on create only. The single-record create answers 400 with a ``duplicateResut``
  (sic) naming the matches, oldest first; an sObject Collections result carries only
  ``{"statusCode": "DUPLICATES_DETECTED", "message", "fields": []}`` — Salesforce's documented example
  names no match there, and clients report that none is returned. With ``duplicate_rules_allow_save``
  (the standard rule's "Allow" action), the ``Sforce-Duplicate-Rule-Header: allowSave=true`` header saves.
- Unknown fields and JSON type errors fail a whole collection request (400 INVALID_FIELD /
  JSON_PARSER_ERROR); rule violations fail only their record. More than 200 records: 400
  EXCEEDED_ID_LIMIT. Updating a well-formed id that names no contact: INVALID_CROSS_REFERENCE_KEY in a
  collection, 404 on the single-record endpoint; a deleted one: ENTITY_IS_DELETED.
- Every API request that passes authentication counts against ``daily_limit`` (the OAuth endpoints
  don't); once ``daily_limit`` requests fall in the last 24 hours, API calls answer 403.
- Query cursors (``nextRecordsUrl``) never expire. Reference fields accept any well-formed id of the right
  object type (the fake org has no accounts or users to check against).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import hmac
import itertools
import json
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from crm_hub.providers.http import pkce_challenge
from crm_hub.testing.fakes import AuthorizationCode, Call, FakeCrm, Fault
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from crm_hub_salesforce.fake import soql
from crm_hub_salesforce.fake.describe import CONTACT_DESCRIBE, CONTACT_FIELDS
from crm_hub_salesforce.fake.ids import make_id, normalize_id
from crm_hub_salesforce.fake.validation import RecordError, RequestError, deserialize, format_datetime, validate

__all__ = ["DEFAULT_INSTANCE_URL", "Call", "FakeSalesforce"]

DEFAULT_INSTANCE_URL = "https://fake.my.salesforce.invalid"
_DATA = "/services/data/"
_COLLECTION_LIMIT = 200
_CODE_TTL = 900.0
_DAY = 86_400.0
_SCOPES_KNOWN = frozenset(
    {"api", "refresh_token", "offline_access", "id", "profile", "email", "address", "phone", "openid", "web", "full"}
    | {"chatter_api", "visualforce", "custom_permissions", "wave_api", "lightning", "content", "pardot_api"}
)
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_NOT_FOUND = "The requested resource does not exist"
_SESSION_INVALID = "Session expired or invalid"

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class _Session:
    chain: str | None
    scopes: tuple[str, ...]
    last_used: float
    ended: bool = False


@dataclass
class _RefreshToken:
    chain: str
    scopes: tuple[str, ...]
    #: Rotated away: presenting it again revokes the chain.
    spent: bool = False


@dataclass
class _SaveOutcome:
    contact_id: str | None = None
    errors: list[RecordError] = field(default_factory=list)


class FakeSalesforce(FakeCrm):
    """A fake Salesforce org. ``app`` is the ASGI app; everything else is for tests to look and poke.

    ``calls``, ``count``, ``calls_to`` and ``timeout_next`` come from ``crm_hub.testing.fakes.FakeCrm``;
    ``fail_next`` answers with Salesforce's error array. Serving it (``serving``) makes the socket its
    ``instance_url`` (``served_at``).
    """

    label: ClassVar[str] = "fake Salesforce"
    keep_blank_form_values: ClassVar[bool] = True

    def __init__(
        self,
        *,
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",  # noqa: S107 - the fake's own test credential
        redirect_uri: str = "http://127.0.0.1/oauth/salesforce/callback",
        instance_url: str = DEFAULT_INSTANCE_URL,
        rotate_refresh_tokens: bool = False,
        session_ttl: float = 7200.0,
        daily_limit: int = 100_000,
        duplicate_rules: bool = False,
        duplicate_rules_allow_save: bool = True,
        require_pkce: bool = True,
        query_batch_size: int = 2000,
        fields: Iterable[Mapping[str, Any]] = CONTACT_FIELDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` (seconds) drives session expiry, code expiry, the daily allocation and CreatedDate."""
        super().__init__(client_id=client_id, client_secret=client_secret, redirect_uri=redirect_uri)
        #: Where API calls must go; ``serving()`` points it at the socket it serves on.
        self.instance_url = instance_url.rstrip("/")
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.session_ttl = session_ttl
        self.daily_limit = daily_limit
        self.duplicate_rules = duplicate_rules
        self.duplicate_rules_allow_save = duplicate_rules_allow_save
        self.require_pkce = require_pkce
        self.query_batch_size = query_batch_size
        self.clock = clock
        #: False makes the next consents redirect with ``error=access_denied``, as a user clicking "Deny".
        self.consent = True
        self.fields: list[dict[str, Any]] = [dict(described) for described in fields]
        self._fields_by_lower = {str(described["name"]).lower(): described for described in self.fields}
        #: Contacts by 18-character id; each maps every describe field name to its value.
        self.contacts: dict[str, dict[str, Any]] = {}
        self.auth_codes: dict[str, AuthorizationCode] = {}
        self.sessions: dict[str, _Session] = {}
        self.refresh_tokens: dict[str, _RefreshToken] = {}
        self.revoked_chains: set[str] = set()
        self.org_id = make_id("00D", 7_340_021)
        self.user_id = make_id("005", 1_048_583)
        self._contact_numbers = itertools.count(13_000_000)
        self._api_calls: deque[float] = deque()
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self.app: Starlette = Starlette(routes=self._routes())

    # -- what tests look at ------------------------------------------------------------------------

    def api_calls(self) -> list[Call]:
        """Requests to the REST API (``/services/data/…``), not OAuth."""
        return [call for call in self.calls if call.path.startswith(_DATA)]

    def write_calls(self) -> list[Call]:
        """API requests that can change contacts (creates and updates), not describes, queries or OAuth."""
        return [call for call in self.api_calls() if call.method in _WRITE_METHODS]

    def query_calls(self) -> list[Call]:
        """SOQL requests (first pages and ``nextRecordsUrl`` pages)."""
        return [call for call in self.api_calls() if "/query" in call.path]

    @property
    def api_usage(self) -> int:
        """API requests counted in the rolling 24 hours (what ``Sforce-Limit-Info`` reports)."""
        self._prune_usage(self.clock())
        return len(self._api_calls)

    @api_usage.setter
    def api_usage(self, used: int) -> None:
        """Pretend ``used`` API requests happened just now (to test the limit without making them)."""
        now = self.clock()
        self._api_calls = deque(now for _ in range(used))

    def contacts_with_email(self, email: str) -> list[str]:
        """Ids of live contacts with this email (case-insensitive), oldest first."""
        wanted = email.strip().lower()
        rows = [row for row in self._live_contacts() if str(row.get("Email") or "").lower() == wanted]
        return [str(row["Id"]) for row in soql.sort_rows(rows, _OLDEST_FIRST)]

    # -- what tests poke -------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        error_code: str | None = None,
        message: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
        path: str | None = None,
        skip: int = 0,
    ) -> None:
        """Answer the next ``n`` requests (those under ``path`` if given, else any, OAuth included; after letting
        ``skip`` through) with ``status`` and Salesforce's error array for it (``error_code``/``message`` override
        its parts; ``body`` replaces it), plus ``Retry-After`` if ``retry_after``."""
        if body is None:
            default_code, default_message = _DEFAULT_FAULTS.get(status, ("UNKNOWN_EXCEPTION", f"HTTP {status}"))
            body = [{"message": message or default_message, "errorCode": error_code or default_code}]
        super().fail_next(n, status=status, retry_after=retry_after, body=body, path=path, skip=skip)

    def fault_response(self, fault: Fault) -> Response:
        """Salesforce's error array for the status, unless the injection brought its own body."""
        if fault.body is None:
            default_code, default_message = _DEFAULT_FAULTS.get(
                fault.status, ("UNKNOWN_EXCEPTION", f"HTTP {fault.status}")
            )
            fault = dataclasses.replace(fault, body=[{"message": default_message, "errorCode": default_code}])
        return super().fault_response(fault)

    def expire_sessions(self) -> None:
        """Every session (access token) issued so far ends now: the next API call gets 401 INVALID_SESSION_ID."""
        for session in self.sessions.values():
            session.ended = True

    def grant_tokens(self, scopes: Sequence[str] = ("api", "refresh_token")) -> dict[str, Any]:
        """Tokens as if the OAuth dance had happened: the token endpoint's JSON answer."""
        chain = secrets.token_hex(8)
        refresh_token = self._new_refresh_token(chain, tuple(scopes)) if "refresh_token" in scopes else None
        return self._token_answer(self.instance_url, chain, tuple(scopes), refresh_token)

    def add_contact(
        self,
        fields: Mapping[str, Any],
        *,
        created_date: datetime | None = None,
        validate_values: bool = True,
    ) -> str:
        """Seed a contact (not recorded as a call, no duplicate rules); its id. ValueError if Salesforce
        would refuse it, unless ``validate_values`` is False (data imported around the rules)."""
        values = deserialize(fields, self._fields_by_lower, "Contact")
        if validate_values:
            errors = validate(values, self._fields_by_lower, creating=True)
            if errors:
                raise ValueError("; ".join(error.message for error in errors))
        return self._insert(values, created=created_date)

    def delete_contact(self, contact_id: str) -> None:
        """Move a contact to the recycle bin: queries stop finding it, updates get ENTITY_IS_DELETED."""
        self.contacts[contact_id]["IsDeleted"] = True

    # -- routing and the checks every request passes --------------------------------------------------

    def _routes(self) -> list[Route]:
        api = self._api_endpoint
        data = "/services/data/{version}"
        every_method = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        return [
            Route("/services/oauth2/authorize", self.recorded(self._authorize), methods=["GET"]),
            Route("/services/oauth2/token", self.recorded(self._token), methods=["POST"]),
            Route("/services/oauth2/revoke", self.recorded(self._revoke), methods=["POST"]),
            Route(f"{data}/sobjects/{{sobject}}/describe", api(self._describe), methods=["GET"]),
            Route(f"{data}/sobjects/{{sobject}}", api(self._create_one), methods=["POST"]),
            Route(f"{data}/sobjects/{{sobject}}/{{record_id}}", api(self._get_one), methods=["GET"]),
            Route(f"{data}/sobjects/{{sobject}}/{{record_id}}", api(self._update_one), methods=["PATCH"]),
            Route(f"{data}/query", api(self._query), methods=["GET"]),
            Route(f"{data}/query/", api(self._query), methods=["GET"]),
            Route(f"{data}/query/{{locator}}", api(self._query_more), methods=["GET"]),
            Route(f"{data}/composite/sobjects", api(self._collection_create), methods=["POST"]),
            Route(f"{data}/composite/sobjects", api(self._collection_update), methods=["PATCH"]),
            Route(f"{data}/{{path:path}}", api(self._not_found), methods=every_method),
            Route("/{path:path}", self.recorded(self._not_found), methods=every_method),
        ]

    def served_at(self, base_url: str) -> None:
        """Served on a socket: it is both the login host and the instance host, so the token answer sends
        clients back to it."""
        self.instance_url = base_url

    def answered(self, request: Request, response: Response) -> None:
        """Every API answer, failures included, reports the daily allocation's use."""
        if request.url.path.startswith(_DATA):
            response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/{self.daily_limit}"

    def _api_endpoint(self, handler: Handler) -> Handler:
        """A REST API route: the instance host, a live session, the daily allocation, then the handler."""

        async def guarded(request: Request) -> Response:
            if not _is_version(request.path_params.get("version", "")):
                return _errors(404, "NOT_FOUND", _NOT_FOUND)
            if request.url.netloc.lower() != urlsplit(self.instance_url).netloc.lower():
                return _session_invalid()  # the login host knows no org sessions
            now = self.clock()
            session = self._session(request, now)
            if session is None:
                return _session_invalid()
            session.last_used = now
            self._prune_usage(now)
            if len(self._api_calls) >= self.daily_limit:
                return _errors(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self._api_calls.append(now)
            try:
                return await handler(request)
            except RequestError as error:
                return _errors(error.status, error.code, error.message)

        return self.recorded(guarded)

    def _session(self, request: Request, now: float) -> _Session | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token:
            return None
        session = self.sessions.get(token.strip())
        if session is None or session.ended or (session.chain in self.revoked_chains):
            return None
        if now - session.last_used > self.session_ttl:
            session.ended = True
            return None
        return session

    def _prune_usage(self, now: float) -> None:
        while self._api_calls and self._api_calls[0] <= now - _DAY:
            self._api_calls.popleft()

    # -- OAuth ------------------------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        params = request.query_params
        if params.get("client_id") != self.client_id:
            return JSONResponse({"error": "invalid_client_id", "error_description": "client identifier invalid"}, 400)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri != self.redirect_uri:
            return JSONResponse(
                {"error": "redirect_uri_mismatch", "error_description": "redirect_uri must match configuration"}, 400
            )
        state = params.get("state")

        def back(**answer: str) -> Response:
            if state is not None:
                answer["state"] = state
            separator = "&" if "?" in redirect_uri else "?"
            return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

        if params.get("response_type") != "code":
            return back(error="unsupported_response_type", error_description="response type not supported")
        scopes = tuple((params.get("scope") or "api refresh_token").split())
        if not set(scopes) <= _SCOPES_KNOWN:
            return back(error="invalid_scope", error_description="the requested scope is not allowed")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method", "S256")
        if challenge and method != "S256":
            return back(error="invalid_request", error_description="unsupported code challenge method")
        if not challenge and self.require_pkce:
            return back(error="invalid_request", error_description="missing required code challenge")
        if not self.consent:
            return back(error="access_denied", error_description="end-user denied authorization")
        code = "aPrx" + secrets.token_urlsafe(32)
        self.auth_codes[code] = AuthorizationCode(redirect_uri, scopes, challenge or None, self.clock() + _CODE_TTL)
        return back(code=code)

    async def _token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        grant_type = form.get("grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if not hmac.compare_digest(form.get("client_secret", ""), self.client_secret):
            return _oauth_error("invalid_client", "invalid client credentials")
        login_base = str(request.base_url).rstrip("/")
        if grant_type == "authorization_code":
            return self._grant_code(form, login_base)
        return self._grant_refresh(form, login_base)

    def _grant_code(self, form: Mapping[str, str], login_base: str) -> Response:
        code = self.auth_codes.pop(form.get("code", ""), None)  # single use: spent by this attempt
        if code is None or code.expires_at < self.clock():
            return _oauth_error("invalid_grant", "expired authorization code")
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("redirect_uri_mismatch", "redirect_uri must match configuration")
        if code.code_challenge is not None:
            verifier = form.get("code_verifier", "")
            if not verifier or not hmac.compare_digest(pkce_challenge(verifier), code.code_challenge):
                return _oauth_error("invalid_grant", "invalid code verifier")
        chain = secrets.token_hex(8)
        refresh_token = self._new_refresh_token(chain, code.scopes) if _offline(code.scopes) else None
        return JSONResponse(self._token_answer(login_base, chain, code.scopes, refresh_token))

    def _grant_refresh(self, form: Mapping[str, str], login_base: str) -> Response:
        entry = self.refresh_tokens.get(form.get("refresh_token", ""))
        if entry is None or entry.chain in self.revoked_chains:
            return _oauth_error("invalid_grant", "expired access/refresh token")
        if entry.spent:
            self._revoke_chain(entry.chain)  # a rotated-away token came back: assume it was stolen
            return _oauth_error("invalid_grant", "expired access/refresh token")
        rotated = None
        if self.rotate_refresh_tokens:
            entry.spent = True
            rotated = self._new_refresh_token(entry.chain, entry.scopes)
        return JSONResponse(self._token_answer(login_base, entry.chain, entry.scopes, rotated))

    async def _revoke(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        token = form.get("token", "")
        refresh = self.refresh_tokens.get(token)
        if refresh is not None and refresh.chain not in self.revoked_chains:
            self._revoke_chain(refresh.chain)
            return Response(status_code=200)
        session = self.sessions.get(token)
        if session is not None and not session.ended and session.chain not in self.revoked_chains:
            session.ended = True
            return Response(status_code=200)
        return _oauth_error("invalid_token", "invalid token")  # unknown, or revoked already

    def _new_refresh_token(self, chain: str, scopes: tuple[str, ...]) -> str:
        token = "5Aep861" + secrets.token_urlsafe(60)
        self.refresh_tokens[token] = _RefreshToken(chain, scopes)
        return token

    def _revoke_chain(self, chain: str) -> None:
        self.revoked_chains.add(chain)
        for session in self.sessions.values():
            if session.chain == chain:
                session.ended = True

    def _token_answer(
        self, login_base: str, chain: str, scopes: tuple[str, ...], refresh_token: str | None
    ) -> dict[str, Any]:
        now = self.clock()
        access_token = f"{self.org_id[:15]}!AR{secrets.token_urlsafe(72)}"
        self.sessions[access_token] = _Session(chain, scopes, now)
        identity = f"{login_base}/id/{self.org_id}/{self.user_id}"
        issued_at = str(int(now * 1000))
        signature = hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        answer: dict[str, Any] = {"access_token": access_token}
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
        answer.update(
            {
                "signature": base64.b64encode(signature).decode(),
                "scope": " ".join(sorted(set(scopes) | {"id"})),
                "instance_url": self.instance_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
            }
        )
        return answer

    # -- sObjects ---------------------------------------------------------------------------------------

    async def _describe(self, request: Request) -> Response:
        if request.path_params["sobject"].lower() != "contact":
            return _errors(404, "NOT_FOUND", _NOT_FOUND)
        base = f"{_DATA}{request.path_params['version']}/sobjects/Contact"
        urls = {
            "compactLayouts": f"{base}/describe/compactLayouts",
            "rowTemplate": f"{base}/{{ID}}",
            "defaultValues": f"{base}/defaultValues?recordTypeId&fields",
            "describe": f"{base}/describe",
            "layouts": f"{base}/describe/layouts",
            "sobject": base,
        }
        return JSONResponse({**CONTACT_DESCRIBE, "fields": self.fields, "urls": urls})

    async def _create_one(self, request: Request) -> Response:
        if request.path_params["sobject"].lower() != "contact":
            return _errors(404, "NOT_FOUND", _NOT_FOUND)
        body = await _json(request)
        if not isinstance(body, dict):
            raise RequestError("JSON_PARSER_ERROR", "Cannot deserialize instance of Contact from START_ARRAY value")
        outcome = self._save_new(body, allow_save=_allow_save(request), version=_version(request))
        if outcome.errors:
            return JSONResponse([error.rest_json() for error in outcome.errors], status_code=400)
        return JSONResponse({"id": outcome.contact_id, "success": True, "errors": []}, status_code=201)

    async def _get_one(self, request: Request) -> Response:
        contact = self._find(request)
        if contact is None:
            return _errors(404, "NOT_FOUND", _NOT_FOUND)
        version = request.path_params["version"]
        return JSONResponse({"attributes": _attributes(version, str(contact["Id"])), **self._view(contact)})

    async def _update_one(self, request: Request) -> Response:
        contact = self._find(request)
        if contact is None:
            return _errors(404, "NOT_FOUND", _NOT_FOUND)
        body = await _json(request)
        if not isinstance(body, dict):
            raise RequestError("JSON_PARSER_ERROR", "Cannot deserialize instance of Contact from START_ARRAY value")
        outcome = self._save_existing(str(contact["Id"]), body)
        if outcome.errors:
            return JSONResponse([error.rest_json() for error in outcome.errors], status_code=400)
        return Response(status_code=204)

    def _find(self, request: Request) -> dict[str, Any] | None:
        if request.path_params["sobject"].lower() != "contact":
            return None
        contact_id = normalize_id(request.path_params["record_id"], "003")
        contact = self.contacts.get(contact_id or "")
        return contact if contact is not None and not contact["IsDeleted"] else None

    async def _collection_create(self, request: Request) -> Response:
        records, all_or_none = await self._collection_request(request)
        parsed = [self._parse_record(record, creating=True) for record in records]  # call-level errors first
        snapshot = copy.deepcopy(self.contacts)
        results: list[dict[str, Any]] = []
        for values in parsed:
            if isinstance(values, RecordError):
                results.append({"success": False, "errors": [values.collection_json()]})
                continue
            outcome = self._save_new(values, allow_save=_allow_save(request), version=_version(request), parsed=True)
            if outcome.errors:
                results.append({"success": False, "errors": [error.collection_json() for error in outcome.errors]})
            else:
                results.append({"id": outcome.contact_id, "success": True, "errors": []})
        return JSONResponse(self._all_or_none(results, snapshot) if all_or_none else results)

    async def _collection_update(self, request: Request) -> Response:
        records, all_or_none = await self._collection_request(request)
        parsed = [self._parse_record(record, creating=False) for record in records]
        snapshot = copy.deepcopy(self.contacts)
        results: list[dict[str, Any]] = []
        for record, values in zip(records, parsed, strict=True):
            raw_id = record.get("id", record.get("Id"))
            shown_id = raw_id if isinstance(raw_id, str) else None
            if isinstance(values, RecordError):
                results.append({"id": shown_id, "success": False, "errors": [values.collection_json()]})
                continue
            contact_id = normalize_id(shown_id or "", "003")
            assert contact_id is not None  # _parse_record checked it
            outcome = self._save_existing(contact_id, values, parsed=True)
            if outcome.errors:
                errors = [error.collection_json() for error in outcome.errors]
                results.append({"id": contact_id, "success": False, "errors": errors})
            else:
                results.append({"id": contact_id, "success": True, "errors": []})
        return JSONResponse(self._all_or_none(results, snapshot) if all_or_none else results)

    async def _collection_request(self, request: Request) -> tuple[list[dict[str, Any]], bool]:
        body = await _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise RequestError("INVALID_FIELD", "Unexpected parameter encountered during deserialization")
        records = body["records"]
        if len(records) > _COLLECTION_LIMIT:
            raise RequestError(
                "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records into this call"
            )
        if not all(isinstance(record, dict) for record in records):
            raise RequestError("JSON_PARSER_ERROR", "Cannot deserialize instance of SObject from VALUE_STRING value")
        for record in records:
            attributes = record.get("attributes")
            sobject = attributes.get("type") if isinstance(attributes, dict) else None
            if not sobject:
                raise RequestError("INVALID_TYPE", "Must send a concrete entity type.")
            if str(sobject).lower() != "contact":
                raise RequestError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        return records, bool(body.get("allOrNone", False))

    def _parse_record(self, record: Mapping[str, Any], *, creating: bool) -> dict[str, Any] | RecordError:
        """The record's values (raising RequestError for call-level faults), or its own id error."""
        raw_id = record.get("id", record.get("Id"))
        values = deserialize(
            {k: v for k, v in record.items() if k not in ("attributes", "id", "Id")}, self._fields_by_lower, "Contact"
        )
        if creating:
            if raw_id is not None:
                return RecordError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ("Id",))
            return values
        if not isinstance(raw_id, str) or not raw_id:
            return RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ())
        contact_id = normalize_id(raw_id, "003")
        if contact_id is None:
            return RecordError("MALFORMED_ID", f"Contact ID: id value of incorrect type: {raw_id}", ("Id",))
        contact = self.contacts.get(contact_id)
        if contact is None:
            return RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", ())
        if contact["IsDeleted"]:
            return RecordError("ENTITY_IS_DELETED", "entity is deleted", ())
        return values

    def _all_or_none(self, results: list[dict[str, Any]], snapshot: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        if all(result["success"] for result in results):
            return results
        self.contacts = snapshot
        rolled_back = {
            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "message": (
                "Record rolled back because not all records were valid and the request was using AllOrNone header"
            ),
            "fields": [],
        }
        return [{"success": False, "errors": [rolled_back]} if result["success"] else result for result in results]

    def _save_new(
        self, body: Mapping[str, Any], *, allow_save: bool, version: str, parsed: bool = False
    ) -> _SaveOutcome:
        values = (
            dict(body)
            if parsed
            else deserialize({k: v for k, v in body.items() if k != "attributes"}, self._fields_by_lower, "Contact")
        )
        errors = validate(values, self._fields_by_lower, creating=True)
        if errors:
            return _SaveOutcome(errors=errors)
        if self.duplicate_rules and not (allow_save and self.duplicate_rules_allow_save):
            email = str(values.get("Email") or "")
            matches = self.contacts_with_email(email) if email else []
            if matches:
                error = _duplicate_error(matches, version, allow_save=self.duplicate_rules_allow_save)
                return _SaveOutcome(errors=[error])
        return _SaveOutcome(contact_id=self._insert(values))

    def _save_existing(self, contact_id: str, body: Mapping[str, Any], *, parsed: bool = False) -> _SaveOutcome:
        values = (
            dict(body)
            if parsed
            else deserialize(
                {k: v for k, v in body.items() if k not in ("attributes", "Id", "id")}, self._fields_by_lower, "Contact"
            )
        )
        errors = validate(values, self._fields_by_lower, creating=False)
        if errors:
            return _SaveOutcome(errors=errors)
        contact = self.contacts[contact_id]
        contact.update(values)
        contact["LastModifiedDate"] = format_datetime(datetime.fromtimestamp(self.clock(), UTC))
        contact["Name"] = _full_name(contact)
        return _SaveOutcome(contact_id=contact_id)

    def _insert(self, values: Mapping[str, Any], *, created: datetime | None = None) -> str:
        contact_id = make_id("003", next(self._contact_numbers))
        stamp = format_datetime(created or datetime.fromtimestamp(self.clock(), UTC))
        contact: dict[str, Any] = {str(described["name"]): None for described in self.fields}
        for described in self.fields:
            if described["type"] == "boolean":
                contact[str(described["name"])] = bool(described.get("defaultValue") or False)
        contact.update(
            {
                "Id": contact_id,
                "IsDeleted": False,
                "OwnerId": self.user_id,
                "CreatedById": self.user_id,
                "CreatedDate": stamp,
                "LastModifiedDate": stamp,
            }
        )
        contact.update(values)
        contact["Name"] = _full_name(contact)
        self.contacts[contact_id] = contact
        return contact_id

    def _view(self, contact: Mapping[str, Any]) -> dict[str, Any]:
        """The contact as queries see it: stored values plus computed formula fields."""
        row = dict(contact)
        row["Engagement_Score__c"] = 0.0 if row.get("HasOptedOutOfEmail") else 10.0
        return row

    def _live_contacts(self) -> list[dict[str, Any]]:
        return [self._view(contact) for contact in self.contacts.values() if not contact["IsDeleted"]]

    # -- SOQL -----------------------------------------------------------------------------------------

    async def _query(self, request: Request) -> Response:
        text = request.query_params.get("q")
        if not text:
            return _errors(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            query = soql.parse(text)
            if query.sobject.lower() != "contact":
                raise soql.SoqlError(
                    "INVALID_TYPE",
                    f"\n{text}\n^\nERROR at Row:1:Column:1\nsObject type '{query.sobject}' is not supported.",
                )
            query = query.resolve(self._canonical_field)
        except soql.SoqlError as error:
            return _errors(400, error.code, error.message)
        matching = [row for row in self._live_contacts() if soql.matches(query.where, row)]
        rows = soql.sort_rows(matching, query.order_by)
        if query.limit is not None:
            rows = rows[: query.limit]
        version = request.path_params["version"]
        records = [
            {"attributes": _attributes(version, str(row["Id"])), **{name: row.get(name) for name in query.fields}}
            for row in rows
        ]
        return JSONResponse(self._page(version, records, len(records), 0, "01g" + secrets.token_hex(6)))

    async def _query_more(self, request: Request) -> Response:
        cursor, _, offset_text = request.path_params["locator"].rpartition("-")
        records = self._cursors.get(cursor)
        if records is None or not offset_text.isdigit():
            return _errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return JSONResponse(self._page(request.path_params["version"], records, len(records), int(offset_text), cursor))

    def _page(
        self, version: str, records: list[dict[str, Any]], total: int, offset: int, cursor: str
    ) -> dict[str, Any]:
        end = offset + self.query_batch_size
        page: dict[str, Any] = {"totalSize": total, "done": end >= total}
        if end < total:
            self._cursors[cursor] = records
            page["nextRecordsUrl"] = f"{_DATA}{version}/query/{cursor}-{end}"
        page["records"] = records[offset:end]
        return page

    def _canonical_field(self, name: str) -> str | None:
        described = self._fields_by_lower.get(name.lower())
        return str(described["name"]) if described is not None else None

    async def _not_found(self, request: Request) -> Response:
        return _errors(404, "NOT_FOUND", _NOT_FOUND)


# -- helpers -------------------------------------------------------------------------------------------

_OLDEST_FIRST = (soql.OrderItem("CreatedDate"), soql.OrderItem("Id"))
_DEFAULT_FAULTS = {
    400: ("INVALID_REQUEST", "Bad request"),
    401: ("INVALID_SESSION_ID", _SESSION_INVALID),
    403: ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    404: ("NOT_FOUND", _NOT_FOUND),
    500: (
        "UNKNOWN_EXCEPTION",
        "An unexpected error occurred. Please include this ErrorId if you contact support: "
        "1730955361-49792 (-1117026034)",
    ),
    502: ("UNKNOWN_EXCEPTION", "Bad gateway"),
    503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable; try again later."),
}


def _duplicate_error(matches: Sequence[str], version: str, *, allow_save: bool) -> RecordError:
    """DUPLICATES_DETECTED with the ``duplicateResut`` the single-record endpoints send (matches oldest first)."""
    message = "Use one of these records?"
    result = {
        "allowSave": allow_save,
        "duplicateRule": "Standard_Rule_for_Contacts_with_Duplicate_Leads",
        "duplicateRuleEntityType": "Contact",
        "errorMessage": message,
        "matchResults": [
            {
                "entityType": "Contact",
                "errors": [],
                "matchEngine": "ExactMatchEngine",
                "matchRecords": [
                    {
                        "additionalInformation": [],
                        "fieldDiffs": [],
                        "matchConfidence": 100.0,
                        "record": {"attributes": _attributes(version, match), "Id": match},
                    }
                    for match in matches
                ],
                "rule": "Standard_Contact_Match_Rule_v1_1",
                "size": len(matches),
                "success": True,
            }
        ],
    }
    return RecordError("DUPLICATES_DETECTED", message, (), duplicate_result=result)


def _errors(status: int, code: str, message: str, fields: Sequence[str] | None = None) -> JSONResponse:
    """Salesforce's top-level REST error: an array of ``{message, errorCode[, fields]}``."""
    error: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        error["fields"] = list(fields)
    headers = {"WWW-Authenticate": 'Token realm="Salesforce", error="invalid_token"'} if status == 401 else None
    return JSONResponse([error], status_code=status, headers=headers)


def _session_invalid() -> JSONResponse:
    return _errors(401, "INVALID_SESSION_ID", _SESSION_INVALID)


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _attributes(version: str, contact_id: str) -> dict[str, str]:
    return {"type": "Contact", "url": f"{_DATA}{version}/sobjects/Contact/{contact_id}"}


def _full_name(contact: Mapping[str, Any]) -> str:
    return " ".join(str(part) for part in (contact.get("FirstName"), contact.get("LastName")) if part)


def _offline(scopes: Iterable[str]) -> bool:
    return bool({"refresh_token", "offline_access", "full"} & set(scopes))


def _is_version(value: str) -> bool:
    number = value[1:] if value.startswith("v") else ""
    major, _, minor = number.partition(".")
    return major.isdigit() and minor.isdigit() and len(minor) == 1


def _version(request: Request) -> str:
    return str(request.path_params.get("version", "v58.0"))


def _allow_save(request: Request) -> bool:
    header = request.headers.get("Sforce-Duplicate-Rule-Header", "")
    settings = dict(part.strip().partition("=")[::2] for part in header.split(",") if "=" in part)
    return settings.get("allowSave", "").strip().lower() == "true"


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise RequestError("JSON_PARSER_ERROR", "Unexpected character in the request body") from None
