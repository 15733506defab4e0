"""procrastinate's schema (sync jobs on PostgreSQL), applied the way procrastinate ships it: file by file.

procrastinate keeps no version table of its own; its migrations are SQL files inside the package, each to be
applied once, in order. This revision applies those of procrastinate 3.10 (the version pyproject.toml pins),
by name, each in its own transaction (an enum value added in one file is used by the next). A later pin with
new files gets a revision of its own listing them. SQLite runs no job library: nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: procrastinate 3.10's migration files, oldest first (``procrastinate schema --migrations-path`` lists them).
MIGRATIONS = (
    "00.00.00_01_initial.sql",
    "00.05.00_01_drop_started_at_column.sql",
    "00.05.00_02_drop_started_at_column.sql",
    "00.05.00_03_drop_procrastinate_version_table.sql",
    "00.06.00_01_fix_procrastinate_fetch_job.sql",
    "00.07.01_01_fix_trigger_status_events_insert.sql",
    "00.08.01_01_add_queueing_lock_column.sql",
    "00.10.00_01_close_fetch_job_race_condition.sql",
    "00.10.00_02_add_defer_job_function.sql",
    "00.11.00_03_add_procrastinate_periodic_defers.sql",
    "00.12.00_01_add_foreign_key_index.sql",
    "00.14.00_01_add_locks_to_periodic_defer.sql",
    "00.15.02_01_fix_procrastinate_defer_periodic_job.sql",
    "00.16.00_01_add_finish_job_and_retry_job_functions.sql",
    "00.17.00_01_add_trigger_on_job_deletion.sql",
    "00.17.00_02_delete_finished_jobs.sql",
    "00.17.00_03_add_checks_to_finish_job.sql",
    "00.17.00_04_add_checks_to_retry_job.sql",
    "00.18.01_01_fix_finish_job_compat_issue.sql",
    "00.19.00_01_add_index_on_procrastinate_jobs.sql",
    "00.22.00_01_add_kwargs_to_defer_periodic_job.sql",
    "00.23.00_01_null_locks_excluded.sql",
    "01.00.00_01_remove_old_finish_job_function.sql",
    "01.01.01_01_job_id_bigint.sql",
    "02.00.03_01_add_job_priority.sql",
    "02.05.00_01_add_periodic_job_priority.sql",
    "02.06.00_01_add_cancel_states.sql",
    "02.08.00_01_add_additional_params_to_retry_job.sql",
    "02.14.01_01_add_indexes_for_fetch_job.sql",
    "03.00.00_01_pre_cancel_notification.sql",
    "03.00.00_50_post_cancel_notification.sql",
    "03.01.00_01_pre_add_heartbeat.sql",
    "03.01.00_50_post_add_heartbeat.sql",
    "03.02.00_01_pre_batch_defer_jobs.sql",
    "03.02.00_50_post_batch_defer_jobs.sql",
    "03.03.00_01_pre_priority_lock_fetch_job.sql",
    "03.04.00_01_pre_add_retry_failed_job_procedure.sql",
    "03.04.00_50_post_add_retry_failed_job_procedure.sql",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    files = resources.files("procrastinate.sql.migrations")
    for name in MIGRATIONS:
        # The driver reads % as a placeholder even without parameters: double it, as procrastinate does.
        sql = files.joinpath(name).read_text().replace("%", "%%")
        with op.get_context().autocommit_block():
            op.get_bind().exec_driver_sql(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Every object the files made is named procrastinate_*: drop the tables (their triggers go with them), then
    # the functions and types.
    op.execute(
        """
        DO $$
        DECLARE item record;
        BEGIN
            FOR item IN SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
                        AND tablename LIKE 'procrastinate%%' LOOP
                EXECUTE format('DROP TABLE IF EXISTS %%I CASCADE', item.tablename);
            END LOOP;
            FOR item IN SELECT p.oid::regprocedure AS signature FROM pg_proc p
                        JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname = current_schema() AND p.proname LIKE 'procrastinate%%' LOOP
                EXECUTE format('DROP FUNCTION IF EXISTS %%s CASCADE', item.signature);
            END LOOP;
            FOR item IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                        WHERE n.nspname = current_schema() AND t.typname LIKE 'procrastinate%%'
                        AND t.typtype = 'e' LOOP
                EXECUTE format('DROP TYPE IF EXISTS %%I CASCADE', item.typname);
            END LOOP;
        END $$;
        """
    )
