"""The provider contract: what a CRM adapter plugin implements.

A provider is a pure adapter to one CRM's HTTP API. It never touches the database, the vault, JWTs or
gRPC: crm_hub's core hands it a decrypted ``TokenSet`` for each call and owns everything around it
(retries, refresh-on-expiry, duplicate policies, dry runs, the timeline).

The interface is async and batch-first: contact operations take lists and return one result per input,
in order, so bulk syncs use the CRM's batch endpoints without a redesign. Providers classify the CRM's
failures by raising the ``crm_hub.errors.ProviderError`` subclasses (``AuthExpired``, ``RateLimited``,
``Rejected``, ``Unavailable``, ``RefreshRejected``).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

from crm_hub.errors import ConfigurationError, ProviderError

__all__ = [
    "DUPLICATE_CONTACT",
    "FIELD_TYPES",
    "PROVIDER_NAME_PATTERN",
    "ContactInput",
    "ContactUpdate",
    "CrmField",
    "CrmOperation",
    "CrmProvider",
    "CrmRequest",
    "CrmRequestObserver",
    "FieldOption",
    "FieldType",
    "PartialWrite",
    "ProviderCapabilities",
    "Quota",
    "RateLimit",
    "TokenSet",
    "WriteResult",
    "crm_request",
    "is_secure_url",
    "missing_settings_problem",
    "observe_every_request",
    "observing",
    "request_deadline",
    "time_left",
    "write_in_batches",
]

_Item = TypeVar("_Item")

FieldType = Literal["string", "textarea", "number", "boolean", "date", "email", "phone", "url", "select"]
FIELD_TYPES: tuple[FieldType, ...] = (
    "string", "textarea", "number", "boolean", "date", "email", "phone", "url", "select",
)  # fmt: skip
#: The ``reason`` a provider gives a ``Rejected`` error when the CRM refuses a contact as a duplicate;
#: put the existing contact's id in ``metadata["contact_id"]`` (and any others in ``"other_contact_ids"``).
DUPLICATE_CONTACT = "DUPLICATE_CONTACT"
#: Provider names are path segments of the REST API and keys of the status map.
PROVIDER_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class FieldOption:
    """One choice of a ``select`` field. Leads name it by ``value`` or ``label``; the core writes ``wire_value``
    when the CRM's API takes something else than the value people see (Pipedrive's integer option ids), else
    ``value``."""

    value: str
    label: str
    wire_value: str | int | None = None

    @property
    def written(self) -> str | int:
        """What a write carries for this option."""
        return self.value if self.wire_value is None else self.wire_value


@dataclass(frozen=True)
class CrmField:
    """One contact field of a CRM, described in crm_hub's common types."""

    name: str
    label: str
    type: FieldType
    required: bool = False
    writable: bool = True
    description: str = ""
    options: tuple[FieldOption, ...] = ()


