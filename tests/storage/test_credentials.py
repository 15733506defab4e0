"""Credentials: one encrypted envelope per team and provider; rotation walks all of them, carefully."""

from __future__ import annotations

import asyncio
from typing import Any

from crm_hub.storage import Credential, CredentialRepository, Database

SEALED_V1 = {"v": 1, "kid": "k1", "nonce": "bm9uY2U=", "ct": "Y2lwaGVy"}
SEALED_V2 = {"v": 1, "kid": "k2", "nonce": "bm9uY2Uy", "ct": "Y2lwaGVyMg=="}


async def _put(database: Database, team_id: str, provider: str, encrypted: dict[str, Any]) -> Credential:
    async with database.session() as session:
        return await CredentialRepository(session).put(team_id, provider, encrypted)


async def _get(database: Database, team_id: str, provider: str) -> Credential | None:
    async with database.session() as session:
        return await CredentialRepository(session).get(team_id, provider)


async def test_put_stores_then_replaces_the_teams_credentials(database: Database, team_id: str) -> None:
    first = await _put(database, team_id, "hubspot", SEALED_V1)
    second = await _put(database, team_id, "hubspot", SEALED_V2)

    stored = await _get(database, team_id, "hubspot")

    assert stored is not None
    assert stored.id == first.id == second.id
    assert stored.encrypted == SEALED_V2
    assert stored.updated_at > first.updated_at
    assert stored.created_at == first.created_at


async def test_credentials_are_per_team_and_provider(database: Database, team_id: str, other_team_id: str) -> None:
    await _put(database, team_id, "hubspot", SEALED_V1)

    assert await _get(database, other_team_id, "hubspot") is None
    assert await _get(database, team_id, "salesforce") is None


async def test_delete_forgets_only_that_teams_credentials(database: Database, team_id: str, other_team_id: str) -> None:
    await _put(database, team_id, "hubspot", SEALED_V1)
    await _put(database, other_team_id, "hubspot", SEALED_V1)

    async with database.session() as session:
        credentials = CredentialRepository(session)
        assert await credentials.delete(team_id, "hubspot")
        assert not await credentials.delete(team_id, "hubspot")

    assert await _get(database, team_id, "hubspot") is None
    assert await _get(database, other_team_id, "hubspot") is not None


async def test_rotation_visits_every_row_once_in_chunks(database: Database, team_id: str, other_team_id: str) -> None:
    mine = {(await _put(database, team_id, provider, SEALED_V1)).id for provider in ("a", "b", "c")}
    theirs = {(await _put(database, other_team_id, provider, SEALED_V1)).id for provider in ("a", "b")}

    async with database.session() as session:
        chunks = [chunk async for chunk in CredentialRepository(session).all_for_rotation(chunk_size=2)]

    visited = [row.id for chunk in chunks for row in chunk]
    assert all(len(chunk) <= 2 for chunk in chunks)
    assert len(visited) == len(set(visited))
    assert mine | theirs <= set(visited)


async def test_replace_encrypted_needs_the_rows_own_team_and_provider(
    database: Database, team_id: str, other_team_id: str
) -> None:
    row = await _put(database, team_id, "hubspot", SEALED_V1)

    async with database.session() as session:
        credentials = CredentialRepository(session)
        moved_team = await credentials.replace_encrypted(row.id, other_team_id, "hubspot", SEALED_V2)
        moved_provider = await credentials.replace_encrypted(row.id, team_id, "salesforce", SEALED_V2)
        rotated = await credentials.replace_encrypted(row.id, team_id, "hubspot", SEALED_V2)

    assert (moved_team, moved_provider, rotated) == (False, False, True)
    stored = await _get(database, team_id, "hubspot")
    assert stored is not None
    assert stored.encrypted == SEALED_V2


async def test_rotation_does_not_overwrite_tokens_refreshed_after_it_read_them(
    database: Database, team_id: str
) -> None:
    read_for_rotation = await _put(database, team_id, "hubspot", SEALED_V1)
    refreshed = {"v": 1, "kid": "k2", "nonce": "ZnJlc2g=", "ct": "bmV3IHRva2Vucw=="}
    after_refresh = await _put(database, team_id, "hubspot", refreshed)

    async def rotate(seen: Credential, encrypted: dict[str, Any]) -> bool:
        async with database.session() as session:
            return await CredentialRepository(session).replace_encrypted(
                seen.id, team_id, "hubspot", encrypted, if_unchanged_since=seen.updated_at
            )

    stale = await rotate(read_for_rotation, SEALED_V2)
    stored = await _get(database, team_id, "hubspot")
    assert stored is not None
    assert stored.encrypted == refreshed

    current = await rotate(after_refresh, SEALED_V2)
    stored = await _get(database, team_id, "hubspot")
    assert stored is not None
    assert stored.encrypted == SEALED_V2
    assert (stale, current) == (False, True)


async def test_lock_for_refresh_makes_a_second_refresher_wait_then_see_the_new_tokens(
    database: Database, team_id: str
) -> None:
    await _put(database, team_id, "hubspot", SEALED_V1)

    async def second_refresher() -> Credential | None:
        async with database.session() as session:
            return await CredentialRepository(session).lock_for_refresh(team_id, "hubspot")

    async with database.session() as session:
        credentials = CredentialRepository(session)
        locked = await credentials.lock_for_refresh(team_id, "hubspot")
        seen_by_first = dict(locked.encrypted) if locked else None
        second = asyncio.create_task(second_refresher())
        done, _ = await asyncio.wait({second}, timeout=0.2)
        second_waited = not done
        await credentials.put(team_id, "hubspot", SEALED_V2)
    seen_by_second = await second

    # PostgreSQL: SELECT … FOR UPDATE; SQLite: the database write lock. Either way the second refresher
    # waits, then sees the first one's new tokens.
    assert seen_by_first == SEALED_V1
    assert second_waited
    assert seen_by_second is not None
    assert seen_by_second.encrypted == SEALED_V2
