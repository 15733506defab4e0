"""Team-scoped data access. Every method takes the caller's ``team_id`` and touches only that team's rows.

The two exceptions are documented as admin-only housekeeping: :meth:`CredentialRepository.all_for_rotation`
(key rotation) and :meth:`OAuthStateRepository.delete_expired` (cleanup).

Repositories neither commit nor roll back: the caller's unit of work (``Database.session()``) does.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, ScalarResult, Select, Table, case, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from crm_hub.errors import ConfigurationError, InvalidArgument, NotFound
from crm_hub.storage.models import (
    Base,
    Credential,
    Integration,
    IntegrationStatus,
    Lead,
    OAuthState,
    Team,
    TimelineEvent,
    utcnow,
)

__all__ = [
    "SYNC_ACTIONS",
    "CredentialRepository",
    "IntegrationRepository",
    "LeadRepository",
    "OAuthStateRepository",
    "SyncCounts",
    "TeamRepository",
    "TimelineRepository",
]

#: Timeline actions that count as sync attempts in the status report.
SYNC_ACTIONS = ("created", "updated", "skipped", "unchanged", "failed")

# Refresh objects already in the session's identity map with what an UPDATE/INSERT ... RETURNING saw.
_FRESH = {"populate_existing": True}


def _insert(session: AsyncSession, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for the session's dialect, which has ``ON CONFLICT`` (both spell it the same way)."""
    return _dialect_insert(session.get_bind().dialect.name, model)


def _dialect_insert(dialect: str, model: type[Base] | Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT for ``dialect``; of a table (not the mapped class) for plain Core statements, which skip the
    ORM's bulk machinery."""
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise ConfigurationError(f"Unsupported database dialect {dialect!r}")


class TeamRepository:
    """Teams exist as soon as one of their members calls us: rows are created on first sight."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def ensure(self, team_id: str) -> None:
        """Create the team unless it exists. Idempotent and safe when many requests race to do it."""
        statement = _insert(self._session, Team).values(id=team_id).on_conflict_do_nothing(index_elements=["id"])
        await self._session.execute(statement)

    async def delete(self, team_id: str) -> bool:
        """Delete the team and, by cascade, everything it owns. False if there was no such team."""
        statement = delete(Team).where(Team.id == team_id).returning(Team.id)
        return (await self._session.execute(statement)).first() is not None


class LeadRepository:
    """A team's leads. The team must exist (:meth:`TeamRepository.ensure`)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self, team_id: str, fields: Mapping[str, str], external_id: str | None = None
    ) -> tuple[Lead, bool]:
        """Store a lead; returns it and whether it is new.

        With an ``external_id`` this is idempotent per team: if the team already has a lead with that id, that
        lead is returned with ``created=False`` whatever its fields (comparing them is the caller's business).
        Concurrent calls with the same external id make one row: the insert yields on the unique constraint
        instead of failing, and the loser then reads the winner's committed row.
        """
        if external_id is None:
            lead = Lead(team_id=team_id, fields=dict(fields))
            self._session.add(lead)
            await self._session.flush()
            return lead, True
        statement = (
            _insert(self._session, Lead)
            .values(team_id=team_id, external_id=external_id, fields=dict(fields))
            .on_conflict_do_nothing(index_elements=["team_id", "external_id"])
            .returning(Lead)
        )
        inserted = (await self._session.scalars(statement, execution_options=_FRESH)).one_or_none()
        if inserted is not None:
            return inserted, True
        existing = await self.find_by_external_id(team_id, external_id)
        if existing is None:  # pragma: no cover - the conflicting row was committed, so it is visible
            raise RuntimeError(f"lead with external id {external_id!r} conflicted but cannot be read")
        return existing, False

    async def get(self, team_id: str, lead_id: str, *, for_update: bool = False) -> Lead:
        """The team's lead ``lead_id``; :class:`NotFound` if it does not exist or belongs to another team.
        ``for_update``: locked until the transaction ends (PostgreSQL; SQLite has one writer anyway)."""
        statement = select(Lead).where(Lead.team_id == team_id, Lead.id == lead_id)
        if for_update:
            statement = statement.with_for_update()
        lead = await self._session.scalar(statement)
        if lead is None:
            # The same answer for "missing" and "someone else's": ids must not reveal other teams' data.
            raise NotFound(f"Lead {lead_id} not found", metadata={"lead_id": lead_id})
        return lead

    async def update_fields(self, team_id: str, lead_id: str, fields: Mapping[str, str]) -> Lead:
        """Replace the lead's fields; returns the lead as stored."""
        statement = (
            update(Lead)
            .where(Lead.team_id == team_id, Lead.id == lead_id)
            .values(fields=dict(fields), updated_at=utcnow())
            .returning(Lead)
        )
        return (await self._session.scalars(statement, execution_options=_FRESH)).one()

    async def delete(self, team_id: str, lead_id: str) -> None:
        """Delete the lead; its sync states and timeline events go with it (ON DELETE CASCADE)."""
        await self._session.execute(delete(Lead).where(Lead.team_id == team_id, Lead.id == lead_id))

    async def get_many(self, team_id: str, lead_ids: Sequence[str]) -> builtins.list[Lead]:
        """The team's leads among ``lead_ids``, by id (missing and other teams' ids are left out)."""
        if not lead_ids:
            return []
        statement = select(Lead).where(Lead.team_id == team_id, Lead.id.in_(lead_ids)).order_by(Lead.id)
        return builtins.list(await self._session.scalars(statement))

    async def count(self, team_id: str) -> int:
        """How many leads the team has."""
        return int(await self._session.scalar(select(func.count()).where(Lead.team_id == team_id)) or 0)

    async def find_by_external_id(self, team_id: str, external_id: str) -> Lead | None:
        """The team's lead with the product's id ``external_id``, if any."""
        return await self._session.scalar(select(Lead).where(Lead.team_id == team_id, Lead.external_id == external_id))


