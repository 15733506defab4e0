"""Alembic environment for crm_hub's schema (SQLite and PostgreSQL).

Normally entered through :func:`crm_hub.storage.migrate.upgrade`, which hands over an open connection in
``config.attributes["connection"]``. Without one it connects to ``sqlalchemy.url`` itself, and in offline
mode (``--sql``) it renders the SQL instead.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from crm_hub.storage.migrate import include_object, migration_connection
from crm_hub.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run_with_connection(connection: Connection) -> None:
    """Run the migrations on an open (sync-facing) connection."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: Alembic rebuilds the table instead ("batch" mode).
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    """Connect to ``url`` and run the migrations there."""
    async with migration_connection(url) as connection:
        await connection.run_sync(run_with_connection)


def run_offline(url: str) -> None:
    """Render the migrations as SQL for ``url``'s dialect."""
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Pick the mode Alembic was started in."""
    connection: Connection | None = config.attributes.get("connection")
    url = config.get_main_option("sqlalchemy.url") or ""
    if context.is_offline_mode():
        run_offline(url)
    elif connection is not None:
        run_with_connection(connection)
    else:
        asyncio.run(run_with_own_engine(url))


main()
