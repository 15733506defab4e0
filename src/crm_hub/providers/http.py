"""The adapter toolkit: what every provider that talks HTTP to its CRM needs, written once and tested once.

Start here when writing a provider (``docs/plugins.md`` shows it first)::

    CrmHttpClient               one CRM's HTTP client: a bearer token per call, every call bounded end to end
                                (and by the request's remaining deadline), seen by the core (rate budget, call
                                counts), and a call that got no answer raised as ``Unavailable``; ``oauth_form``
                                posts to a token or revoke endpoint with an ``OAuthClient``'s credentials
    classify_transport          that last step alone: the error never quotes the URL (it may hold lead data)
    classify_status             the usual meaning of an error answer's status, for what a CRM has no special
                                case for: 401, 403, 404, 429, 5xx, any other 4xx
    classify_oauth              the usual meaning of a token or revoke endpoint's refusal (RFC 6749's errors)
    json_object / json_body     a success's JSON object (or ``Unavailable``); an error answer's JSON, if any
    mappings / mapping / text   read JSON defensively: a list's objects, an object, a stripped string
    parse_retry_after           ``Retry-After`` in seconds, from delta-seconds or an HTTP date
    scrub / sentence            error messages: secrets replaced, one sentence, at most 300 characters
    secrets_of                  the strings a provider's errors must never quote: the tokens, the client secret
    authorization_url           the consent URL: an ``OAuthClient``'s id and redirect URL, state, PKCE's challenge
    pkce_verifier / pkce_challenge   PKCE with S256 (RFC 7636)
    token_set                   a token endpoint's answer as a ``TokenSet``, keeping what a refresh answer omits
    trusted_api_host            a per-account API host named by a token answer, checked before tokens go there
    write_one_by_one            for CRMs that write one record per call: one result per record, in order, a
                                record's refusal in its own result
    normalize_email             how crm_hub compares emails: trimmed, lower case

Nothing here knows a CRM: the provider passes its name and label, and keeps what is its own (how the CRM's
errors read, which operation a path is).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import httpx

from crm_hub.errors import (
    AccessDenied,
    AuthExpired,
    ProviderError,
    RateLimited,
    RefreshRejected,
    Rejected,
    Unavailable,
)
from crm_hub.providers import (
    CrmOperation,
    Quota,
    TokenSet,
    WriteResult,
    crm_request,
    is_secure_url,
    time_left,
    write_in_batches,
)

__all__ = [
    "MAX_MESSAGE_LENGTH",
    "CrmHttpClient",
    "OAuthClient",
    "authorization_url",
    "classify_oauth",
    "classify_status",
    "classify_transport",
    "json_body",
    "json_object",
    "mapping",
    "mappings",
    "normalize_email",
    "parse_retry_after",
    "pkce_challenge",
    "pkce_verifier",
    "scrub",
    "secrets_of",
    "sentence",
    "text",
    "token_set",
    "truncate",
    "trusted_api_host",
    "write_one_by_one",
]

_Item = TypeVar("_Item")

#: Error messages are cut at this length: a CRM may echo a whole record back.
MAX_MESSAGE_LENGTH = 300
#: What the CRM's answer says of the account's allowance, read from each response (None: nothing said).
QuotaReader = Callable[[httpx.Response, TokenSet | None], Quota | None]


class OAuthClient(Protocol):
    """The service's OAuth client at one CRM, as the provider's settings hold it (``authorization_url`` and
    ``CrmHttpClient.oauth_form`` take one)."""

    @property
    def client_id(self) -> str: ...

    @property
    def client_secret(self) -> str: ...

    @property
    def redirect_url(self) -> str: ...


class CrmHttpClient:
    """One CRM's HTTP client, shared by every team (tokens come with each call, never stored).

    ``timeout`` bounds each call end to end — connecting, sending, waiting, reading — and never past the
    deadline of the request it serves (``time_left``). ``transport`` replaces the network (tests hand it
    ``httpx.ASGITransport(fake.app)``). ``quota`` reads what the CRM says of the account's allowance from
    each answer, for the core's rate budget.
    """

    def __init__(
        self,
        provider: str,
        label: str,
        *,
        base_url: str = "",
        timeout: float = 20.0,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = "crm-hub",
        quota: QuotaReader | None = None,
    ) -> None:
        self.provider = provider
        self.label = label
        self.timeout = timeout
        self._quota = quota
        self._client = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"Accept": "application/json", "User-Agent": user_agent},
            follow_redirects=False,  # a redirect could carry the token to another host
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        operation: CrmOperation,
        tokens: TokenSet | None = None,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request (with ``tokens``' bearer token, if given) and return the CRM's answer, whatever its
        status. No answer at all — a timeout, a refused or dropped connection — raises ``classify_transport``."""
        sent = {**(headers or {}), **({"Authorization": f"Bearer {tokens.access_token}"} if tokens else {})}
        budget = self._budget()
        async with crm_request(self.provider, operation) as request:
            try:
                # httpx's timeouts bound each phase; this bounds the whole call (and in-process transports too).
                async with asyncio.timeout(budget):
                    response = await self._client.request(
                        method, url, headers=sent, json=json, data=form, params=params
                    )
            except (TimeoutError, httpx.TransportError) as error:
                raise classify_transport(error, provider=self.provider, label=self.label) from None
            request.answered(response.status_code, self._quota(response, tokens) if self._quota else None)
            return response

    async def oauth_form(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        client: OAuthClient,
        operation: CrmOperation = "token",
        tokens: TokenSet | None = None,
        refused: Callable[[httpx.Response], ProviderError] | None = None,
    ) -> httpx.Response:
        """POST ``form`` and ``client``'s id and secret (RFC 6749's ``client_secret_post``) to a token or revoke
        endpoint and return its 200 answer. Any other answer raises ``refused(response)``, by default
        ``classify_oauth`` (refreshing when the form's grant is ``refresh_token``), which never quotes ``tokens``
        (those refreshed or revoked), the client secret, or the form's code, verifier and refresh token."""
        sent = {**form, "client_id": client.client_id, "client_secret": client.client_secret}
        response = await self.request("POST", url, operation=operation, form=sent)
        if response.status_code == 200:
            return response
        if refused is not None:
            raise refused(response)
        grant = [form.get(name) for name in ("code", "code_verifier", "refresh_token")]
        refreshing = form.get("grant_type") == "refresh_token"
        secrets = secrets_of(tokens, client.client_secret, *grant)
        raise classify_oauth(response, provider=self.provider, label=self.label, refreshing=refreshing, secrets=secrets)

    def json_object(self, response: httpx.Response) -> dict[str, Any]:
        """``json_object`` for this CRM's answers."""
        return json_object(response, provider=self.provider, label=self.label)

    def token_set(
        self,
        answer: Mapping[str, Any],
        *,
        previous: TokenSet | None = None,
        api_host: str | None = None,
        allowed_suffixes: Sequence[str] = (),
        now: datetime | None = None,
    ) -> TokenSet:
        """``token_set`` for this CRM's token answers."""
        return token_set(
            answer,
            provider=self.provider,
            label=self.label,
            previous=previous,
            api_host=api_host,
            allowed_suffixes=allowed_suffixes,
            now=now,
        )

    def _budget(self) -> float:
        left = time_left()
        if left is None:
            return self.timeout
        if left <= 0:
            raise Unavailable(
                f"The request ran out of time before {self.label} could be called; try again.",
                provider=self.provider,
                maybe_applied=False,
            )
        return min(self.timeout, left)