class SyncCounts(NamedTuple):
    """Real (non-dry-run) sync attempts to one provider, and how many did not fail."""

    total: int
    succeeded: int


class TimelineRepository:
    """The audit trail of what crm_hub did for a team."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def append(
        self,
        team_id: str,
        *,
        provider: str,
        action: str,
        message: str,
        actor: str,
        request_id: str,
        duration_ms: int,
        dry_run: bool = False,
        lead_id: str | None = None,
        contact_id: str | None = None,
        error_reason: str | None = None,
        created_at: datetime | None = None,
    ) -> TimelineEvent:
        """Record an event. ``lead_id`` must be a lead the caller loaded for this same team."""
        event = TimelineEvent(
            team_id=team_id,
            lead_id=lead_id,
            provider=provider,
            action=action,
            contact_id=contact_id,
            dry_run=dry_run,
            error_reason=error_reason,
            message=message,
            actor=actor,
            request_id=request_id,
            duration_ms=duration_ms,
            created_at=created_at or utcnow(),
        )
        self._session.add(event)
        await self._session.flush()
        return event

    async def list_for_lead(
        self, team_id: str, lead_id: str, limit: int, before: tuple[datetime, str] | None = None
    ) -> list[TimelineEvent]:
        """Up to ``limit`` of the lead's events, newest first.

        Pages by keyset: pass the ``(created_at, id)`` of the last event of the previous page as ``before``.
        Events with equal timestamps are ordered by id, so no event is skipped or repeated across pages.
        """
        statement = select(TimelineEvent).where(TimelineEvent.team_id == team_id, TimelineEvent.lead_id == lead_id)
        if before is not None:
            if before[0].utcoffset() is None:
                raise InvalidArgument("The page position must carry a time zone.")
            statement = statement.where(_before(*before))
        statement = statement.order_by(TimelineEvent.created_at.desc(), TimelineEvent.id.desc()).limit(limit)
        return list(await self._session.scalars(statement))

    async def sync_counts(self, team_id: str) -> dict[str, SyncCounts]:
        """Per provider: real sync attempts (dry runs excluded) and how many succeeded (did not fail)."""
        succeeded = func.sum(case((TimelineEvent.action != "failed", 1), else_=0))
        statement = (
            select(TimelineEvent.provider, func.count(), succeeded)
            .where(
                TimelineEvent.team_id == team_id,
                TimelineEvent.dry_run.is_(False),
                TimelineEvent.action.in_(SYNC_ACTIONS),
            )
            .group_by(TimelineEvent.provider)
        )
        rows = await self._session.execute(statement)
        return {provider: SyncCounts(int(total), int(ok or 0)) for provider, total, ok in rows}


def _before(created_at: datetime, event_id: str) -> ColumnElement[bool]:
    # Row-value comparison: one range scan on the (team_id, lead_id, created_at, id) index.
    return tuple_(TimelineEvent.created_at, TimelineEvent.id) < tuple_(created_at, event_id)


class IntegrationRepository:
    """A team's connections to CRMs, one row per provider."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, team_id: str, provider: str) -> Integration | None:
        """The team's integration with ``provider``, if it was ever connected."""
        return await self._session.scalar(
            select(Integration).where(Integration.team_id == team_id, Integration.provider == provider)
        )

    async def list(self, team_id: str) -> builtins.list[Integration]:
        """All the team's integrations, by provider."""
        statement = select(Integration).where(Integration.team_id == team_id).order_by(Integration.provider)
        return builtins.list(await self._session.scalars(statement))

    async def upsert_status(
        self,
        team_id: str,
        provider: str,
        status: IntegrationStatus | str,
        error: str | None = None,
        *,
        reason: str | None = None,
        at: datetime | None = None,
    ) -> Integration:
        """Set status and error (``error`` for a person, ``reason`` for code), creating the row if needed;
        ``last_seen_at`` becomes ``at`` (default: now).

        Settings and sync times are kept, so reconnecting restores the saved mapping. An unknown ``status``
        raises :class:`InvalidArgument`.
        """
        try:
            status = IntegrationStatus(status)
        except ValueError:
            raise InvalidArgument(f"Unknown integration status {status!r}") from None
        changes = {"status": status.value, "error": error, "error_reason": reason, "last_seen_at": at or utcnow()}
        statement = (
            _insert(self._session, Integration)
            .values(team_id=team_id, provider=provider, **changes)
            .on_conflict_do_update(index_elements=["team_id", "kind"], set_=changes)
            .returning(Integration)
        )
        return (await self._session.scalars(statement, execution_options=_FRESH)).one()

    async def save_settings(self, team_id: str, provider: str, settings: Mapping[str, Any]) -> Integration:
        """Replace the integration's settings; :class:`NotFound` if the team never connected ``provider``."""
        statement = (
            update(Integration)
            .where(Integration.team_id == team_id, Integration.provider == provider)
            .values(settings=dict(settings))
            .returning(Integration)
        )
        return self._found(await self._session.scalars(statement, execution_options=_FRESH), provider)

    async def mark_synced(self, team_id: str, provider: str, at: datetime) -> None:
        """Record a successful sync at ``at``, and forget an error a connected integration showed (a spent
        quota: the sync shows it is back); :class:`NotFound` if the team never connected ``provider``."""
        connected = Integration.status == IntegrationStatus.CONNECTED.value
        statement = (
            update(Integration)
            .where(Integration.team_id == team_id, Integration.provider == provider)
            .values(
                last_sync_at=at,
                error=case((connected, None), else_=Integration.error),
                error_reason=case((connected, None), else_=Integration.error_reason),
            )
            .returning(Integration)
        )
        self._found(await self._session.scalars(statement, execution_options=_FRESH), provider)

    @staticmethod
    def _found(rows: ScalarResult[Integration], provider: str) -> Integration:
        integration = rows.one_or_none()
        if integration is None:
            raise NotFound(f"Integration {provider} not found", metadata={"provider": provider})
        return integration


