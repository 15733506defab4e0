"""An empty database of its own, on the same backend as a test database, for tests that see every row.

The shared test database holds other tests' rows (and their envelopes sealed with other keys); a command
such as ``crm-hub rotate-keys`` walks every team's rows, so its tests need a database nobody else writes to.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from crm_hub.storage import normalize_database_url


@asynccontextmanager
async def fresh_database_url(beside: str, directory: Path) -> AsyncIterator[str]:
    """The URL (async driver) of a new, unmigrated database on the server of ``beside``; dropped on exit.

    SQLite gets a new file in ``directory``; PostgreSQL a new database created by ``beside``'s user.
    """
    url = make_url(beside)
    if url.get_backend_name() == "sqlite":
        yield normalize_database_url(None, data_dir=directory / "fresh-db")
        return
    name = f"crm_hub_fresh_{uuid.uuid4().hex[:12]}"
    libpq_url = url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with await psycopg.AsyncConnection.connect(libpq_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
