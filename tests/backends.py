"""The real backends tests use, in one place: PostgreSQL (`BLOOMR_TEST_DATABASE`) with a
fresh schema per test and Redis (`BLOOMR_TEST_REDIS_URL`) with a key prefix per test,
both by default the servers scripts/services.sh starts, each removed afterwards, so tests
never see each other's data (as centrifuge's getUniquePrefix does for Redis keys).

The conformance suites take their backends as classes of one shape (`Backend`): made
with pytest's `tmp_path`, `open()` gives a store on the same data every time it is
called (for reopen tests) and `drop()` removes that data after the test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
import redis.asyncio as aioredis

from bloomr.broker.embedded import EmbeddedBroker
from bloomr.broker.redis import RedisBroker
from bloomr.store.postgres import PostgresStore
from bloomr.store.redis_history import RedisHistory
from bloomr.store.sqlite import SQLiteStore

PG_DSN = os.environ.get("BLOOMR_TEST_DATABASE", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BLOOMR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

S_co = TypeVar("S_co", covariant=True)


class Backend(Protocol[S_co]):
    """What a conformance suite's BACKENDS hold, made with `tmp_path` by the `backend`
    fixture of tests/unit/conftest.py."""

    async def open(self) -> S_co:
        """The same data every time it is called (for reopen tests)."""
        ...

    async def drop(self) -> None:
        """Remove what the test left (after its stores are closed)."""
        ...


# -- PostgreSQL ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PgSchema:
    """Where a test's data lives: PostgresStore(schema.dsn, schema.name)."""

    dsn: str
    name: str


def unique_schema() -> PgSchema:
    return PgSchema(PG_DSN, "t_" + uuid.uuid4().hex)


async def drop_schema(schema: PgSchema) -> None:
    conn = await asyncpg.connect(schema.dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE")
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[PgSchema]:
    """A unique schema, dropped with everything in it when the block ends."""
    schema = unique_schema()
    try:
        yield schema
    finally:
        await drop_schema(schema)


class SQLiteBackend:
    """A database file in the test's own tmp_path (which pytest removes)."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "data" / "bloomr.db"

    async def open(self) -> SQLiteStore:
        store = SQLiteStore(self.path)
        await store.open()
        return store

    async def drop(self) -> None:
        pass


class PostgresBackend:
    """A schema of its own per test, dropped afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.schema = unique_schema()

    async def open(self) -> PostgresStore:
        store = PostgresStore(self.schema.dsn, self.schema.name)
        await store.open()
        return store

    async def drop(self) -> None:
        await drop_schema(self.schema)


# -- Redis -----------------------------------------------------------------------------


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def delete_redis_prefix(prefix: str) -> None:
    """Delete every key under `prefix:` (only those: Redis may be shared)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class RedisBackend:
    """A key prefix of its own per test, its keys deleted afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.prefix = unique_prefix()

    async def open(self) -> RedisHistory:
        store = RedisHistory(REDIS_URL, prefix=self.prefix)
        await store.open()
        return store

    async def drop(self) -> None:
        await delete_redis_prefix(self.prefix)


# -- brokers -----------------------------------------------------------------------------


class BrokerNode:
    """One node's broker, started with a handler that records what it delivers."""

    def __init__(self, broker: Any, closing: list[Any]) -> None:
        self.broker = broker
        self.delivered: dict[str, list[Any]] = {}
        self.changed = asyncio.Event()
        self._closing = closing

    def on_messages(self, stream_id: str, messages: list[Any]) -> None:
        self.delivered.setdefault(stream_id, []).extend(messages)
        self.changed.set()

    async def until(self, stream_id: str, last_seq: int, timeout: float = 10.0) -> list[Any]:
        """What was delivered of the stream once its seq `last_seq` was."""
        async with asyncio.timeout(timeout):
            while not any(m.seq >= last_seq for m in self.delivered.get(stream_id, [])):
                self.changed.clear()
                await self.changed.wait()
        return self.delivered[stream_id]

    async def close(self) -> None:
        await self.broker.stop()
        for closable in self._closing:
            await closable.close()


class EmbeddedBrokerBackend:
    """The embedded broker on a SQLite file of the test's own (one node only)."""

    nodes = 1

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "data" / "bloomr.db"

    async def open(self) -> BrokerNode:
        store = SQLiteStore(self.path)
        await store.open()
        node = BrokerNode(EmbeddedBroker(store), [store])
        await node.broker.start(node)
        return node

    async def cut(self, node: BrokerNode) -> bool:
        return False  # one process: there is no connection to lose

    async def drop(self) -> None:
        pass


class RedisBrokerBackend:
    """The Redis broker under a key prefix of its own; every `open` is another node."""

    nodes = 2

    def __init__(self, tmp_path: Path) -> None:
        self.prefix = unique_prefix()

    async def open(self) -> BrokerNode:
        name = f"bloomr-bus:{self.prefix}:{uuid.uuid4().hex[:6]}"
        broker = RedisBroker(REDIS_URL, self.prefix, name, reconnect_delay=0.2)
        await broker.history.open()
        node = BrokerNode(broker, [broker.history])
        await broker.start(node)
        return node

    async def cut(self, node: BrokerNode) -> bool:
        """Kill the node's pub/sub connection (only its own: Redis may be shared)."""
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            for info in await client.client_list(_type="pubsub"):
                if info.get("name") == node.broker.client_name:
                    await client.client_kill_filter(_id=info["id"])
        finally:
            await client.aclose()
        return True

    async def drop(self) -> None:
        await delete_redis_prefix(self.prefix)
