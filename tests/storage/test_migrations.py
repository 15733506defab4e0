"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from crm_hub.storage import Base, Database, alembic_config, normalize_database_url, upgrade
from crm_hub.storage.migrate import include_object, migration_connection

TABLES = {
    "teams",
    "credentials",
    "integrations",
    "leads",
    "timeline_events",
    "oauth_states",
    "lead_sync_states",
    "sync_jobs",
    "sync_job_results",
    "rate_budgets",
}


def _differences(connection: Connection) -> list[Any]:
    options = {"compare_type": True, "compare_server_default": True, "include_object": include_object}
    context = MigrationContext.configure(connection, opts=options)
    return list(compare_metadata(context, Base.metadata))


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_migrations_match_models(database: Database) -> None:
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(_differences)

    assert differences == []


async def test_migrated_database_is_at_head_and_upgrading_again_changes_nothing(
    database: Database, database_url: str
) -> None:
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()

    await upgrade(database_url)

    async with database.engine.connect() as connection:
        assert await connection.run_sync(_revision) == head
        assert await connection.run_sync(_differences) == []


async def test_every_foreign_key_cascades_on_delete(database: Database) -> None:
    def foreign_keys(connection: Connection) -> dict[str, str]:
        inspector = inspect(connection)
        return {
            f"{table}.{fk['constrained_columns']}": str(fk["options"].get("ondelete"))
            for table in TABLES
            for fk in inspector.get_foreign_keys(table)
        }

    async with database.engine.connect() as connection:
        found = await connection.run_sync(foreign_keys)

    assert len(found) == 12
    assert {option.upper() for option in found.values()} == {"CASCADE"}


async def test_sqlite_migrations_downgrade_to_nothing_and_back(tmp_path: Path) -> None:
    url = normalize_database_url(None, data_dir=tmp_path)
    config = alembic_config(url)

    def table_names(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names()) - {"alembic_version"}

    def downgrade(connection: Connection) -> set[str]:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        return table_names(connection)

    await upgrade(url)
    async with migration_connection(url) as connection:
        assert await connection.run_sync(downgrade) == set()
    await upgrade(url)
    async with migration_connection(url) as connection:
        assert await connection.run_sync(table_names) == TABLES
        assert await connection.run_sync(_differences) == []
