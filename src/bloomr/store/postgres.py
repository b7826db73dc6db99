"""The cluster backend for metadata: streams, tokens, webhooks (with their outboxes) and
leases in one PostgreSQL schema that every node shares.

Documents are stored as the same orjson bytes as in SQLite (bytea, not jsonb): bytes
round-trip exactly, where jsonb would reject a NUL character in a name or an env value.
Every write is one statement or one transaction, committed before the call returns."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import orjson

from ..faults import BACKEND_TIMEOUT, guarded
from ..model import Stream, Token, stream_from_json, token_from_doc, token_to_doc
from ..runner.spec import ScriptReport
from ..webhook_model import DeliveryState, Webhook, WebhookRecord
from .base import OutboxItem, OutboxRow, Routes, Span
from .postgres_revocations import PostgresJwtRevocations

_TABLES = (
    "CREATE TABLE IF NOT EXISTS streams (id text PRIMARY KEY, doc bytea NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tokens ("
    " id text PRIMARY KEY, secret_hash text NOT NULL UNIQUE, doc bytea NOT NULL)",
    # `pos` keeps creation order, which SQLite gets from its rowid
    "CREATE TABLE IF NOT EXISTS webhooks ("
    " id text PRIMARY KEY, pos bigint GENERATED ALWAYS AS IDENTITY,"
    " stream_id text NOT NULL, doc bytea NOT NULL, state bytea NOT NULL)",
    "CREATE INDEX IF NOT EXISTS webhooks_by_stream ON webhooks (stream_id, pos)",
    # the cascade makes deleting a webhook take its outbox along in the same statement;
    # `era` numbers the history epochs (a Redis history that starts over reuses seqs)
    "CREATE TABLE IF NOT EXISTS webhook_outbox ("
    " webhook_id text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,"
    " era bigint NOT NULL DEFAULT 0,"
    " seq bigint NOT NULL, envelope bytea NOT NULL, PRIMARY KEY (webhook_id, era, seq))",
    # an epoch's era, given the first time an outbox sees it: eras only grow
    "CREATE TABLE IF NOT EXISTS outbox_eras ("
    " epoch text PRIMARY KEY, era bigint GENERATED ALWAYS AS IDENTITY)",
    "CREATE TABLE IF NOT EXISTS leases ("
    " key text PRIMARY KEY, owner text NOT NULL, expires_at timestamptz NOT NULL)",
    # what the node running a script reports, for the API of every node
    "CREATE TABLE IF NOT EXISTS script_status ("
    " stream_id text PRIMARY KEY, node text NOT NULL, doc bytea NOT NULL)",
    # the cluster's generated admin key, as its sha256 only (one row)
    "CREATE TABLE IF NOT EXISTS admin_key ("
    " id int PRIMARY KEY CHECK (id = 1), key_hash text NOT NULL)",
    # JWT revocations (SPEC §7), each kept until `until` (Unix seconds), when the
    # tokens it names have expired
    "CREATE TABLE IF NOT EXISTS jwt_revocations ("
    " id text PRIMARY KEY, doc bytea NOT NULL, until double precision NOT NULL)",
    # /healthz writes here: a database that answers but cannot write is not healthy
    "CREATE TABLE IF NOT EXISTS health ("
    " id int PRIMARY KEY CHECK (id = 1), checked_at timestamptz NOT NULL)",
)
_SELECT_WEBHOOKS = (
    "SELECT w.doc, w.state, (SELECT count(*) FROM webhook_outbox o WHERE o.webhook_id = w.id) "
    "FROM webhooks w"
)
# An outbox from before eras (its key was (webhook_id, seq)): what waits there is era 0,
# delivered before anything newer.
_MIGRATE_OUTBOX = (
    "ALTER TABLE webhook_outbox ADD COLUMN era bigint NOT NULL DEFAULT 0",
    "ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_pkey",
    "ALTER TABLE webhook_outbox ADD PRIMARY KEY (webhook_id, era, seq)",
)
_HAS_ERA = (
    "SELECT true FROM information_schema.columns WHERE table_schema = $1 "
    "AND table_name = 'webhook_outbox' AND column_name = 'era'"
)
# an epoch's era, made the first time an outbox sees it (committed on its own: a node
# keeps what it read, as an epoch's era never changes)
_MAKE_ERAS = (
    "INSERT INTO outbox_eras (epoch) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT DO NOTHING"
)
_ERAS = "SELECT epoch, era FROM outbox_eras WHERE epoch = ANY($1::text[])"
_ENQUEUE = (
    "WITH added AS (INSERT INTO webhook_outbox (webhook_id, era, seq, envelope) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) "
    "ON CONFLICT DO NOTHING RETURNING 1) SELECT count(*) FROM added"
)
# One statement: ON CONFLICT makes concurrent acquires of one key queue on its row and
# each see the previous winner's write, so exactly one owner wins. now() is the
# database's clock, shared by every node.
_ACQUIRE = (
    "INSERT INTO leases AS l (key, owner, expires_at) "
    "VALUES ($1, $2, now() + make_interval(secs => $3)) "
    "ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at "
    "WHERE l.owner = excluded.owner OR l.expires_at <= now() RETURNING true"
)
_HEALTH = (
    "INSERT INTO health (id, checked_at) VALUES (1, now()) "
    "ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
)
_OUTBOX = (
    "SELECT era, seq, envelope FROM webhook_outbox WHERE webhook_id = $1 ORDER BY era, seq LIMIT $2"
)
_OUTBOX_SPAN = (
    "SELECT era, seq, envelope FROM webhook_outbox WHERE webhook_id = $1 "
    "AND era = $2 AND seq >= $3 AND seq <= $4 ORDER BY seq LIMIT $5"
)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_POOL_MIN, _POOL_MAX = 1, 8

Conn = Any  # asyncpg.Connection: asyncpg ships no types
T = TypeVar("T")


def _record(row: Sequence[Any]) -> WebhookRecord:
    webhook = Webhook.from_doc(orjson.loads(row[0]))
    return WebhookRecord(webhook, DeliveryState.from_doc(orjson.loads(row[1])), int(row[2]))


async def _enqueue(conn: Conn, items: Sequence[OutboxItem], eras: dict[str, int]) -> int:
    # KEY SHARE on the webhooks: a racing delete waits for this commit (and then
    # cascades over what it added) or wins first (and its webhook is skipped); it does
    # not block state updates.
    ids = sorted({item.webhook_id for item in items})
    sql = "SELECT id FROM webhooks WHERE id = ANY($1::text[]) ORDER BY id FOR KEY SHARE"
    alive = {row[0] for row in await conn.fetch(sql, ids)}
    kept = [i for i in items if i.webhook_id in alive]
    columns = ([i.webhook_id for i in kept], [eras[i.epoch] for i in kept], [i.seq for i in kept])
    return int(await conn.fetchval(_ENQUEUE, *columns, [i.envelope for i in kept]))


async def _migrate(conn: Conn, schema: str) -> None:
    if not await conn.fetchval(_HAS_ERA, schema):
        for statement in _MIGRATE_OUTBOX:
            await conn.execute(statement)


@guarded
class PostgresStore(PostgresJwtRevocations):
    """Implements MetadataStore, WebhookStore, LeaseStore and ScriptStatusStore in the
    schema `schema`, and keeps the cluster's admin key hash."""

    outbox_with_history = False  # the history is in Redis: the outbox writer enqueues

    def __init__(self, dsn: str, schema: str = "bloomr") -> None:
        if _SCHEMA_NAME.fullmatch(schema) is None:  # it is spliced into DDL and settings
            raise ValueError(f"invalid schema name {schema!r}: use [a-z_][a-z0-9_]*")
        self._dsn, self._schema = dsn, schema
        self._pool: Any = None
        self._eras: dict[str, int] = {}  # epoch -> era of the webhook outboxes

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=_POOL_MIN,
            max_size=_POOL_MAX,
            server_settings={"search_path": self._schema},
            # a database that is down or frozen is answered `unavailable` in seconds
            timeout=BACKEND_TIMEOUT,
            command_timeout=BACKEND_TIMEOUT,
        )
        try:
            await self._transaction(self._create_tables)
        except BaseException:
            await self.close()
            raise

    async def _create_tables(self, conn: Conn) -> None:
        """Idempotent DDL. Nodes starting at once would race on the catalog (CREATE ...
        IF NOT EXISTS is not safe against a concurrent create), so they take turns."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", self._lock_id)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
        for statement in _TABLES:
            await conn.execute(statement)
        await _migrate(conn, self._schema)

    @property
    def _lock_id(self) -> str:
        return f"bloomr.schema:{self._schema}"

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> Any:
        assert self._pool is not None, "store is not open"
        return self._pool

    # Every call is shielded: it finishes even when its caller is cancelled (a client
    # went away), so a cancellation never lands between a write and its commit or
    # leaves a pooled connection mid-query. Waiting for a pooled connection is bounded
    # too: with the database frozen, every connection is stuck in a query.

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._on_connection(lambda conn: conn.fetch(sql, *args)))

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        return await self._on_connection(lambda conn: conn.fetchval(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> None:
        await self._on_connection(lambda conn: conn.execute(sql, *args))

    async def _on_connection(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        return await asyncio.shield(self._with_connection(work))

    async def _with_connection(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        async with self.pool.acquire(timeout=BACKEND_TIMEOUT) as conn:
            return await work(conn)

    async def _transaction(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        return await asyncio.shield(self._in_transaction(work))

    async def _in_transaction(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        async with self.pool.acquire(timeout=BACKEND_TIMEOUT) as conn, conn.transaction():
            return await work(conn)

    # -- streams and tokens -----------------------------------------------------------

    async def create_stream(self, stream: Stream) -> None:
        doc = orjson.dumps(stream.to_json())
        await self._execute("INSERT INTO streams (id, doc) VALUES ($1, $2)", stream.id, doc)

    async def get_stream(self, stream_id: str) -> Stream | None:
        doc = await self._fetchval("SELECT doc FROM streams WHERE id = $1", stream_id)
        return None if doc is None else stream_from_json(orjson.loads(doc))

    async def list_streams(self) -> list[Stream]:
        rows = await self._fetch("SELECT doc FROM streams ORDER BY id")
        streams = [stream_from_json(orjson.loads(r[0])) for r in rows]
        return sorted(streams, key=lambda s: s.created_at)

    async def update_stream(self, stream: Stream) -> None:
        doc = orjson.dumps(stream.to_json())
        await self._execute("UPDATE streams SET doc = $1 WHERE id = $2", doc, stream.id)

    async def delete_stream(self, stream_id: str) -> bool:
        sql = "DELETE FROM streams WHERE id = $1 RETURNING true"
        return await self._fetchval(sql, stream_id) is not None

    async def create_token(self, token: Token) -> None:
        doc = orjson.dumps(token_to_doc(token))
        sql = "INSERT INTO tokens (id, secret_hash, doc) VALUES ($1, $2, $3)"
        await self._execute(sql, token.id, token.secret_hash, doc)

    async def get_token_by_hash(self, secret_hash: str) -> Token | None:
        doc = await self._fetchval("SELECT doc FROM tokens WHERE secret_hash = $1", secret_hash)
        return None if doc is None else token_from_doc(orjson.loads(doc))

    async def list_tokens(self) -> list[Token]:
        rows = await self._fetch("SELECT doc FROM tokens ORDER BY id")
        tokens = [token_from_doc(orjson.loads(r[0])) for r in rows]
        return sorted(tokens, key=lambda t: t.created_at)

    async def delete_token(self, token_id: str) -> Token | None:
        doc = await self._fetchval("DELETE FROM tokens WHERE id = $1 RETURNING doc", token_id)
        return None if doc is None else token_from_doc(orjson.loads(doc))

    # -- webhooks ---------------------------------------------------------------------
    # Lock order, against deadlocks between nodes: a webhook's row, then its outbox.

    async def create_webhook(self, webhook: Webhook) -> None:
        doc, state = orjson.dumps(webhook.to_doc()), orjson.dumps(DeliveryState().to_doc())
        sql = "INSERT INTO webhooks (id, stream_id, doc, state) VALUES ($1, $2, $3, $4)"
        await self._execute(sql, webhook.id, webhook.stream, doc, state)

    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        rows = await self._fetch(f"{_SELECT_WEBHOOKS} WHERE w.id = $1", webhook_id)
        return _record(rows[0]) if rows else None

    async def list_webhooks(self, stream_id: str | None = None) -> list[WebhookRecord]:
        if stream_id is None:
            rows = await self._fetch(f"{_SELECT_WEBHOOKS} ORDER BY w.pos")
        else:
            sql = f"{_SELECT_WEBHOOKS} WHERE w.stream_id = $1 ORDER BY w.pos"
            rows = await self._fetch(sql, stream_id)
        return [_record(r) for r in rows]

    async def delete_webhook(self, webhook_id: str) -> bool:
        sql = "DELETE FROM webhooks WHERE id = $1 RETURNING true"  # the outbox cascades
        return await self._fetchval(sql, webhook_id) is not None

    async def routes(self, stream_id: str) -> list[tuple[str, str]]:
        # read every time: webhooks are made and deleted on every node
        sql = "SELECT doc FROM webhooks WHERE stream_id = $1 ORDER BY pos"
        hooks = [Webhook.from_doc(orjson.loads(r[0])) for r in await self._fetch(sql, stream_id)]
        return [(hook.id, hook.channel) for hook in hooks]

    def known_routes(self, stream_id: str) -> Routes | None:
        return None  # webhooks are made and deleted on every node

    async def enqueue(self, items: Sequence[OutboxItem]) -> int:
        if not items:
            return 0
        new = sorted({item.epoch for item in items} - self._eras.keys())
        if new:  # the insert's own snapshot would not see what another node made
            await self._execute(_MAKE_ERAS, new)
            rows = await self._fetch(_ERAS, new)
            self._eras.update({str(r[0]): int(r[1]) for r in rows})
        return await self._transaction(lambda conn: _enqueue(conn, items, self._eras))

    async def outbox(
        self, webhook_id: str, limit: int, span: Span | None = None
    ) -> list[OutboxRow]:
        if span is None:
            rows = await self._fetch(_OUTBOX, webhook_id, limit)
        else:
            rows = await self._fetch(_OUTBOX_SPAN, webhook_id, *span, limit)
        return [OutboxRow(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def save_state(self, webhook_id: str, state: DeliveryState) -> None:
        sql = "UPDATE webhooks SET state = $1 WHERE id = $2"
        await self._execute(sql, orjson.dumps(state.to_doc()), webhook_id)

    async def finish_batch(
        self, webhook_id: str, era: int, last_seq: int, state: DeliveryState
    ) -> None:
        async def work(conn: Conn) -> None:
            await conn.execute(
                "UPDATE webhooks SET state = $1 WHERE id = $2",
                orjson.dumps(state.to_doc()),
                webhook_id,
            )
            await conn.execute(
                "DELETE FROM webhook_outbox WHERE webhook_id = $1 AND era = $2 AND seq <= $3",
                webhook_id,
                era,
                last_seq,
            )

        await self._transaction(work)

    # -- leases -----------------------------------------------------------------------

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        return await self._fetchval(_ACQUIRE, key, owner, float(ttl_s)) is not None

    async def release(self, key: str, owner: str) -> None:
        await self._execute("DELETE FROM leases WHERE key = $1 AND owner = $2", key, owner)

    async def holders(self, prefix: str) -> dict[str, str]:
        sql = (
            "SELECT key, owner FROM leases "
            "WHERE starts_with(key, $1) AND expires_at > now() ORDER BY key"
        )
        return {str(r[0]): str(r[1]) for r in await self._fetch(sql, prefix)}

    # -- script status ------------------------------------------------------------------

    async def save_script_status(self, stream_id: str, report: ScriptReport) -> None:
        sql = (
            "INSERT INTO script_status (stream_id, node, doc) VALUES ($1, $2, $3) "
            "ON CONFLICT (stream_id) DO UPDATE SET node = excluded.node, doc = excluded.doc"
        )
        doc = orjson.dumps(report.to_json())
        await self._execute(sql, stream_id, report.node or "", doc)

    async def script_statuses(self, stream_ids: Sequence[str]) -> dict[str, ScriptReport]:
        sql = "SELECT stream_id, doc FROM script_status WHERE stream_id = ANY($1::text[])"
        rows = await self._fetch(sql, list(stream_ids))
        return {str(r[0]): ScriptReport.from_json(orjson.loads(r[1])) for r in rows}

    async def delete_script_status(self, stream_id: str) -> None:
        await self._execute("DELETE FROM script_status WHERE stream_id = $1", stream_id)

    # -- the admin key ----------------------------------------------------------------

    async def claim_admin_key_hash(self, key_hash: str) -> str:
        """The cluster's admin key hash: `key_hash` if no node stored one before (this
        call stored it), else the one stored first. Safe against nodes racing."""

        async def work(conn: Conn) -> str:
            await conn.execute(
                "INSERT INTO admin_key (id, key_hash) VALUES (1, $1) ON CONFLICT DO NOTHING",
                key_hash,
            )
            return str(await conn.fetchval("SELECT key_hash FROM admin_key WHERE id = 1"))

        return await self._transaction(work)

    async def check_writable(self) -> None:
        """A tiny write, committed (what /healthz asks)."""
        await self._execute(_HEALTH)
