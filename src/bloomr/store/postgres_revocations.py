"""JWT revocations in PostgreSQL (the `jwt_revocations` table of `postgres._TABLES`),
a part of `PostgresStore`."""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson

from ..jwt_tokens.revocations import JwtRevocation

# one statement: forget the revocations that expired, store this one (again)
_SAVE = (
    "WITH expired AS (DELETE FROM jwt_revocations WHERE until <= $4 AND id <> $1) "
    "INSERT INTO jwt_revocations (id, doc, until) VALUES ($1, $2, $3) "
    "ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, until = excluded.until"
)


class _Queries(Protocol):
    async def _execute(self, sql: str, *args: Any) -> None: ...
    async def _fetch(self, sql: str, *args: Any) -> list[Any]: ...


class PostgresJwtRevocations:
    async def save_jwt_revocation(self: _Queries, rule: JwtRevocation) -> None:
        doc = orjson.dumps(rule.to_json())
        await self._execute(_SAVE, rule.id, doc, rule.until, time.time())

    async def jwt_revocations(self: _Queries) -> list[JwtRevocation]:
        rows = await self._fetch("SELECT doc FROM jwt_revocations WHERE until > $1", time.time())
        return [JwtRevocation.from_json(orjson.loads(r[0])) for r in rows]
