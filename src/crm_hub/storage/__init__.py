"""Persistence: SQLAlchemy models, team-scoped repositories and Alembic migrations (SQLite and PostgreSQL)."""

from __future__ import annotations

from crm_hub.storage.database import SQLITE_BUSY_TIMEOUT_MS, Database, create_engine, normalize_database_url
from crm_hub.storage.migrate import alembic_config, upgrade
from crm_hub.storage.models import (
    Base,
    Credential,
    Integration,
    IntegrationStatus,
    Lead,
    OAuthState,
    Team,
    TimelineEvent,
    new_id,
    utcnow,
)
from crm_hub.storage.repositories import (
    SYNC_ACTIONS,
    CredentialRepository,
    IntegrationRepository,
    LeadRepository,
    OAuthStateRepository,
    SyncCounts,
    TeamRepository,
    TimelineRepository,
)

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "SYNC_ACTIONS",
    "Base",
    "Credential",
    "CredentialRepository",
    "Database",
    "Integration",
    "IntegrationRepository",
    "IntegrationStatus",
    "Lead",
    "LeadRepository",
    "OAuthState",
    "OAuthStateRepository",
    "SyncCounts",
    "Team",
    "TeamRepository",
    "TimelineEvent",
    "TimelineRepository",
    "alembic_config",
    "create_engine",
    "new_id",
    "normalize_database_url",
    "upgrade",
    "utcnow",
]
