"""crm_hub.storage.database: which URLs we accept, how SQLite is set up, what a session commits."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from crm_hub.errors import ConfigurationError, StorageUnavailable
from crm_hub.storage import Database, Team, TeamRepository, create_engine, normalize_database_url, upgrade
from crm_hub.storage import database as database_module


def test_no_database_url_means_an_sqlite_file_in_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"

    for missing in (None, "", "   "):
        url = normalize_database_url(missing, data_dir=data_dir)

        assert url == f"sqlite+aiosqlite:///{data_dir.resolve() / 'crm_hub.db'}"
    assert data_dir.is_dir()


def test_relative_data_dir_becomes_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    url = normalize_database_url(None, data_dir=Path("data"))

    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/data/crm_hub.db"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///relative.db", "sqlite+aiosqlite:///relative.db"),
        ("sqlite:////abs/crm.db", "sqlite+aiosqlite:////abs/crm.db"),
        ("sqlite+aiosqlite:////abs/crm.db", "sqlite+aiosqlite:////abs/crm.db"),
        ("postgres://u:p@db:5432/crm", "postgresql+psycopg://u:p@db:5432/crm"),
        ("postgresql://u:p@db/crm?sslmode=require", "postgresql+psycopg://u:p@db/crm?sslmode=require"),
        ("postgresql+psycopg://u@db/crm", "postgresql+psycopg://u@db/crm"),
        ("PostgreSQL://u@db/crm", "postgresql+psycopg://u@db/crm"),
    ],
)
def test_database_urls_get_async_drivers(given: str, expected: str, tmp_path: Path) -> None:
    assert normalize_database_url(given, data_dir=tmp_path) == expected


@pytest.mark.parametrize(
    "given",
    ["mysql://root:hunter2@db/crm", "postgresql+psycopg2://root:hunter2@db/crm", "hunter2", "file:///x.db"],
)
def test_unsupported_database_url_is_a_configuration_error(given: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as raised:
        normalize_database_url(given, data_dir=tmp_path)

    message = raised.value.message
    assert "sqlite://" in message
    assert "postgresql://" in message
    assert "hunter2" not in message  # a password in the URL never reaches logs


async def test_sqlite_connections_enforce_foreign_keys_use_wal_and_wait_for_locks(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with engine.connect() as connection:
            foreign_keys = await connection.scalar(text("PRAGMA foreign_keys"))
            journal_mode = await connection.scalar(text("PRAGMA journal_mode"))
            busy_timeout = await connection.scalar(text("PRAGMA busy_timeout"))
    finally:
        await engine.dispose()

    assert (foreign_keys, journal_mode, busy_timeout) == (1, "wal", 5000)


async def test_session_commits_when_the_block_ends(database: Database) -> None:
    team_id = f"team-{uuid.uuid4().hex}"
    async with database.session() as session:
        await TeamRepository(session).ensure(team_id)

    async with database.session() as session:
        assert await session.get(Team, team_id) is not None


async def test_session_rolls_back_when_the_block_raises(database: Database) -> None:
    team_id = f"team-{uuid.uuid4().hex}"

    async def ensure_then_fail() -> None:
        async with database.session() as session:
            await TeamRepository(session).ensure(team_id)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await ensure_then_fail()

    async with database.session() as session:
        assert await session.scalar(select(func.count()).where(Team.id == team_id)) == 0


async def test_dialect_name_names_the_backend(database: Database, database_url: str) -> None:
    assert database.dialect_name == database_url.partition("+")[0]
    assert database.dialect_name in ("sqlite", "postgresql")


async def test_a_database_locked_past_the_busy_timeout_is_storage_unavailable_not_internal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    url = normalize_database_url(None, data_dir=tmp_path)
    await upgrade(url)
    holder, waiter = Database(url), Database(url)
    try:
        async with holder.session() as locked:
            await TeamRepository(locked).ensure("holder-team")  # takes the write lock until the block ends
            with pytest.raises(StorageUnavailable, match="busy or unreachable"):
                async with waiter.session() as session:
                    await TeamRepository(session).ensure("waiter-team")
    finally:
        await holder.close()
        await waiter.close()
