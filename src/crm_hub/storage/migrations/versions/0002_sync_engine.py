"""The sync engine: each lead's sync state, sync jobs and their results; reasons beside stored errors.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when the models do.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)


def _team(table: str) -> list[sa.Column[str] | sa.ForeignKeyConstraint]:
    return [
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], name=op.f(f"fk_{table}_team_id_teams"), ondelete="CASCADE"),
    ]


def upgrade() -> None:
    with op.batch_alter_table("integrations") as table:
        table.add_column(sa.Column("error_reason", sa.Text(), nullable=True))
    # "Credentials expired" doubled as the state flag; any other error of a connected integration was a quota.
    op.execute("UPDATE integrations SET error_reason = 'CREDENTIALS_EXPIRED' WHERE error = 'Credentials expired'")
    op.execute(
        "UPDATE integrations SET error_reason = 'RATE_LIMITED' "
        "WHERE error IS NOT NULL AND error_reason IS NULL AND status = 'CONNECTED'"
    )
    with op.batch_alter_table("timeline_events") as table:
        table.add_column(sa.Column("job_id", sa.Text(), nullable=True))

    op.create_table(
        "lead_sync_states",
        sa.Column("id", sa.Text(), nullable=False),
        *_team("lead_sync_states"),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("lead_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("payload_fingerprint", sa.Text(), nullable=True),
        sa.Column("mapping_fingerprint", sa.Text(), nullable=True),
        sa.Column("last_action", sa.Text(), nullable=True),
        sa.Column("last_synced_at", TIMESTAMP, nullable=True),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("intent_at", TIMESTAMP, nullable=True),
        sa.Column("intent_action", sa.Text(), nullable=True),
        sa.Column("intent_seen", JSON, nullable=True),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lead_sync_states")),
        sa.ForeignKeyConstraint(
            ["lead_id"], ["leads.id"], name=op.f("fk_lead_sync_states_lead_id_leads"), ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "team_id", "provider", "lead_id", name=op.f("uq_lead_sync_states_team_id_provider_lead_id")
        ),
        sa.CheckConstraint("status IN ('pending', 'synced', 'failed')", name=op.f("ck_lead_sync_states_status")),
    )
    op.create_index(
        op.f("ix_lead_sync_states_team_id_provider_status"), "lead_sync_states", ["team_id", "provider", "status"]
    )
    op.create_index(op.f("ix_lead_sync_states_lead_id"), "lead_sync_states", ["lead_id"])
    op.create_index(
        op.f("ix_lead_sync_states_team_id_provider_last_synced_at"),
        "lead_sync_states",
        ["team_id", "provider", "last_synced_at"],
    )

    op.create_table(
        "sync_jobs",
        sa.Column("id", sa.Text(), nullable=False),
        *_team("sync_jobs"),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("duplicate_policy", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("force", sa.Boolean(), nullable=False),
        sa.Column("selection", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("crm_calls", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_jobs")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_sync_jobs_state")
        ),
    )
    op.create_index(op.f("ix_sync_jobs_team_id_created_at_id"), "sync_jobs", ["team_id", "created_at", "id"])

    op.create_table(
        "sync_job_results",
        sa.Column("job_id", sa.Text(), nullable=False),
        sa.Column("lead_id", sa.Text(), nullable=False),
        *_team("sync_job_results"),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("other_contact_ids", JSON, nullable=True),
        sa.Column("error_reason", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("job_id", "lead_id", name=op.f("pk_sync_job_results")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["sync_jobs.id"], name=op.f("fk_sync_job_results_job_id_sync_jobs"), ondelete="CASCADE"
        ),
    )
    op.create_index(
        op.f("ix_sync_job_results_job_id_outcome_lead_id"), "sync_job_results", ["job_id", "outcome", "lead_id"]
    )


def downgrade() -> None:
    op.drop_table("sync_job_results")
    op.drop_table("sync_jobs")
    op.drop_table("lead_sync_states")
    with op.batch_alter_table("timeline_events") as table:
        table.drop_column("job_id")
    with op.batch_alter_table("integrations") as table:
        table.drop_column("error_reason")
