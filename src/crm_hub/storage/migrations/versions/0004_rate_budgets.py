"""Rate budgets: each CRM account's request allowance, shared by every replica and worker.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rate_budgets",
        sa.Column("team_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("tat_ms", sa.BigInteger(), nullable=True),
        sa.Column("granted", sa.Boolean(), nullable=True),
        sa.Column("used", sa.BigInteger(), nullable=True),
        sa.Column("quota", sa.BigInteger(), nullable=True),
        sa.Column("window_seconds", sa.Integer(), nullable=True),
        sa.Column("observed_at", TIMESTAMP, nullable=True),
        sa.Column("updated_at", TIMESTAMP, server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("team_id", "provider", "name", name=op.f("pk_rate_budgets")),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name=op.f("fk_rate_budgets_team_id_teams"), ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("rate_budgets")
