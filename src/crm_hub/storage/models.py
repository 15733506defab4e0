"""The relational schema: one set of models for SQLite and PostgreSQL.

Ids are uuid4 hex strings made in Python; times are timezone-aware UTC on the way in and out; JSON is
JSONB on PostgreSQL. Every row but a team's own belongs to a team and is deleted with it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "Credential",
    "Integration",
    "IntegrationStatus",
    "JSONType",
    "Lead",
    "LeadSyncState",
    "OAuthState",
    "RateBudget",
    "SyncJob",
    "SyncJobResult",
    "Team",
    "TimelineEvent",
    "UTCDateTime",
    "new_id",
    "utcnow",
]

#: Constraint names derived from table and columns, so they are identical on every dialect.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, JSONB on PostgreSQL (indexable, compared by value).
JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def new_id() -> str:
    """A fresh row id: 32 hex characters of a uuid4."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware in UTC.

    SQLite has no time zones: it stores the UTC wall time (fixed-width text, so it sorts and compares
    correctly) and this type puts ``UTC`` back on read. Naive datetimes are refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class IntegrationStatus(StrEnum):
    """Where a team's connection to one CRM stands."""

    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    ERROR = "ERROR"


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata and the column types for Python annotations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {str: Text(), datetime: UTCDateTime()}


def _team_fk() -> Mapped[str]:
    return mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))


def _created_at() -> Mapped[datetime]:
    return mapped_column(default=utcnow, server_default=func.now())


class Team(Base):
    """A customer team; ``id`` is the ``team_id`` claim of its JWTs."""

    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = _created_at()


class Credential(Base):
    """A team's OAuth tokens for one provider, as a vault envelope (never plaintext)."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("team_id", "provider"),)

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    provider: Mapped[str]
    encrypted: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())


class Integration(Base):
    """A team's connection to one CRM: status, settings (``settings["mapping"]`` is the field mapping)."""

    __tablename__ = "integrations"
    __table_args__ = (
        UniqueConstraint("team_id", "kind"),
        CheckConstraint("status IN ('CONNECTED', 'DISCONNECTED', 'ERROR')", name="status"),
    )

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    #: The provider's name, lowercase ("hubspot"); the column keeps the REST API's word, ``kind``.
    provider: Mapped[str] = mapped_column("kind")
    #: One of :class:`IntegrationStatus`.
    status: Mapped[str]
    auth: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default=text("'{}'"))
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict, server_default=text("'{}'"))
    last_seen_at: Mapped[datetime | None]
    last_sync_at: Mapped[datetime | None]
    #: What needs attention, for a person ("Credentials expired", a daily quota spent), and its
    #: machine-readable reason (``CREDENTIALS_EXPIRED``, ``RATE_LIMITED``): code reads the reason, never the text.
    error: Mapped[str | None]
    error_reason: Mapped[str | None]