@dataclass(frozen=True)
class TokenSet:
    """OAuth tokens of one team's connection. Stored only encrypted; ``repr`` never shows a token."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    #: Where the CRM wants API calls sent (Salesforce's instance_url); None when fixed.
    instance_url: str | None = None
    scopes: tuple[str, ...] = ()
    #: Non-secret provider extras worth keeping (e.g. HubSpot's hub_id).
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "instance_url": self.instance_url,
            "scopes": list(self.scopes),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenSet:
        expires_at = data.get("expires_at")
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=data.get("refresh_token"),
            expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
            instance_url=data.get("instance_url"),
            scopes=tuple(data.get("scopes") or ()),
            extra=dict(data.get("extra") or {}),
        )


@dataclass(frozen=True)
class RateLimit:
    """A limit the CRM puts on one account's requests: at most ``requests`` in any ``per_seconds`` window.

    The core keeps it for every team's account, shared by all replicas and workers: a request waits for its
    slot rather than being refused by the CRM. OAuth token requests do not count (they are the app's, not the
    account's).
    """

    name: str
    requests: int
    per_seconds: float

    @classmethod
    def parse(cls, text: str, *, setting: str) -> RateLimit | None:
        """``"110/10s"`` → 110 requests per 10 s; ``"off"`` → None. ConfigurationError naming ``setting``."""
        value = text.strip().lower()
        if value in ("off", "none", "0"):
            return None
        requests, _, window = value.partition("/")
        try:
            count, seconds = int(requests), float(window.removesuffix("s") or "nan")
        except ValueError:
            count, seconds = 0, 0.0
        if count < 2 or not seconds > 0:
            raise ConfigurationError(f"{setting} must look like 110/10s (requests per seconds) or off, not {text!r}.")
        return cls(name=f"{window.removesuffix('s')}s", requests=count, per_seconds=seconds)


@dataclass(frozen=True)
class ProviderCapabilities:
    """What a CRM can do natively, so the core picks the cheapest calls."""

    #: Most records one batch call accepts.
    max_batch_size: int = 1
    #: One call creates-or-updates by email (HubSpot batch upsert with idProperty=email).
    upsert_by_email: bool = False
    #: The authorize and token endpoints accept PKCE (S256).
    pkce: bool = False
    #: A refresh may return a new refresh token that replaces (and invalidates) the old one. The core's
    #: single-flight refresh (and storing the new token atomically) protects every CRM alike; a failed refresh
    #: of such a CRM is retried only when the CRM surely did not get it (``maybe_applied`` False).
    rotates_refresh_tokens: bool = False
    #: The CRM refuses a second contact with the same email (HubSpot), so a ``create_new`` onto an existing
    #: email is previewed as a conflict; otherwise (Salesforce without duplicate rules) as a new contact.
    unique_email: bool = False


@dataclass(frozen=True)
class ContactInput:
    """A contact to create. ``properties`` are keyed by CRM field name, values already in the CRM's types."""

    properties: Mapping[str, Any]
    email: str | None = None


@dataclass(frozen=True)
class ContactUpdate:
    """A change to an existing contact: ``properties`` (CRM field name → value, coerced like ContactInput's) onto
    ``contact_id``. ``email`` is the match key: the lead's email, lowercased, that the contact was found by (None
    when there was none). A CRM whose contacts hold several emails keeps it among them and must not lose the
    others; the properties carry the email field only if the team maps one."""

    contact_id: str
    properties: Mapping[str, Any]
    email: str | None = None


@dataclass(frozen=True)
class WriteResult:
    """The outcome for one input record: a contact id, or the classified error for that record alone."""

    contact_id: str | None = None
    created: bool = False
    error: ProviderError | None = None
    #: When the CRM created the contact, if its answer says (timezone-aware). An upsert answers "not new" when
    #: an earlier attempt of the same sync created the contact and its answer was lost; with this the core
    #: still records ``created``.
    created_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_secure_url(url: str) -> bool:
    """An https URL, or plain http to this machine (a fake CRM): the only places tokens and secrets may go."""
    parts = urlsplit(url.strip())
    loopback = (parts.hostname or "").lower() in _LOOPBACK_HOSTS
    return bool(parts.hostname) and (parts.scheme == "https" or (parts.scheme == "http" and loopback))


def missing_settings_problem(label: str, missing: Sequence[str]) -> str | None:
    """The ``configuration_problem()`` text for a provider whose required settings ``missing`` are unset."""
    if not missing:
        return None
    verb, them = ("is", "it") if len(missing) == 1 else ("are", "them")
    return (
        f"{label} is not configured: {', '.join(missing)} {verb} not set. "
        f"Set {them}, or leave the plugin out with CRM_HUB_PLUGINS."
    )


class PartialWrite(Exception):
    """Raise from inside one batch when a call-level error stops it after some of its records got results."""

    def __init__(self, results: list[WriteResult], error: ProviderError) -> None:
        super().__init__(error.message)
        self.results = results
        self.error = error


async def write_in_batches(
    items: Sequence[_Item], size: int, write_batch: Callable[[Sequence[_Item]], Awaitable[list[WriteResult]]]
) -> list[WriteResult]:
    """Write ``items`` ``size`` at a time; one result per item, in order.

    A call-level error (expired token, rate limit, outage) is raised only while nothing has been written, so
    the caller may retry the whole call; once some records are written, the rest carry the error in their
    results instead, so the ids of the contacts already written are never lost.
    """
    results: list[WriteResult] = []
    for start in range(0, len(items), size):
        try:
            results.extend(await write_batch(items[start : start + size]))
            continue
        except PartialWrite as partial:
            results.extend(partial.results)
            error = partial.error
        except ProviderError as failure:
            error = failure
        if not any(result.ok for result in results):
            raise error
        results.extend(WriteResult(error=error) for _ in items[len(results) :])
        break
    return results


# -- Observing CRM requests ------------------------------------------------------------------------

#: What a request to the CRM is for: the labels of its rate budget, call counts, metrics and traces.
CrmOperation = Literal["token", "revoke", "fields", "lookup", "create", "update", "upsert"]


class CrmRequestObserver(Protocol):
    """Watches every request a provider sends (the core's rate budget, call counts, metrics, traces)."""

    async def started(self, provider: str, operation: CrmOperation) -> None:
        """Before the request is sent; may wait (for the rate budget)."""

    def finished(self, provider: str, operation: CrmOperation, request: CrmRequest) -> None:
        """Once it is answered, or failed without an answer (``request.error``)."""


@dataclass(frozen=True)
class Quota:
    """An API allowance the CRM reported in its answer (Salesforce's ``Sforce-Limit-Info``, HubSpot's
    ``X-HubSpot-RateLimit-*`` headers): ``used`` of ``limit`` requests in a window of ``window_seconds``."""

    name: str
    used: int
    limit: int
    window_seconds: int


@dataclass
class CrmRequest:
    """One request to the CRM as a provider reports it: ``answered(...)`` once the CRM has answered."""

    status: int | None = None
    quota: Quota | None = None
    seconds: float = 0.0
    error: BaseException | None = None

    def answered(self, status: int, quota: Quota | None = None) -> None:
        """The CRM answered with HTTP ``status``; ``quota`` is what it said of the account's allowance."""
        self.status = status
        self.quota = quota


#: When the work of the current request must be done (time.monotonic()): CRM calls and their retries never
#: run past it. The core sets it per RPC; provider HTTP clients read it with ``time_left``.
request_deadline_variable: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "crm_hub_request_deadline", default=None
)


