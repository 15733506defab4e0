"""The physical floor under one `SyncLead`, side by side with the raw call and crm_hub (bench/RESULTS.md, "floor").

    .venv/bin/python -m bench.bench_floor [--databases sqlite,postgresql] [--calls 300]

What a sync cannot do without, each timed on its own in the same run, in shuffled order per round:

* the raw call: a minimal httpx client sending the upsert to the fake HubSpot (its own process);
* a bare ``grpc.aio`` unary call on loopback to a server in its own process that answers at once, with a
  SyncLead-sized request, the same ``authorization`` metadata and a SyncLead-sized answer;
* SQLAlchemy Core transactions on an ``AsyncEngine`` made as crm_hub makes its own (same drivers, pool and
  SQLite pragmas), of the shapes a sync needs: one read (the lead joined with its connection and sync state),
  the intent (the state's upsert and the rate budget's, returning) and the outcome (the state's upsert and a
  timeline row), all three in a row, and for SQLite a write with ``synchronous=NORMAL`` (not crm_hub's
  setting: what the commit's fsync costs);
* a minimal sync server: that gRPC server doing those three transactions around the same httpx call — the
  least a service that records an intent before the CRM call and the outcome after it can do with grpc.aio,
  SQLAlchemy and httpx in Python;
* crm_hub's own ``SyncLead`` (`crm-hub serve`, its own process).

Then the minimal server's throughput at 1, 4 and 16 concurrent callers against the raw call's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
from sqlalchemy import JSON, Column, DateTime, Float, MetaData, String, Table, and_, event, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.harness import (
    JWT_SECRET,
    RawHubSpot,
    Team,
    child,
    concurrently,
    crm_hub_server,
    database,
    fake_crm,
    free_port,
    grpc_channel,
    machine,
    median,
    timed,
)
from crm_hub.rpc.auth import mint_token
from crm_hub.storage.database import create_engine
from crm_hub.v1 import sync_pb2

_ECHO = "/bench.Floor/Echo"
_SYNC = "/bench.Floor/Sync"
_TEAM = "floor-team"

# -- the minimal store: the shapes of a sync's three transactions, in SQLAlchemy Core ------------------------

_METADATA = MetaData()
_LEADS = Table(
    "floor_leads",
    _METADATA,
    Column("team_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("fields", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
_CONNECTIONS = Table(
    "floor_connections",
    _METADATA,
    Column("team_id", String(64), primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("settings", JSON, nullable=False),
    Column("credentials", JSON, nullable=False),
)
_STATES = Table(
    "floor_states",
    _METADATA,
    Column("team_id", String(64), primary_key=True),
    Column("provider", String(32), primary_key=True),
    Column("lead_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("contact_id", String(64)),
    Column("fingerprint", String(64)),
    Column("intent_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
_BUDGETS = Table(
    "floor_budgets",
    _METADATA,
    Column("team_id", String(64), primary_key=True),
    Column("name", String(32), primary_key=True),
    Column("tat_ms", Float, nullable=False),
)
_TIMELINE = Table(
    "floor_timeline",
    _METADATA,
    Column("id", String(32), primary_key=True),
    Column("team_id", String(64), nullable=False),
    Column("lead_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("message", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class FloorStore:
    """A sync's three transactions, with nothing around them: read, intent (with a budget slot), outcome."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        upsert: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        intent = upsert(_STATES)
        self._intent = intent.on_conflict_do_update(
            index_elements=["team_id", "provider", "lead_id"],
            set_={"status": intent.excluded.status, "intent_at": intent.excluded.intent_at},
        )
        outcome = upsert(_STATES)
        self._outcome = outcome.on_conflict_do_update(
            index_elements=["team_id", "provider", "lead_id"],
            set_={
                "status": outcome.excluded.status,
                "contact_id": outcome.excluded.contact_id,
                "fingerprint": outcome.excluded.fingerprint,
                "intent_at": None,
                "updated_at": outcome.excluded.updated_at,
            },
        )
        budget = upsert(_BUDGETS)
        self._budget = budget.on_conflict_do_update(
            index_elements=["team_id", "name"], set_={"tat_ms": _BUDGETS.c.tat_ms + 1.0}
        ).returning(_BUDGETS.c.tat_ms)
        self._read = (
            select(_LEADS, _CONNECTIONS.c.settings, _CONNECTIONS.c.credentials, _STATES.c.status, _STATES.c.intent_at)
            .outerjoin(_CONNECTIONS, and_(_CONNECTIONS.c.team_id == _LEADS.c.team_id, _CONNECTIONS.c.provider == "hub"))
            .outerjoin(
                _STATES,
                and_(
                    _STATES.c.team_id == _LEADS.c.team_id,
                    _STATES.c.provider == "hub",
                    _STATES.c.lead_id == _LEADS.c.id,
                ),
            )
        )
        # SQLite has one writer: queue this process's writers, as crm_hub does.
        self._write_lock = asyncio.Lock() if dialect == "sqlite" else None

    @classmethod
    async def create(cls, url: str, *, sqlite_synchronous: str | None = None) -> FloorStore:
        engine = create_engine(url)
        if sqlite_synchronous is not None:
            event.listen(engine.sync_engine, "connect", _synchronous(sqlite_synchronous))
        async with engine.begin() as connection:
            await connection.run_sync(_METADATA.create_all)
        return cls(engine)

    async def add_leads(self, lead_ids: list[str]) -> None:
        now = datetime.now(UTC)
        rows = [
            {"team_id": _TEAM, "id": lead_id, "fields": {"email": f"{lead_id}@example.com"}, "updated_at": now}
            for lead_id in lead_ids
        ]
        async with self.engine.begin() as connection:
            await connection.execute(insert(_LEADS), rows)
            connection_row = {"team_id": _TEAM, "provider": "hub", "settings": {"mapping": {"email": "email"}}}
            await connection.execute(insert(_CONNECTIONS), [{**connection_row, "credentials": {"sealed": "x" * 400}}])

    async def read(self, lead_id: str) -> Any:
        async with self.engine.connect() as connection:
            row = (await connection.execute(self._read.where(_LEADS.c.team_id == _TEAM, _LEADS.c.id == lead_id))).one()
            await connection.commit()
        return row

    async def intent(self, lead_id: str) -> None:
        now = datetime.now(UTC)
        async with self._writing(), self.engine.begin() as connection:
            await connection.execute(
                self._intent,
                [{"team_id": _TEAM, "provider": "hub", "lead_id": lead_id, "status": "pending", "intent_at": now,
                  "updated_at": now}],
            )  # fmt: skip
            await connection.execute(self._budget, {"team_id": _TEAM, "name": "requests", "tat_ms": time.time() * 1000})

    async def outcome(self, lead_id: str, contact_id: str) -> None:
        now = datetime.now(UTC)
        fingerprint = hashlib.sha256(lead_id.encode()).hexdigest()
        async with self._writing(), self.engine.begin() as connection:
            await connection.execute(
                self._outcome,
                [{"team_id": _TEAM, "provider": "hub", "lead_id": lead_id, "status": "synced", "contact_id": contact_id,
                  "fingerprint": fingerprint, "updated_at": now}],
            )  # fmt: skip
            await connection.execute(
                insert(_TIMELINE),
                [{"id": uuid.uuid4().hex, "team_id": _TEAM, "lead_id": lead_id, "action": "created",
                  "message": "Created the contact.", "created_at": now}],
            )  # fmt: skip

    async def three(self, lead_id: str) -> None:
        await self.read(lead_id)
        await self.intent(lead_id)
        await self.outcome(lead_id, "contact")

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield


def _synchronous(mode: str) -> Callable[[Any, Any], None]:
    def configure(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA synchronous={mode}")
        cursor.close()

    return configure


# -- the minimal server: grpc.aio, bytes in and out ------------------------------------------------------------


async def serve(port: int, database_url: str, crm_url: str, crm_token: str) -> None:
    store = FloorStore(create_engine(database_url))  # its tables exist: the client made them
    answer = sync_pb2.SyncLeadResponse(success=True, contact_id="1" * 12, action="created", message="Created.")
    answer.payload.update({"email": "lead@example.com", "firstname": "Lead", "company": "Bench"})
    answer_bytes = answer.SerializeToString()
    async with httpx.AsyncClient(base_url=crm_url, timeout=60) as http:
        raw = RawHubSpot(http, crm_token)

        async def echo(request: bytes, context: Any) -> bytes:
            return answer_bytes

        async def sync(request: bytes, context: Any) -> bytes:
            lead_id = sync_pb2.SyncLeadRequest.FromString(request).lead_id
            await store.read(lead_id)
            await store.intent(lead_id)
            await raw.upsert([f"{lead_id}@example.com"])
            await store.outcome(lead_id, "contact")
            return answer_bytes

        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),  # type: ignore[arg-type]  # aio handlers
            "Sync": grpc.unary_unary_rpc_method_handler(sync),  # type: ignore[arg-type]
        }
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", handlers),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"floor serving on {port}", flush=True)
        await server.wait_for_termination()