class CredentialRepository:
    """A team's encrypted provider credentials (vault envelopes; this layer never sees plaintext)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, team_id: str, provider: str) -> Credential | None:
        """The team's credentials for ``provider``, if stored."""
        return await self._session.scalar(self._select(team_id, provider))

    async def lock_for_refresh(self, team_id: str, provider: str) -> Credential | None:
        """Read the credentials, locking them until the transaction ends, to refresh the tokens in them.

        On PostgreSQL this is ``SELECT … FOR UPDATE``: another process refreshing the same row waits, then
        reads the new tokens. SQLite has no row locks: a no-op UPDATE takes the database's write lock first,
        so another process's refresher waits (up to the busy timeout) just the same.
        """
        if self._session.get_bind().dialect.name == "sqlite":
            await self._session.execute(
                update(Credential)
                .where(Credential.team_id == team_id, Credential.provider == provider)
                .values(updated_at=Credential.updated_at)
            )
        statement = self._select(team_id, provider).with_for_update()
        return await self._session.scalar(statement, execution_options=_FRESH)

    async def put(self, team_id: str, provider: str, encrypted: Mapping[str, Any]) -> Credential:
        """Store (insert or replace) the team's credentials for ``provider``."""
        statement = (
            _insert(self._session, Credential)
            .values(team_id=team_id, provider=provider, encrypted=dict(encrypted))
            .on_conflict_do_update(
                index_elements=["team_id", "provider"], set_={"encrypted": dict(encrypted), "updated_at": utcnow()}
            )
            .returning(Credential)
        )
        return (await self._session.scalars(statement, execution_options=_FRESH)).one()

    async def delete(self, team_id: str, provider: str) -> bool:
        """Forget the team's credentials for ``provider``. False if there were none."""
        statement = (
            delete(Credential)
            .where(Credential.team_id == team_id, Credential.provider == provider)
            .returning(Credential.id)
        )
        return (await self._session.execute(statement)).first() is not None

    async def all_for_rotation(self, chunk_size: int = 500) -> AsyncIterator[builtins.list[Credential]]:
        """ADMIN ONLY, for vault key rotation: every team's credentials, in chunks of ``chunk_size``.

        The one cross-team read in crm_hub; nothing that serves a team's request may call it. Chunks are
        keyed by id, so rows written during the walk are not visited twice.
        """
        last_id = ""
        while True:
            statement = select(Credential).where(Credential.id > last_id).order_by(Credential.id)
            chunk = builtins.list(await self._session.scalars(statement.limit(chunk_size)))
            if not chunk:
                return
            yield chunk
            last_id = chunk[-1].id

    async def replace_encrypted(
        self,
        row_id: str,
        team_id: str,
        provider: str,
        encrypted: Mapping[str, Any],
        *,
        if_unchanged_since: datetime | None = None,
    ) -> bool:
        """Re-encrypt one row in place (key rotation). False if the row is gone or was changed meanwhile.

        ``team_id`` and ``provider`` must match the row: the envelope is bound to them. Pass the
        ``updated_at`` you read as ``if_unchanged_since`` so a token refresh that landed after your read is
        not overwritten with the older tokens.
        """
        conditions = [Credential.id == row_id, Credential.team_id == team_id, Credential.provider == provider]
        if if_unchanged_since is not None:
            conditions.append(Credential.updated_at == if_unchanged_since)
        statement = (
            update(Credential)
            .where(*conditions)
            .values(encrypted=dict(encrypted), updated_at=utcnow())
            .returning(Credential)
        )
        return (await self._session.scalars(statement, execution_options=_FRESH)).one_or_none() is not None

    @staticmethod
    def _select(team_id: str, provider: str) -> Select[Credential]:
        return select(Credential).where(Credential.team_id == team_id, Credential.provider == provider)