@contextlib.contextmanager
def request_deadline(at: float | None) -> Iterator[None]:
    """Within this block, retries give up and HTTP calls time out rather than run past ``at`` (a
    time.monotonic() value): one budget for all the CRM calls of one request, not a timeout for each."""
    token = request_deadline_variable.set(at)
    try:
        yield
    finally:
        request_deadline_variable.reset(token)


def time_left() -> float | None:
    """Seconds until the current request's deadline (``request_deadline``), or None outside one."""
    at = request_deadline_variable.get()
    return None if at is None else max(0.0, at - time.monotonic())


_observers: contextvars.ContextVar[tuple[CrmRequestObserver, ...]] = contextvars.ContextVar(
    "crm_hub_request_observers", default=()
)


#: Observers of every request in the process, whatever task sends it (metrics, traces): after the block's own.
_process_observers: list[CrmRequestObserver] = []


@contextlib.contextmanager
def observing(observer: CrmRequestObserver) -> Iterator[None]:
    """Within this block (this task and what it awaits), ``observer`` sees every ``crm_request``."""
    token = _observers.set((*_observers.get(), observer))
    try:
        yield
    finally:
        _observers.reset(token)


def observe_every_request(observer: CrmRequestObserver) -> Callable[[], None]:
    """``observer`` sees every ``crm_request`` of the process from now on, after the observers of the block
    it runs in (so a request's wait for its rate budget is over when it starts); returns the way to stop."""
    _process_observers.append(observer)
    return lambda: _process_observers.remove(observer) if observer in _process_observers else None


