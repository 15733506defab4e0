"""OAuth states: usable once, only by their team, for their provider, before they expire."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from crm_hub.storage import Database, OAuthState, OAuthStateRepository

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
VERIFIER = {"v": 1, "kid": "k1", "nonce": "bm9uY2U=", "ct": "dmVyaWZpZXI="}


def _state_hash() -> str:
    return hashlib.sha256(secrets.token_urlsafe(32).encode()).hexdigest()


async def _create(
    database: Database, team_id: str, *, provider: str = "hubspot", expires_at: datetime = NOW + timedelta(minutes=10)
) -> str:
    state_hash = _state_hash()
    async with database.session() as session:
        await OAuthStateRepository(session).create(
            team_id, provider, state_hash, actor="user-1", expires_at=expires_at, code_verifier=VERIFIER
        )
    return state_hash


async def _consume(
    database: Database, state_hash: str, team_id: str, provider: str = "hubspot", now: datetime = NOW
) -> OAuthState | None:
    async with database.session() as session:
        return await OAuthStateRepository(session).consume(state_hash, team_id, provider, now)


async def test_oauth_state_is_consumed_once(database: Database, team_id: str) -> None:
    state_hash = await _create(database, team_id)

    first = await _consume(database, state_hash, team_id)
    replay = await _consume(database, state_hash, team_id, now=NOW + timedelta(seconds=1))

    assert first is not None
    assert (first.team_id, first.provider, first.actor) == (team_id, "hubspot", "user-1")
    assert first.code_verifier == VERIFIER
    assert first.consumed_at == NOW
    assert replay is None


async def test_expired_or_other_team_state_is_not_consumed(
    database: Database, team_id: str, other_team_id: str
) -> None:
    state_hash = await _create(database, team_id, expires_at=NOW + timedelta(minutes=10))

    assert await _consume(database, state_hash, other_team_id) is None
    assert await _consume(database, state_hash, team_id, provider="salesforce") is None
    assert await _consume(database, state_hash, team_id, now=NOW + timedelta(minutes=10)) is None
    assert await _consume(database, _state_hash(), team_id) is None
    # None of those attempts used the state up: its rightful callback still works.
    assert await _consume(database, state_hash, team_id) is not None


async def test_concurrent_callbacks_consume_a_state_once(database: Database, team_id: str) -> None:
    state_hash = await _create(database, team_id)
    callbacks = 5
    all_in_transaction = asyncio.Barrier(callbacks)

    async def callback() -> OAuthState | None:
        async with database.session() as session:
            await session.connection()
            await all_in_transaction.wait()
            return await OAuthStateRepository(session).consume(state_hash, team_id, "hubspot", NOW)

    results = await asyncio.gather(*(callback() for _ in range(callbacks)))

    assert sum(result is not None for result in results) == 1


async def test_delete_expired_removes_only_expired_states(database: Database, team_id: str) -> None:
    long_ago = datetime(2001, 1, 1, tzinfo=UTC)
    expired = await _create(database, team_id, expires_at=long_ago - timedelta(seconds=1))
    pending = await _create(database, team_id, expires_at=long_ago + timedelta(minutes=10))

    async with database.session() as session:
        deleted = await OAuthStateRepository(session).delete_expired(long_ago)
    async with database.session() as session:
        left = set(await session.scalars(select(OAuthState.state_hash).where(OAuthState.team_id == team_id)))

    assert deleted >= 1
    assert left == {pending}
    assert expired not in left