def classify_transport(error: Exception, *, provider: str, label: str) -> Unavailable:
    """A request that got no HTTP answer: timed out, refused, reset. Never quotes the URL or the cause."""
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        message = f"{label} did not answer in time; try again shortly."
    else:
        message = f"Could not reach {label} ({type(error).__name__}); try again shortly."
    # A connection that never opened carried no request: nothing can have been written.
    unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
    return Unavailable(message, provider=provider, maybe_applied=not unsent)


def classify_status(
    response: httpx.Response,
    *,
    provider: str,
    label: str,
    detail: str = "",
    secrets: Iterable[str | None] = (),
    metadata: Mapping[str, str] | None = None,
) -> ProviderError:
    """The usual meaning of an error answer's status, for what the CRM has no special case for (the caller
    raises it): 401 ``AuthExpired``; 403 ``AccessDenied`` FORBIDDEN; 404 ``Rejected`` NOT_FOUND; 429
    ``RateLimited`` and 5xx ``Unavailable``, both with ``retry_after`` from ``Retry-After``; any other status
    ``Rejected`` REQUEST_INVALID. ``detail``, what the CRM said, ends the message with ``secrets`` scrubbed out."""
    status = response.status_code
    said = scrub(detail, secrets)
    wait = parse_retry_after(response.headers.get("Retry-After"))

    def error(kind: type[ProviderError], lead: str, **options: Any) -> ProviderError:
        return kind(sentence(lead, said), provider=provider, status=status, metadata=metadata, **options)

    if status == 401:
        return error(AuthExpired, f"{label} no longer accepts the access token")
    if status == 403:
        return error(AccessDenied, f"{label} refused access", reason="FORBIDDEN")
    if status == 404:
        return error(Rejected, f"{label} has no such record", reason="NOT_FOUND")
    if status == 429:
        return error(RateLimited, f"{label}'s rate limit was reached", retry_after=wait)
    if status >= 500:
        return error(
            Unavailable, f"{label} is unavailable right now (HTTP {status}); try again shortly", retry_after=wait
        )
    return error(Rejected, f"{label} refused the request (HTTP {status})", reason="REQUEST_INVALID")