class OAuthStateRepository:
    """Pending OAuth authorizations: each is usable once, by its team, for its provider, until it expires."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(
        self,
        team_id: str,
        provider: str,
        state_hash: str,
        *,
        actor: str,
        expires_at: datetime,
        code_verifier: Mapping[str, Any] | None = None,
    ) -> OAuthState:
        """Remember a state (by its SHA-256 hex; never the state itself) and its encrypted PKCE verifier."""
        state = OAuthState(
            team_id=team_id,
            provider=provider,
            state_hash=state_hash,
            actor=actor,
            expires_at=expires_at,
            code_verifier=dict(code_verifier) if code_verifier is not None else None,
        )
        self._session.add(state)
        await self._session.flush()
        return state

    async def consume(self, state_hash: str, team_id: str, provider: str, now: datetime) -> OAuthState | None:
        """Use the state up: returns it if it is this team's, for this provider, unused and unexpired.

        One conditional UPDATE does check and mark together, so a replay or a concurrent callback gets
        None. None says nothing about which condition failed.
        """
        statement = (
            update(OAuthState)
            .where(
                OAuthState.state_hash == state_hash,
                OAuthState.team_id == team_id,
                OAuthState.provider == provider,
                OAuthState.consumed_at.is_(None),
                OAuthState.expires_at > now,
            )
            .values(consumed_at=now)
            .returning(OAuthState)
        )
        return (await self._session.scalars(statement, execution_options=_FRESH)).one_or_none()

    async def delete_expired(self, now: datetime) -> int:
        """ADMIN ONLY, cleanup across all teams: delete the states expired by ``now``; returns how many."""
        statement = delete(OAuthState).where(OAuthState.expires_at <= now).returning(OAuthState.id)
        return len((await self._session.execute(statement)).all())
