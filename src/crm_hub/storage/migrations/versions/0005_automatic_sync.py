"""Automatic sync: at most one gathering (queued, automatic) sync job per CRM account.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GATHERING = sa.text("selection = 'auto' AND state = 'queued'")


def upgrade() -> None:
    op.create_index(
        "uq_sync_jobs_gathering",
        "sync_jobs",
        ["team_id", "provider"],
        unique=True,
        postgresql_where=GATHERING,
        sqlite_where=GATHERING,
    )


def downgrade() -> None:
    op.drop_index("uq_sync_jobs_gathering", table_name="sync_jobs")