def classify_oauth(
    response: httpx.Response,
    *,
    provider: str,
    label: str,
    refreshing: bool,
    secrets: Iterable[str | None] = (),
    client_settings: str | None = None,
) -> ProviderError:
    """The usual meaning of a token or revoke endpoint's refusal, by its OAuth ``error`` (RFC 6749 §5.2), for
    what the CRM has no special case for (the caller raises it): ``invalid_grant`` is ``RefreshRejected`` when
    ``refreshing``, else ``Rejected`` OAUTH_CODE_INVALID; ``invalid_client`` and ``unauthorized_client`` are
    ``AccessDenied`` OAUTH_CLIENT_INVALID, naming ``client_settings`` for the operator to check (by default
    ``{PROVIDER}_CLIENT_ID`` and ``{PROVIDER}_CLIENT_SECRET``: reconnecting would not help); anything else
    ``classify_status``. ``error_description`` is quoted with ``secrets`` scrubbed out."""
    body = mapping(json_body(response))
    code, said = text(body.get("error")), scrub(text(body.get("error_description")), secrets)
    if code not in ("invalid_grant", "invalid_client", "unauthorized_client"):
        return classify_status(response, provider=provider, label=label, detail=said or code, secrets=secrets)
    status, metadata = response.status_code, {"oauth_error": code}
    if code != "invalid_grant":
        check = client_settings or f"{provider.upper()}_CLIENT_ID and {provider.upper()}_CLIENT_SECRET"
        message = f"{label} does not accept this service's OAuth client: check {check}."
        return AccessDenied(message, reason="OAUTH_CLIENT_INVALID", provider=provider, status=status, metadata=metadata)
    if refreshing:
        message = sentence(f"{label} refused the refresh token", said)
        return RefreshRejected(message, provider=provider, status=status, metadata=metadata)
    message = sentence(
        f"{label} refused the authorization code", said or "expired, used already or a wrong PKCE verifier"
    )
    return Rejected(message, reason="OAUTH_CODE_INVALID", provider=provider, status=status, metadata=metadata)