@contextlib.asynccontextmanager
async def crm_request(provider: str, operation: CrmOperation) -> AsyncIterator[CrmRequest]:
    """Wrap each HTTP request a provider sends to its CRM, and call ``answered`` with the response::

        async with crm_request(self.name, "lookup") as request:
            response = await self._client.post(...)
            request.answered(response.status_code)

    The core's observers see it: it waits for the account's rate budget, and is counted and timed.
    """
    observers = (*_observers.get(), *_process_observers)
    for observer in observers:
        await observer.started(provider, operation)
    request = CrmRequest()
    started = time.perf_counter()
    try:
        yield request
    except BaseException as error:
        request.error = error
        raise
    finally:
        request.seconds = time.perf_counter() - started
        for observer in observers:
            observer.finished(provider, operation, request)


class CrmProvider(ABC):
    """Base class of every CRM adapter. Register instances through the ``register_providers`` hook."""

    #: Unique lowercase name, used in REST paths (``/integrations/{name}/...``) and status.
    name: ClassVar[str]
    #: Human name, e.g. "HubSpot".
    label: ClassVar[str]
    capabilities: ClassVar[ProviderCapabilities] = ProviderCapabilities()

    # -- OAuth -----------------------------------------------------------------------------------

    @abstractmethod
    def authorization_url(self, *, state: str, code_challenge: str | None) -> str:
        """The CRM's consent URL for this state (and PKCE S256 challenge when ``capabilities.pkce``)."""

    @abstractmethod
    async def exchange_code(self, *, code: str, code_verifier: str | None) -> TokenSet:
        """Trade an authorization code for tokens."""

    @abstractmethod
    async def refresh(self, tokens: TokenSet) -> TokenSet:
        """New tokens from the refresh token. Raise ``RefreshRejected`` when the CRM says invalid_grant."""

    async def revoke(self, tokens: TokenSet) -> None:  # noqa: B027 - optional hook, no-op by default
        """Revoke the tokens at the CRM. Best effort: the core ignores failures."""

    # -- Fields ----------------------------------------------------------------------------------

    @abstractmethod
    async def list_fields(self, tokens: TokenSet) -> list[CrmField]:
        """The contact fields, normalized to ``FIELD_TYPES``."""

    # -- Contacts (batch-first; results in input order) ------------------------------------------

    @abstractmethod
    async def find_contacts_by_email(self, tokens: TokenSet, emails: Sequence[str]) -> dict[str, list[str]]:
        """Existing contact ids per email (keys lowercased); emails with no contact map to ``[]``.

        List each email's contacts oldest first (ties by id): the core picks the first as *the* contact and
        reports the others, so the choice must be deterministic.
        """

    @abstractmethod
    async def create_contacts(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        """Create contacts, at most ``capabilities.max_batch_size`` per call."""

    @abstractmethod
    async def update_contacts(self, tokens: TokenSet, updates: Sequence[ContactUpdate]) -> list[WriteResult]:
        """Update contacts by id, at most ``capabilities.max_batch_size`` per call."""

    async def upsert_contacts_by_email(self, tokens: TokenSet, contacts: Sequence[ContactInput]) -> list[WriteResult]:
        """Create-or-update by email in one call. Only called when ``capabilities.upsert_by_email``."""
        raise NotImplementedError(f"{type(self).__name__} does not upsert by email")

    def rate_limits(self) -> Sequence[RateLimit]:
        """The CRM's limits on one account's requests (HubSpot: 110 per 10 s for a public app), for the core to
        keep; none by default. A limit the CRM only reports in its answers (a daily allowance) goes in
        ``CrmRequest.answered(..., quota=...)`` instead."""
        return ()

    def configuration_problem(self) -> str | None:
        """What an operator must set before teams can connect (e.g. missing client credentials), or None.

        An installed but unconfigured provider still registers: status shows the problem, and connecting
        answers FAILED_PRECONDITION (PROVIDER_NOT_CONFIGURED) with it, instead of the service not starting.
        """
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release HTTP clients; called once when the service stops."""