@contextlib.contextmanager
def floor_server(database_url: str, crm_url: str, crm_token: str) -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "bench.bench_floor", "--serve", str(port), "--database-url", database_url]
    command += ["--crm-url", crm_url, "--crm-token", crm_token]
    with child(command, {}, "floor") as process:
        deadline = time.monotonic() + 30
        while "floor serving" not in process.log.read_text(errors="replace"):
            if process.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"no floor server:\n{process.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield port


# -- the measurement -------------------------------------------------------------------------------------------


async def bench(kind: str, calls: int) -> dict[str, float]:
    with (
        fake_crm("hubspot") as fake,
        database(kind) as crm_hub_url,
        database(kind) as floor_url,
        crm_hub_server(crm_hub_url, fake, HUBSPOT_RATE_LIMIT="1000000/10s") as (port, _server),
    ):
        store = await FloorStore.create(floor_url)
        normal = await FloorStore.create(floor_url, sqlite_synchronous="NORMAL") if kind == "sqlite" else None
        levels, per_level = (1, 4, 16), 160
        floor_leads = [f"floor-{uuid.uuid4().hex[:12]}" for _ in range((calls + 30) * 6 + per_level * len(levels))]
        await store.add_leads(floor_leads)
        async with (
            grpc_channel(port) as channel,
            RawHubSpot.connected(fake) as raw,
        ):
            team = Team(channel, "hubspot")
            await team.connect()
            crm_hub_leads = await team.create_leads(calls + 30, "floor")
            with floor_server(floor_url, fake.url, raw.token) as floor_port:
                async with grpc_channel(floor_port) as floor_channel:
                    echo = floor_channel.unary_unary(_ECHO)
                    sync = floor_channel.unary_unary(_SYNC)
                    metadata = (("authorization", f"Bearer {mint_token(JWT_SECRET, team_id=_TEAM, role='member')}"),)

                    def request(lead_id: str) -> bytes:
                        return team.sync_request(lead_id).SerializeToString()

                    measures: dict[str, Callable[[], Awaitable[object]]] = {
                        "raw": lambda: raw.upsert([f"raw-{uuid.uuid4().hex}@example.com"]),
                        "grpc_echo": lambda: echo(request(floor_leads[-1]), metadata=metadata),
                        "db_read": lambda: store.read(floor_leads[-1]),
                        "db_intent": lambda: store.intent(floor_leads.pop()),
                        "db_outcome": lambda: store.outcome(floor_leads.pop(), "contact"),
                        "db_three": lambda: store.three(floor_leads.pop()),
                        "floor_sync": lambda: sync(request(floor_leads.pop()), metadata=metadata),
                        "crm_hub": lambda: team.sync.SyncLead(
                            team.sync_request(crm_hub_leads.pop()), metadata=team.auth()
                        ),
                    }
                    if normal is not None:
                        measures["db_outcome_normal"] = lambda: normal.outcome(floor_leads.pop(), "contact")
                    samples: dict[str, list[float]] = {name: [] for name in measures}
                    for _ in range(30):  # warm up: connections, caches, statements
                        for name, measure in measures.items():
                            if name != "crm_hub":
                                await measure()
                        await measures["crm_hub"]()
                    names = list(measures)
                    for _ in range(calls):
                        random.shuffle(names)  # no measure always runs right after another
                        for name in names:
                            samples[name].append(await timed(measures[name]))
                    result = {f"{name}_p50_ms": median(values) * 1000 for name, values in samples.items()}
                    for level in levels:
                        syncs = [_calling(sync, request(floor_leads.pop()), metadata) for _ in range(per_level)]
                        result[f"floor_per_s_at_{level}"] = per_level / await concurrently(level, syncs)
                        upserts = [_upserting(raw, f"raw-{uuid.uuid4().hex}@example.com") for _ in range(per_level)]
                        result[f"raw_per_s_at_{level}"] = per_level / await concurrently(level, upserts)
        await store.engine.dispose()
        if normal is not None:
            await normal.engine.dispose()
    return result