# -- reading answers ---------------------------------------------------------------------------------


def json_object(response: httpx.Response, *, provider: str, label: str) -> dict[str, Any]:
    """A successful answer's JSON object; ``Unavailable`` (retried) when the body is not one."""
    try:
        payload = response.json()
    except ValueError:
        raise Unavailable(
            f"{label} answered HTTP {response.status_code} with a body that is not JSON.", provider=provider
        ) from None
    if not isinstance(payload, dict):
        raise Unavailable(f"{label} answered HTTP {response.status_code} with unexpected JSON.", provider=provider)
    return payload


def json_body(response: httpx.Response) -> Any:
    """An error answer's JSON, whatever its shape; None when it has no body or the body is not JSON."""
    try:
        return json.loads(response.content) if response.content else None
    except ValueError:
        return None


def mappings(value: Any) -> list[Mapping[str, Any]]:
    """The objects in a JSON list (anything else: none)."""
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def mapping(value: Any) -> Mapping[str, Any]:
    """A JSON object, or an empty one for anything else."""
    return value if isinstance(value, Mapping) else {}


def text(value: Any) -> str:
    """A JSON string, stripped; "" for anything else."""
    return value.strip() if isinstance(value, str) else ""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    raw = value.strip()
    try:
        seconds = float(raw)
    except ValueError:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return max(seconds, 0.0)


# -- error messages ----------------------------------------------------------------------------------


def secrets_of(tokens: TokenSet | None, *others: str | None) -> tuple[str | None, ...]:
    """What an error message built from the CRM's words must never contain: the tokens and ``others``."""
    held = (tokens.access_token, tokens.refresh_token) if tokens is not None else ()
    return (*held, *others)


