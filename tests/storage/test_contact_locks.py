"""Contact locks: one sync per CRM contact at a time — within a process on both databases, and across processes
on PostgreSQL (each `Database` here stands for another process: its own engine, its own lock connection)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from crm_hub.storage import Database
from crm_hub.storage.locks import ContactLocks


@contextlib.asynccontextmanager
async def another_process(database_url: str) -> AsyncIterator[ContactLocks]:
    database = Database(database_url)
    locks = ContactLocks(database)
    try:
        yield locks
    finally:
        await locks.aclose()
        await database.close()


async def advisory_locks_held(database: Database) -> int:
    async with database.session() as session:
        return int((await session.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))).scalar())


async def test_two_syncs_of_one_contact_in_a_process_take_turns(database: Database) -> None:
    locks = ContactLocks(database)
    order: list[str] = []

    async def sync(name: str) -> bool:
        async with locks.holding("team-turns", "crm", ["a@example.com"]) as waited:
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")
            return waited

    waits = await asyncio.gather(sync("first"), sync("second"))
    await locks.aclose()
    assert order == ["first in", "first out", "second in", "second out"]
    assert waits == [False, True]


async def test_different_contacts_do_not_wait_for_each_other(database: Database) -> None:
    locks = ContactLocks(database)
    async with (
        locks.holding("team-apart", "crm", ["a@example.com"]),
        asyncio.timeout(2),
        locks.holding("team-apart", "crm", ["b@example.com"]) as waited,
    ):
        assert waited is False
    await locks.aclose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_contact_held_by_another_process_is_waited_for_and_then_taken(database_url: str) -> None:
    async with another_process(database_url) as replica_a, another_process(database_url) as replica_b:
        entered = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with replica_a.holding("team-x", "crm", ["a@example.com", "b@example.com"]):
                entered.set()
                await release.wait()

        holding = asyncio.create_task(holder())
        await entered.wait()
        waiting = asyncio.create_task(_enter(replica_b, "team-x", ["b@example.com"]))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "the other process's sync of b@ waits"
        release.set()
        await holding
        assert await asyncio.wait_for(waiting, timeout=5) is True  # it says it waited: re-read what may be stale


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_sync_cancelled_while_waiting_leaves_no_lock_behind(database_url: str) -> None:
    async with another_process(database_url) as replica_a, another_process(database_url) as replica_b:
        async with replica_a.holding("team-c", "crm", ["a@example.com"]):
            # b@ is free and a@ is not: a try that takes b@ lets it go again while it waits for a@.
            waiting = asyncio.create_task(_enter(replica_b, "team-c", ["a@example.com", "b@example.com"]))
            await asyncio.sleep(0.2)
            waiting.cancel()  # a gRPC deadline
            with pytest.raises(asyncio.CancelledError):
                await waiting
        await asyncio.sleep(0.1)  # a release scheduled by the cancelled try runs
        assert await advisory_locks_held(replica_a._database) == 0
        both = _enter(replica_a, "team-c", ["a@example.com", "b@example.com"])
        assert await asyncio.wait_for(both, timeout=2) is False


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_the_locks_of_a_process_that_died_are_let_go(database_url: str) -> None:
    async with another_process(database_url) as replica_b, another_process(database_url) as replica_a:
        entered = asyncio.Event()

        async def hold_forever() -> None:
            async with replica_a.holding("team-d", "crm", ["a@example.com"]):
                entered.set()
                await asyncio.Event().wait()

        holder = asyncio.create_task(hold_forever())
        await entered.wait()
        await replica_a.aclose()  # its connection closes, as when its process dies mid-sync
        try:
            assert await asyncio.wait_for(_enter(replica_b, "team-d", ["a@example.com"]), timeout=2) is False
        finally:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder


async def _enter(locks: ContactLocks, team: str, keys: list[str]) -> bool:
    async with locks.holding(team, "crm", keys) as waited:
        return waited
