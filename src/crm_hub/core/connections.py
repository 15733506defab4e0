"""Connecting a team to a CRM: the OAuth flow (state + PKCE), the callback, and disconnecting."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.caller import Caller
from crm_hub.core.credentials import CredentialStore
from crm_hub.core.fields import FieldCatalog
from crm_hub.errors import FailedPrecondition, FieldViolation, InvalidArgument, ProviderError
from crm_hub.notifications import Notification, NotificationDispatcher, NotificationKind
from crm_hub.observability.tracing import traced
from crm_hub.plugins import PluginHost
from crm_hub.providers import CrmProvider
from crm_hub.providers.http import pkce_challenge, pkce_verifier
from crm_hub.storage import (
    Database,
    IntegrationRepository,
    IntegrationStatus,
    OAuthStateRepository,
    TeamRepository,
    TimelineRepository,
    utcnow,
)
from crm_hub.storage.vault import Vault

__all__ = ["STATE_LIFETIME", "ConnectionService", "OAuthStart"]

logger = logging.getLogger(__name__)

STATE_LIFETIME = timedelta(minutes=10)
MAX_OAUTH_CODE_LENGTH = 4096


@dataclass(frozen=True)
class OAuthStart:
    auth_url: str
    state: str


def _configured(crm: CrmProvider) -> CrmProvider:
    problem = crm.configuration_problem()
    if problem:
        raise FailedPrecondition(problem, reason="PROVIDER_NOT_CONFIGURED", metadata={"provider": crm.name})
    return crm


def _state_hash(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


class ConnectionService:
    def __init__(
        self,
        database: Database,
        vault: Vault,
        plugins: PluginHost,
        credentials: CredentialStore,
        catalog: FieldCatalog,
        notifications: NotificationDispatcher,
    ) -> None:
        self._database = database
        self._vault = vault
        self._plugins = plugins
        self._credentials = credentials
        self._catalog = catalog
        self._notifications = notifications

    @traced("start oauth")
    async def start_oauth(self, caller: Caller, provider: str) -> OAuthStart:
        """A consent URL and a one-time state bound to this team and provider (stored hashed)."""
        crm = _configured(self._plugins.providers().get(provider))
        state = secrets.token_urlsafe(32)
        verifier = pkce_verifier() if crm.capabilities.pkce else None
        now = utcnow()
        async with self._database.session() as session:
            await TeamRepository(session).ensure(caller.team_id)
            states = OAuthStateRepository(session)
            await states.delete_expired(now)
            await states.create(
                team_id=caller.team_id,
                provider=crm.name,
                state_hash=_state_hash(state),
                code_verifier=(
                    self._vault.encrypt({"v": verifier}, team_id=caller.team_id, provider=f"{crm.name}#pkce")
                    if verifier
                    else None
                ),
                actor=caller.actor,
                expires_at=now + STATE_LIFETIME,
            )
        auth_url = crm.authorization_url(state=state, code_challenge=pkce_challenge(verifier) if verifier else None)
        return OAuthStart(auth_url=auth_url, state=state)

    @traced("complete oauth")
    async def complete_oauth(self, caller: Caller, provider: str, *, code: str, state: str) -> str:
        """Exchange the code for tokens, store them encrypted and mark the integration CONNECTED."""
        crm = _configured(self._plugins.providers().get(provider))
        violations = []
        if not code.strip() or len(code) > MAX_OAUTH_CODE_LENGTH:
            violations.append(FieldViolation("code", "the authorization code from the CRM's redirect is required"))
        if not state.strip():
            violations.append(FieldViolation("state", "the state returned by /integrations/{kind}/start is required"))
        if violations:
            raise InvalidArgument(
                "The callback needs both the code and the state.",
                reason="OAUTH_CALLBACK_INVALID",
                field_violations=violations,
            )
        started = time.perf_counter()
        async with self._database.session() as session:
            pending = await OAuthStateRepository(session).consume(
                _state_hash(state), caller.team_id, crm.name, utcnow()
            )
        if pending is None:
            raise InvalidArgument(
                "The OAuth state is unknown, expired, already used, or was issued to another team or "
                "provider; start the connection again.",
                reason="OAUTH_STATE_INVALID",
                field_violations=[FieldViolation("state", "not a pending state of your team for this provider")],
            )
        verifier = (
            self._vault.decrypt(pending.code_verifier, team_id=caller.team_id, provider=f"{crm.name}#pkce")["v"]
            if pending.code_verifier
            else None
        )
        try:
            tokens = await crm.exchange_code(code=code, code_verifier=verifier)
        except ProviderError as error:
            await self._record(caller, crm.name, "connect_failed", error.message, started, error_reason=error.reason)
            raise
        async with self._database.session() as session:  # tokens, status and audit commit together
            await self._credentials.save(caller.team_id, crm.name, tokens, session=session)
            await IntegrationRepository(session).upsert_status(caller.team_id, crm.name, IntegrationStatus.CONNECTED)
            await self._record(caller, crm.name, "connected", f"{crm.label} connected.", started, session)
        self._catalog.forget(caller.team_id, crm.name)  # another account may have been connected
        self._notify(caller, crm.name, "connected", f"{crm.label} was connected by {caller.actor}.")
        return f"{crm.label} connected successfully."

    @traced("disconnect")
    async def disconnect(self, caller: Caller, provider: str) -> str:
        """Revoke the tokens at the CRM (best effort), forget them, mark the integration DISCONNECTED."""
        crm = self._plugins.providers().get(provider)
        started = time.perf_counter()
        async with self._database.session() as session:  # tokens gone, status and audit: all or nothing
            await TeamRepository(session).ensure(caller.team_id)
            tokens = await self._credentials.forget(session, caller.team_id, crm.name)
            await IntegrationRepository(session).upsert_status(caller.team_id, crm.name, IntegrationStatus.DISCONNECTED)
            message = f"{crm.label} disconnected."
            await self._record(caller, crm.name, "disconnected", message, started, session)
        self._catalog.forget(caller.team_id, crm.name)
        if tokens is not None:
            try:
                await crm.revoke(tokens)  # after the commit: a slow CRM holds no transaction open
            except ProviderError as error:
                # The tokens are gone from here either way; a failed revoke only leaves them to expire.
                logger.warning("token revocation failed", extra={"provider": crm.name, "reason": error.reason})
        self._notify(caller, crm.name, "disconnected", f"{crm.label} was disconnected by {caller.actor}.")
        if tokens is None:
            return f"{crm.label} was not connected."
        return f"{crm.label} disconnected."

    def _notify(self, caller: Caller, provider: str, kind: NotificationKind, message: str) -> None:
        self._notifications.publish(
            Notification(
                kind=kind, team_id=caller.team_id, provider=provider, message=message, request_id=caller.request_id
            )
        )

    async def _record(
        self,
        caller: Caller,
        provider: str,
        action: str,
        message: str,
        started: float,
        session: AsyncSession | None = None,
        error_reason: str | None = None,
    ) -> None:
        """Append a timeline event, in ``session`` when given (so it commits with the change it records)."""
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(self._database.session())
            await TimelineRepository(session).append(
                caller.team_id,
                provider=provider,
                action=action,
                message=message,
                actor=caller.actor,
                request_id=caller.request_id,
                duration_ms=round((time.perf_counter() - started) * 1000),
                error_reason=error_reason,
            )