def scrub(message: str, secrets: Iterable[str | None]) -> str:
    """``message`` with every secret (of four characters or more) replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "[redacted]")
    return message


def truncate(message: str, limit: int = MAX_MESSAGE_LENGTH) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


def sentence(lead: str, detail: str = "") -> str:
    """``"{lead}: {detail}."`` — one sentence, ending once, at most MAX_MESSAGE_LENGTH characters."""
    detail = detail.strip()
    if not detail:
        return truncate(f"{lead}.")
    return truncate(f"{lead}: {detail}" + ("" if detail[-1] in ".?!" else "."))


# -- OAuth -------------------------------------------------------------------------------------------


def authorization_url(
    url: str,
    client: OAuthClient,
    *,
    state: str,
    code_challenge: str | None,
    response_type: str | None = "code",
    **params: str,
) -> str:
    """The consent URL (RFC 6749 §4.1.1): ``url`` with ``response_type`` (None leaves it out, for a CRM that
    takes none), ``client``'s id and redirect URL, the CRM's own ``params`` (``scope``), ``state`` and — given a
    challenge — ``code_challenge`` with ``code_challenge_method=S256`` (RFC 7636); after any query ``url`` has,
    spaces encoded as ``%20``."""
    query = {"response_type": response_type} if response_type else {}
    query |= {"client_id": client.client_id, "redirect_uri": client.redirect_url, **params, "state": state}
    if code_challenge:
        query |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    return f"{url}{'&' if '?' in url else '?'}{urlencode(query, quote_via=quote)}"


def pkce_verifier() -> str:
    """A fresh PKCE code verifier: 86 URL-safe characters (RFC 7636 allows 43 to 128)."""
    return secrets.token_urlsafe(64)


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier``: base64url of its SHA-256, unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def token_set(
    answer: Mapping[str, Any],
    *,
    provider: str,
    label: str,
    previous: TokenSet | None = None,
    api_host: str | None = None,
    allowed_suffixes: Sequence[str] = (),
    now: datetime | None = None,
) -> TokenSet:
    """The tokens in a token endpoint's answer (RFC 6749 §5.1): ``access_token`` (an answer without one is
    ``Unavailable``), ``refresh_token``, ``expires_in`` (seconds from ``now``: an aware UTC ``expires_at``) and
    ``scope`` (space-separated). What the answer leaves out is kept from ``previous``, the tokens a refresh
    renews: their refresh token (a CRM that does not rotate it sends none), scopes, ``instance_url`` and
    ``extra``. ``api_host`` names the answer's field holding the account's API host, if the CRM has one: checked
    with ``trusted_api_host`` (and ``allowed_suffixes``) and kept as ``instance_url``. Other fields of the
    CRM's own (an account id) are the caller's to read and ``dataclasses.replace`` in."""
    access_token = text(answer.get("access_token"))
    if not access_token:
        raise Unavailable(f"{label}'s token answer had no access token; try again.", provider=provider)
    expires_in, scope = answer.get("expires_in"), answer.get("scope")
    # A lifetime that is not a finite number says nothing: expires_at None, and the core refreshes on a 401.
    seconds = expires_in if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) else math.inf
    host = previous.instance_url if previous else None
    if api_host is not None:  # a refresh answer may leave the host out: the account keeps the one it had
        host = trusted_api_host(
            answer.get(api_host) or host, provider=provider, label=label, allowed_suffixes=allowed_suffixes
        )
    return TokenSet(
        access_token=access_token,
        refresh_token=text(answer.get("refresh_token")) or (previous.refresh_token if previous else None),
        expires_at=(now or datetime.now(UTC)) + timedelta(seconds=seconds) if math.isfinite(seconds) else None,
        instance_url=host,
        scopes=tuple(scope.split()) if isinstance(scope, str) else (previous.scopes if previous else ()),
        extra=dict(previous.extra) if previous else {},
    )


def trusted_api_host(
    value: Any,
    *,
    provider: str,
    label: str,
    allowed_suffixes: Sequence[str] = (),
    what: str = "an API host",
    reason: str = "API_HOST_UNTRUSTED",
) -> str:
    """A per-account API host named by a token answer (Salesforce's ``instance_url``, Pipedrive's
    ``api_domain``), checked before any token is sent there: https (plain http only to this machine, for a
    fake), no path, query or fragment, and — with ``allowed_suffixes`` — a host under one of them. Returns it
    without a trailing slash; ``AccessDenied`` with ``reason`` otherwise (``what`` names the host's field)."""
    url = value.strip() if isinstance(value, str) else ""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    loopback = parts.scheme == "http"  # is_secure_url allows plain http to loopback only
    under = not allowed_suffixes or loopback or any(host.endswith(suffix.lower()) for suffix in allowed_suffixes)
    if not url or not is_secure_url(url) or parts.query or parts.fragment or parts.path not in ("", "/") or not under:
        raise AccessDenied(
            f"{label} returned {what} this service will not send tokens to.",
            reason=reason,
            provider=provider,
        )
    return url.rstrip("/")


# -- writing -----------------------------------------------------------------------------------------


async def write_one_by_one(
    items: Sequence[_Item], write_one: Callable[[_Item], Awaitable[WriteResult]]
) -> list[WriteResult]:
    """For a CRM without batch endpoints: write each record with its own call, one result per record, in
    order. A ``Rejected`` that ``write_one`` raises (or returns as ``WriteResult(error=...)``) is that record's
    refusal, its result, and the next record is written; any other error is call-level (expired token, rate
    limit, outage): it raises while nothing is written yet, so the core may retry the whole call, and after
    that the records not reached carry it (see ``write_in_batches``)."""

    async def one(chunk: Sequence[_Item]) -> list[WriteResult]:
        try:
            return [await write_one(chunk[0])]
        except Rejected as refused:
            return [WriteResult(error=refused)]

    return await write_in_batches(items, 1, one)


def normalize_email(email: str | None) -> str:
    """How crm_hub compares emails: trimmed and lower-cased ("" for none)."""
    return (email or "").strip().lower()
