"""Initial schema: teams, credentials, integrations, leads, timeline events, OAuth states.

Revision ID: 0001
Revises:
Create Date: 2025-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when the models do.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _team_id() -> sa.Column[str]:
    return sa.Column("team_id", sa.Text(), nullable=False)


def _team_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["team_id"], ["teams.id"], name=op.f(f"fk_{table}_team_id_teams"), ondelete="CASCADE"
    )


def _now(name: str) -> sa.Column[object]:
    return sa.Column(name, TIMESTAMP, server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("id", sa.Text(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teams")),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.Text(), nullable=False),
        _team_id(),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("encrypted", JSON, nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        _team_fk("credentials"),
        sa.UniqueConstraint("team_id", "provider", name=op.f("uq_credentials_team_id_provider")),
    )
    op.create_table(
        "integrations",
        sa.Column("id", sa.Text(), nullable=False),
        _team_id(),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("auth", JSON, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("settings", JSON, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.Column("last_sync_at", TIMESTAMP, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_integrations")),
        _team_fk("integrations"),
        sa.UniqueConstraint("team_id", "kind", name=op.f("uq_integrations_team_id_kind")),
        sa.CheckConstraint("status IN ('CONNECTED', 'DISCONNECTED', 'ERROR')", name=op.f("ck_integrations_status")),
    )
    op.create_table(
        "leads",
        sa.Column("id", sa.Text(), nullable=False),
        _team_id(),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("fields", JSON, nullable=False),
        _now("created_at"),
        _now("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        _team_fk("leads"),
        sa.UniqueConstraint("team_id", "external_id", name=op.f("uq_leads_team_id_external_id")),
    )
    op.create_table(
        "timeline_events",
        sa.Column("id", sa.Text(), nullable=False),
        _team_id(),
        sa.Column("lead_id", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        _now("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_timeline_events")),
        _team_fk("timeline_events"),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_timeline_events_lead_id_leads"), ondelete="CASCADE"
        ),
    )
    op.create_index(
        op.f("ix_timeline_events_team_id_lead_id_created_at_id"),
        "timeline_events",
        ["team_id", "lead_id", "created_at", "id"],
    )
    op.create_index(op.f("ix_timeline_events_lead_id"), "timeline_events", ["lead_id"])
    op.create_table(
        "oauth_states",
        sa.Column("id", sa.Text(), nullable=False),
        _team_id(),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("state_hash", sa.Text(), nullable=False),
        sa.Column("code_verifier", JSON, nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        _now("created_at"),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("consumed_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oauth_states")),
        _team_fk("oauth_states"),
        sa.UniqueConstraint("state_hash", name=op.f("uq_oauth_states_state_hash")),
    )
    op.create_index(op.f("ix_oauth_states_expires_at"), "oauth_states", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oauth_states")
    op.drop_table("timeline_events")
    op.drop_table("leads")
    op.drop_table("integrations")
    op.drop_table("credentials")
    op.drop_table("teams")