def _calling(method: Any, request: bytes, metadata: tuple[tuple[str, str], ...]) -> Callable[[], Awaitable[object]]:
    return lambda: method(request, metadata=metadata)


def _upserting(raw: RawHubSpot, email: str) -> Callable[[], Awaitable[object]]:
    return lambda: raw.upsert([email])


_ROWS = (
    ("raw", "the raw CRM call (httpx, to the fake on a socket)"),
    ("grpc_echo", "a bare grpc.aio unary call on loopback, answered at once"),
    ("db_read", "one read transaction (1 SELECT, 3 tables joined)"),
    ("db_intent", "one write transaction: the intent (2 upserts, 1 RETURNING)"),
    ("db_outcome", "one write transaction: the outcome (1 upsert, 1 INSERT)"),
    ("db_outcome_normal", "the same with synchronous=NORMAL (not crm_hub's setting)"),
    ("db_three", "the three in a row"),
    ("floor_sync", "minimal sync server: gRPC + the three transactions + the httpx call"),
    ("crm_hub", "crm_hub SyncLead"),
)


def report(kind: str, figures: dict[str, float]) -> str:
    raw = figures["raw_p50_ms"]
    lines = []
    for key, what in _ROWS:
        if f"{key}_p50_ms" in figures:
            value = figures[f"{key}_p50_ms"]
            lines.append(f"| {kind} | {what} | {value:.2f} ms | {value / raw:.2f}x |")
    over = figures["crm_hub_p50_ms"] / figures["floor_sync_p50_ms"]
    lines.append(f"| {kind} | crm_hub SyncLead against the minimal sync server | | {over:.2f}x the minimal server |")
    parts = figures["grpc_echo_p50_ms"] + figures["db_three_p50_ms"] + raw
    lines.append(
        f"| {kind} | sum of the parts (echo + three transactions + raw call) | {parts:.2f} ms | {parts / raw:.2f}x |"
    )
    throughput = " / ".join(f"{figures[f'floor_per_s_at_{level}']:.0f}" for level in (1, 4, 16))
    raw_throughput = " / ".join(f"{figures[f'raw_per_s_at_{level}']:.0f}" for level in (1, 4, 16))
    lines.append(
        f"| {kind} | minimal sync server at 1 / 4 / 16 callers | {throughput} syncs/s | raw {raw_throughput} calls/s |"
    )
    return "\n".join(lines)


async def main(databases: list[str], calls: int) -> None:
    print(f"# {machine()}")
    print("| database | what | p50 | against the raw call |")
    print("|---|---|---|---|")
    for kind in databases:
        print(report(kind, await bench(kind, calls)), flush=True)
    print(f"# {machine()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--crm-url", help=argparse.SUPPRESS)
    parser.add_argument("--crm-token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.serve, args.database_url, args.crm_url, args.crm_token))
    else:
        asyncio.run(main(args.databases.split(","), args.calls))
