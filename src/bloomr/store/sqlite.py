"""The embedded backend: one SQLite file holds metadata (streams, tokens) and history."""

from __future__ import annotations

import time

import orjson

from ..faults import guarded
from ..jwt_tokens.revocations import JwtRevocation
from ..model import Stream, Token, stream_from_json, token_from_doc, token_to_doc
from .sqlite_db import _run_to_completion
from .sqlite_history import SQLiteHistory


@guarded
class SQLiteStore(SQLiteHistory):
    """Implements both MetadataStore and HistoryStore: the metadata on top of the
    history, in one database."""

    @_run_to_completion
    async def create_stream(self, stream: Stream) -> None:
        doc = orjson.dumps(stream.to_json())
        await self._write("INSERT INTO streams (id, doc) VALUES (?, ?)", (stream.id, doc))

    @_run_to_completion
    async def get_stream(self, stream_id: str) -> Stream | None:
        rows = await self._read("SELECT doc FROM streams WHERE id = ?", (stream_id,))
        return stream_from_json(orjson.loads(rows[0][0])) if rows else None

    @_run_to_completion
    async def list_streams(self) -> list[Stream]:
        rows = await self._read("SELECT doc FROM streams ORDER BY id")
        streams = [stream_from_json(orjson.loads(r[0])) for r in rows]
        return sorted(streams, key=lambda s: s.created_at)

    @_run_to_completion
    async def update_stream(self, stream: Stream) -> None:
        doc = orjson.dumps(stream.to_json())
        await self._write("UPDATE streams SET doc = ? WHERE id = ?", (doc, stream.id))

    @_run_to_completion
    async def delete_stream(self, stream_id: str) -> bool:
        return await self._write("DELETE FROM streams WHERE id = ?", (stream_id,)) > 0

    @_run_to_completion
    async def create_token(self, token: Token) -> None:
        doc = orjson.dumps(token_to_doc(token))
        sql = "INSERT INTO tokens (id, secret_hash, doc) VALUES (?, ?, ?)"
        await self._write(sql, (token.id, token.secret_hash, doc))

    @_run_to_completion
    async def get_token_by_hash(self, secret_hash: str) -> Token | None:
        rows = await self._read("SELECT doc FROM tokens WHERE secret_hash = ?", (secret_hash,))
        return token_from_doc(orjson.loads(rows[0][0])) if rows else None

    @_run_to_completion
    async def list_tokens(self) -> list[Token]:
        rows = await self._read("SELECT doc FROM tokens")
        tokens = [token_from_doc(orjson.loads(r[0])) for r in rows]
        return sorted(tokens, key=lambda t: t.created_at)

    @_run_to_completion
    async def delete_token(self, token_id: str) -> Token | None:
        async with self._transaction() as conn:
            rows = await conn.execute_fetchall("SELECT doc FROM tokens WHERE id = ?", (token_id,))
            if not rows:
                return None
            await conn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            return token_from_doc(orjson.loads(next(iter(rows))[0]))

    @_run_to_completion
    async def save_jwt_revocation(self, rule: JwtRevocation) -> None:
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM jwt_revocations WHERE until <= ?", (time.time(),))
            await conn.execute(
                "INSERT OR REPLACE INTO jwt_revocations (id, doc, until) VALUES (?, ?, ?)",
                (rule.id, orjson.dumps(rule.to_json()), rule.until),
            )

    @_run_to_completion
    async def jwt_revocations(self) -> list[JwtRevocation]:
        sql = "SELECT doc FROM jwt_revocations WHERE until > ?"
        rows = await self._read(sql, (time.time(),))
        return [JwtRevocation.from_json(orjson.loads(r[0])) for r in rows]
