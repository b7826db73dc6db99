"""PostgreSQL for tests: the server (`BLOOMR_TEST_DATABASE`, by default the one
scripts/services.sh starts) and a fresh schema per test, dropped afterwards, so tests
never see each other's data (as centrifuge's getUniquePrefix does for Redis keys)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

PG_DSN = os.environ.get("BLOOMR_TEST_DATABASE", "postgresql://postgres@127.0.0.1:5432/test")


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