class Lead(Base):
    """A lead as the product sent it: flat string fields, optionally keyed by the product's own id."""

    __tablename__ = "leads"
    # NULL external ids never collide (on SQLite and PostgreSQL alike): leads without one are all distinct.
    __table_args__ = (UniqueConstraint("team_id", "external_id"),)

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    external_id: Mapped[str | None]
    fields: Mapped[dict[str, str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())


class TimelineEvent(Base):
    """One audited sync attempt (or other action) for a team, usually about one lead."""

    __tablename__ = "timeline_events"
    # Serves a lead's timeline, newest first, paged by (created_at, id).
    __table_args__ = (Index(None, "team_id", "lead_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    # Indexed on its own too: PostgreSQL does not index foreign keys, and deleting leads cascades here.
    lead_id: Mapped[str | None] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str]
    #: e.g. "created", "updated", "skipped", "failed".
    action: Mapped[str]
    contact_id: Mapped[str | None]
    dry_run: Mapped[bool]
    error_reason: Mapped[str | None]
    message: Mapped[str]
    actor: Mapped[str]
    request_id: Mapped[str]
    duration_ms: Mapped[int]
    #: The sync job this event belongs to, if a job made it.
    job_id: Mapped[str | None]
    created_at: Mapped[datetime] = _created_at()


class LeadSyncState(Base):
    """Where one lead stands with one provider: the contact it is linked to, what was last sent, the outcome.

    ``status`` is ``pending`` (queued, or a write under way), ``synced`` or ``failed``; a lead never synced
    to the provider has no row. ``intent_*`` is set before a write is sent and cleared when its outcome is
    recorded: one left set after a crash is reconciled (looked up by email) before anything is sent again.
    """

    __tablename__ = "lead_sync_states"
    __table_args__ = (
        UniqueConstraint("team_id", "provider", "lead_id"),
        # Status counts per provider, and the selection of failed or pending leads.
        Index(None, "team_id", "provider", "status"),
        # A provider's last sync, for status.
        Index(None, "team_id", "provider", "last_synced_at"),
        CheckConstraint("status IN ('pending', 'synced', 'failed')", name="status"),
    )

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    provider: Mapped[str]
    lead_id: Mapped[str] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    status: Mapped[str]
    contact_id: Mapped[str | None]
    #: SHA-256 of the payload last written (canonical JSON), and of the mapping it was built with.
    payload_fingerprint: Mapped[str | None]
    mapping_fingerprint: Mapped[str | None]
    #: The last real sync's action (created, updated, skipped, unchanged, failed).
    last_action: Mapped[str | None]
    last_synced_at: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    #: Failed attempts since the last success.
    failures: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    error_reason: Mapped[str | None]
    error: Mapped[str | None]
    #: The write under way: when it was sent, what it was (create, update, upsert), and the contact ids a
    #: lookup just before it saw (so a contact that appears afterwards is known to be ours).
    intent_at: Mapped[datetime | None]
    intent_action: Mapped[str | None]
    intent_seen: Mapped[list[str] | None] = mapped_column(JSONType)
    job_id: Mapped[str | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())


#: An automatic job that has not started yet, so new leads still join it.
GATHERING = "selection = 'auto' AND state = 'queued'"


class SyncJob(Base):
    """A background sync of many leads to one provider. Its counts are its results' outcomes, counted."""

    __tablename__ = "sync_jobs"
    __table_args__ = (
        # A team's jobs, newest first.
        Index(None, "team_id", "created_at", "id"),
        CheckConstraint("state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="state"),
        # At most one automatic job per account gathers new leads: the queued one (see core/sync/auto.py).
        Index(
            "uq_sync_jobs_gathering",
            "team_id",
            "provider",
            unique=True,
            postgresql_where=text(GATHERING),
            sqlite_where=text(GATHERING),
        ),
    )

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    provider: Mapped[str]
    duplicate_policy: Mapped[str]
    dry_run: Mapped[bool]
    force: Mapped[bool]
    #: ids, unsynced, changed, failed or all; auto for the jobs automatic sync gathers new leads in.
    selection: Mapped[str]
    state: Mapped[str]
    #: Leads selected (one result row each).
    total: Mapped[int]
    crm_calls: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    actor: Mapped[str]
    request_id: Mapped[str]
    error_reason: Mapped[str | None]
    error: Mapped[str | None]
    cancel_requested_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = _created_at()
    #: The job library's queue it was started on (CRM_HUB_QUEUE): only that deployment's workers resume it.
    #: None for jobs older than the column, which any worker may resume.
    queue: Mapped[str | None]
    #: When a lead last joined the job while it was gathering (automatic jobs only).
    gathered_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class SyncJobResult(Base):
    """One lead of a job: ``pending`` until the job reaches it, then its one outcome."""

    __tablename__ = "sync_job_results"
    __table_args__ = (
        # The next batch (pending leads by id), counts per outcome, results paged by lead id.
        Index(None, "job_id", "outcome", "lead_id"),
    )

    job_id: Mapped[str] = mapped_column(ForeignKey("sync_jobs.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key to leads: a job's record outlives a lead deleted meanwhile.
    lead_id: Mapped[str] = mapped_column(primary_key=True)
    team_id: Mapped[str] = _team_fk()
    outcome: Mapped[str]
    contact_id: Mapped[str | None]
    other_contact_ids: Mapped[list[str] | None] = mapped_column(JSONType)
    error_reason: Mapped[str | None]
    message: Mapped[str | None]
    updated_at: Mapped[datetime | None]


class RateBudget(Base):
    """One CRM account's request allowance as crm_hub spends it, shared by every replica and worker.

    A limit the provider declares (HubSpot's 110 per 10 s) is a GCRA schedule: ``tat_ms`` is when the account's
    next request is due (its theoretical arrival time, ms since 1970); each request moves it on by one slot and
    waits for its own. An allowance the CRM reports in its answers (Salesforce's daily requests) is what it last
    said: ``used`` of ``quota`` in a window of ``window_seconds``, ``observed_at``.
    """

    __tablename__ = "rate_budgets"

    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True)
    provider: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(primary_key=True)
    tat_ms: Mapped[int | None] = mapped_column(BigInteger)
    #: Whether the last reservation got its slot (one near enough), as the statement that took it says.
    granted: Mapped[bool | None]
    used: Mapped[int | None] = mapped_column(BigInteger)
    quota: Mapped[int | None] = mapped_column(BigInteger)
    window_seconds: Mapped[int | None]
    observed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow, server_default=func.now())


class OAuthState(Base):
    """A pending OAuth authorization: one-time, expiring, bound to a team and provider.

    Only the SHA-256 of the state travels to storage; the PKCE verifier is a vault envelope.
    """

    __tablename__ = "oauth_states"
    __table_args__ = (Index(None, "expires_at"),)

    id: Mapped[str] = mapped_column(primary_key=True, default=new_id)
    team_id: Mapped[str] = _team_fk()
    provider: Mapped[str]
    state_hash: Mapped[str] = mapped_column(unique=True)
    code_verifier: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    actor: Mapped[str]
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime]
    consumed_at: Mapped[datetime | None]
