"""Team credentials: encrypted at rest, decrypted only on the way into a provider call, refreshed once.

A refresh happens before expiry and on an expired-token answer, one at a time per team and provider:
concurrent callers wait for the refresh in flight and use its result. Within a process an asyncio lock
does this; across processes the credentials row is locked (SELECT … FOR UPDATE on PostgreSQL) and the
token re-read, so a refresh that another replica just finished is reused, not repeated — which matters
for CRMs that rotate refresh tokens and kill the chain on reuse.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.core.caller import Caller
from crm_hub.core.retry import RetryPolicy
from crm_hub.errors import AuthExpired, FailedPrecondition, RefreshRejected, VaultError
from crm_hub.notifications import Notification, NotificationDispatcher
from crm_hub.observability import metrics
from crm_hub.observability.tracing import tracer
from crm_hub.providers import CrmProvider, TokenSet
from crm_hub.storage import (
    Credential,
    CredentialRepository,
    Database,
    IntegrationRepository,
    IntegrationStatus,
    TimelineRepository,
    utcnow,
)
from crm_hub.storage.vault import Vault

__all__ = ["CREDENTIALS_EXPIRED", "CredentialStore"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

CREDENTIALS_EXPIRED = "Credentials expired"
#: Refresh this long before the CRM's stated expiry, so a token never dies mid-call.
REFRESH_MARGIN = timedelta(minutes=2)
#: A refresh retries a failing token endpoint (5xx, 429, timeouts) for at most this long: it holds the
#: credentials' lock meanwhile, which other refreshers (and, on SQLite, every writer) wait for.
REFRESH_RETRY_SECONDS = 5.0


class CredentialStore:
    def __init__(
        self,
        database: Database,
        vault: Vault,
        notifications: NotificationDispatcher,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._database = database
        self._vault = vault
        self._notifications = notifications
        retry = retry or RetryPolicy()
        self._refresh_retry = replace(retry, deadline_seconds=min(retry.deadline_seconds, REFRESH_RETRY_SECONDS))
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def save(self, team_id: str, provider: str, tokens: TokenSet, *, session: AsyncSession | None = None) -> None:
        """Store the tokens encrypted; in ``session`` when given, so they commit with what else it writes."""
        if session is not None:
            await CredentialRepository(session).put(team_id, provider, self._seal(team_id, provider, tokens))
            return
        async with self._database.session() as own:
            await CredentialRepository(own).put(team_id, provider, self._seal(team_id, provider, tokens))

    async def load(self, team_id: str, provider: str) -> TokenSet:
        """The stored tokens, or FAILED_PRECONDITION when the team has not connected the provider."""
        async with self._database.session() as session:
            row = await CredentialRepository(session).get(team_id, provider)
        if row is None:
            raise _not_connected(provider)
        return await self._open(team_id, provider, row.encrypted)

    async def session_for(self, caller: Caller, crm: CrmProvider, *, stored: Credential | None = None) -> TokenSet:
        """Tokens ready for a call: refreshed first if they expire within REFRESH_MARGIN. ``stored`` is the
        credentials row when the caller read it already (with what else it needed, in one session)."""
        if stored is not None:
            tokens = await self._open(caller.team_id, crm.name, stored.encrypted)
        else:
            tokens = await self.load(caller.team_id, crm.name)
        if tokens.expires_at is not None and tokens.expires_at - REFRESH_MARGIN <= utcnow():
            tokens = await self.refresh(caller, crm, stale=tokens)
        return tokens

    async def call(
        self,
        caller: Caller,
        crm: CrmProvider,
        operation: Callable[[TokenSet], Awaitable[T]],
        *,
        stored: Credential | None = None,
    ) -> T:
        """Run ``operation`` with fresh tokens; on AuthExpired refresh once and run it again."""
        tokens = await self.session_for(caller, crm, stored=stored)
        try:
            return await operation(tokens)
        except AuthExpired:
            tokens = await self.refresh(caller, crm, stale=tokens)
            return await operation(tokens)

    async def refresh(self, caller: Caller, crm: CrmProvider, *, stale: TokenSet) -> TokenSet:
        """Replace ``stale`` tokens, unless someone else already did: then use theirs."""
        team_id = caller.team_id
        lock = self._locks.setdefault((team_id, crm.name), asyncio.Lock())
        async with lock, self._database.session() as session:
            row = await CredentialRepository(session).lock_for_refresh(team_id, crm.name)
            if row is None:
                raise _not_connected(crm.name)
            current = await self._open(team_id, crm.name, row.encrypted)
            if current.access_token != stale.access_token:
                return current  # refreshed by a concurrent caller (here or in another replica)
            if not current.refresh_token:
                await self._mark_expired(session, caller, crm.name, "no refresh token")
                raise RefreshRejected(
                    f"{crm.label} credentials expired and cannot be refreshed; reconnect the integration.",
                    provider=crm.name,
                )
            try:
                # A CRM that rotates refresh tokens may have spent ours before a lost answer: sending it again
                # would kill the chain, so such a refresh is retried only when it surely did not arrive.
                with tracer().start_as_current_span("refresh credentials", attributes={"crm.provider": crm.name}):
                    fresh = await self._refresh_retry.run(
                        lambda: crm.refresh(current), idempotent=not crm.capabilities.rotates_refresh_tokens
                    )
            except RefreshRejected as error:
                metrics.TOKEN_REFRESHES.labels(crm.name, "refused").inc()
                await self._mark_expired(session, caller, crm.name, error.message)
                raise RefreshRejected(
                    f"{crm.label} refused to refresh the credentials; reconnect the integration.",
                    provider=crm.name,
                    status=error.status,
                ) from None
            except Exception:
                metrics.TOKEN_REFRESHES.labels(crm.name, "failed").inc()
                raise
            metrics.TOKEN_REFRESHES.labels(crm.name, "refreshed").inc()
            # CRMs that do not rotate refresh tokens answer without one: keep the one we have.
            if not fresh.refresh_token:
                fresh = replace(fresh, refresh_token=current.refresh_token)
            await CredentialRepository(session).put(team_id, crm.name, self._seal(team_id, crm.name, fresh))
            logger.info("credentials refreshed", extra={"team": team_id, "provider": crm.name})
            return fresh

    async def forget(self, session: AsyncSession, team_id: str, provider: str) -> TokenSet | None:
        """Delete the tokens in ``session``; return them for revocation if they can still be opened (after a
        vault key was lost they cannot: the row goes all the same, and revocation is skipped)."""
        repository = CredentialRepository(session)
        row = await repository.get(team_id, provider)
        if row is None:
            return None
        await repository.delete(team_id, provider)
        try:
            return await self._open(team_id, provider, row.encrypted)
        except VaultError:
            logger.warning("stored credentials cannot be decrypted; not revoked", extra={"provider": provider})
            return None

    async def _mark_expired(self, session: AsyncSession, caller: Caller, provider: str, detail: str) -> None:
        integrations = IntegrationRepository(session)
        before = await integrations.get(caller.team_id, provider)
        already = (
            before is not None
            and before.status == IntegrationStatus.ERROR
            and before.error_reason == RefreshRejected.default_reason
        )
        await integrations.upsert_status(
            caller.team_id,
            provider,
            IntegrationStatus.ERROR,
            CREDENTIALS_EXPIRED,
            reason=RefreshRejected.default_reason,
        )
        await TimelineRepository(session).append(
            caller.team_id,
            provider=provider,
            action="refresh_failed",
            message=f"Token refresh was refused ({detail}); reconnect the integration.",
            actor=caller.actor,
            request_id=caller.request_id,
            duration_ms=0,
            error_reason=RefreshRejected.default_reason,
        )
        await session.commit()  # before the caller's error rolls the session back
        if already:
            return  # told once, when it happened: not again for every call that runs into it
        self._notifications.publish(
            Notification(
                kind="credentials_expired",
                team_id=caller.team_id,
                provider=provider,
                message=f"The {provider} refresh token was refused; an admin must reconnect the integration.",
                reason=RefreshRejected.default_reason,
                request_id=caller.request_id,
            )
        )

    def _seal(self, team_id: str, provider: str, tokens: TokenSet) -> dict[str, object]:
        return self._vault.encrypt(tokens.to_dict(), team_id=team_id, provider=provider)

    async def _open(self, team_id: str, provider: str, envelope: dict[str, object]) -> TokenSet:
        if self._vault.is_warm(envelope):
            return TokenSet.from_dict(self._vault.decrypt(envelope, team_id=team_id, provider=provider))
        # A salt this process has not seen (another replica sealed it, or we restarted): PBKDF2 takes ~40 ms,
        # which must not stall the event loop.
        opened = await asyncio.to_thread(self._vault.decrypt, envelope, team_id=team_id, provider=provider)
        return TokenSet.from_dict(opened)


def _not_connected(provider: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"The {provider} integration is not connected for your team; connect it first "
        f"(GET /integrations/{provider}/start).",
        reason="PROVIDER_NOT_CONNECTED",
        metadata={"provider": provider},
    )
