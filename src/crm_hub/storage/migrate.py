"""Schema migrations, run from code: ``await upgrade(url)`` brings a database to the current schema.

The Alembic environment ships inside the package (``crm_hub/storage/migrations``), so no ``alembic.ini``
is needed; :func:`alembic_config` builds the configuration for the ``alembic`` API and commands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from crm_hub.errors import ConfigurationError
from crm_hub.storage.database import create_engine

__all__ = ["MIGRATIONS_DIR", "alembic_config", "include_object", "migration_connection", "upgrade"]

#: The Alembic script directory (env.py, versions/).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave procrastinate's tables (its schema comes from its own SQL files, revision 0003) out of comparisons."""
    return not (type_ == "table" and reflected and (name or "").startswith("procrastinate"))


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the packaged migrations, pointed at ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Config values are interpolated: a literal % (an escaped password character) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@asynccontextmanager
async def migration_connection(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection prepared for migrating ``url``, committed when the block exits normally."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch migrations rebuild a table by copying and dropping it; with foreign keys on, dropping
                # a parent table would cascade-delete its children. The pragma only works outside a
                # transaction, so it comes first.
                await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            yield connection
            if sqlite:
                broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise ConfigurationError(f"Migration left rows with dangling foreign keys: {broken[:5]}")
            await connection.commit()
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (the latest by default). Safe to repeat."""
    config = alembic_config(url)
    async with migration_connection(url) as connection:
        await connection.run_sync(_upgrade, config, revision)


def _upgrade(connection: Connection, config: Config, revision: str) -> None:
    # env.py picks this connection up instead of opening its own.
    config.attributes["connection"] = connection
    command.upgrade(config, revision)
