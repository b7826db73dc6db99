"""Webhooks in the embedded SQLite database, on the connections of a SQLiteStore (one
file, one writer): definitions, delivery state and the per-webhook outbox."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..faults import guarded
from ..webhook_model import DeliveryState, Webhook, WebhookRecord
from .base import OutboxItem
from .sqlite import SQLiteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, doc BLOB NOT NULL, state BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS webhooks_by_stream ON webhooks (stream_id);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    webhook_id TEXT NOT NULL, seq INTEGER NOT NULL, envelope BLOB NOT NULL,
    PRIMARY KEY (webhook_id, seq)) WITHOUT ROWID;
"""
_SELECT = (
    "SELECT w.doc, w.state, (SELECT count(*) FROM webhook_outbox o WHERE o.webhook_id = w.id) "
    "FROM webhooks w"
)


def _record(row: tuple[Any, ...]) -> WebhookRecord:
    webhook = Webhook.from_doc(orjson.loads(row[0]))
    return WebhookRecord(webhook, DeliveryState.from_doc(orjson.loads(row[1])), int(row[2]))


@guarded
class SQLiteWebhookStore:
    """Implements WebhookStore next to the history in the same SQLite file."""

    def __init__(self, db: SQLiteStore) -> None:
        self._db = db
        # routes by stream, exact because every write of the table goes through this
        # object (one process owns the file): the outbox writer reads them per publish
        self._routes: dict[str, list[tuple[str, str]]] = {}
        self._generation = 0  # bumped by every write: a read that raced one is not kept

    async def open(self) -> None:
        """Create the tables (after `db.open()`)."""
        await self._db.writer.executescript(_SCHEMA)

    async def create_webhook(self, webhook: Webhook) -> None:
        doc, state = orjson.dumps(webhook.to_doc()), orjson.dumps(DeliveryState().to_doc())
        sql = "INSERT INTO webhooks (id, stream_id, doc, state) VALUES (?, ?, ?, ?)"
        self._changed()
        try:
            await self._db._write(sql, (webhook.id, webhook.stream, doc, state))
        finally:
            self._changed()

    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None:
        rows = await self._db._read(f"{_SELECT} WHERE w.id = ?", (webhook_id,))
        return _record(rows[0]) if rows else None

    async def list_webhooks(self, stream_id: str | None = None) -> list[WebhookRecord]:
        if stream_id is None:
            rows = await self._db._read(f"{_SELECT} ORDER BY w.rowid")
        else:
            sql = f"{_SELECT} WHERE w.stream_id = ? ORDER BY w.rowid"
            rows = await self._db._read(sql, (stream_id,))
        return [_record(r) for r in rows]

    async def delete_webhook(self, webhook_id: str) -> bool:
        self._changed()
        try:
            async with self._db._transaction() as conn:
                await conn.execute("DELETE FROM webhook_outbox WHERE webhook_id = ?", (webhook_id,))
                cursor = await conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
                return int(cursor.rowcount) > 0
        finally:
            self._changed()

    async def routes(self, stream_id: str) -> list[tuple[str, str]]:
        routes = self._routes.get(stream_id)
        if routes is None:
            generation = self._generation
            sql = "SELECT doc FROM webhooks WHERE stream_id = ? ORDER BY rowid"
            rows = await self._db._read(sql, (stream_id,))
            hooks = [Webhook.from_doc(orjson.loads(row[0])) for row in rows]
            routes = [(hook.id, hook.channel) for hook in hooks]
            if generation == self._generation:
                self._routes[stream_id] = routes
        return list(routes)

    def _changed(self) -> None:
        self._generation += 1
        self._routes.clear()  # webhooks change seldom: forgetting every stream is simplest

    async def enqueue(self, items: Sequence[OutboxItem]) -> int:
        if not items:
            return 0
        ids = sorted({item.webhook_id for item in items})
        async with self._db._transaction() as conn:
            marks = ",".join("?" * len(ids))
            sql = f"SELECT id FROM webhooks WHERE id IN ({marks})"
            alive = {row[0] for row in await conn.execute_fetchall(sql, ids)}
            rows = [(i.webhook_id, i.seq, i.envelope) for i in items if i.webhook_id in alive]
            before = conn.total_changes
            await conn.executemany(
                "INSERT OR IGNORE INTO webhook_outbox (webhook_id, seq, envelope) VALUES (?, ?, ?)",
                rows,
            )
            return int(conn.total_changes - before)

    async def outbox(
        self, webhook_id: str, limit: int, first_seq: int = 0, last_seq: int | None = None
    ) -> list[tuple[int, bytes]]:
        sql = (
            "SELECT seq, envelope FROM webhook_outbox WHERE webhook_id = ? AND seq >= ? "
            "AND seq <= ? ORDER BY seq LIMIT ?"
        )
        top = last_seq if last_seq is not None else 2**63 - 1
        rows = await self._db._read(sql, (webhook_id, first_seq, top, limit))
        return [(int(r[0]), bytes(r[1])) for r in rows]

    async def save_state(self, webhook_id: str, state: DeliveryState) -> None:
        sql = "UPDATE webhooks SET state = ? WHERE id = ?"
        await self._db._write(sql, (orjson.dumps(state.to_doc()), webhook_id))

    async def finish_batch(self, webhook_id: str, last_seq: int, state: DeliveryState) -> None:
        async with self._db._transaction() as conn:
            await conn.execute(
                "DELETE FROM webhook_outbox WHERE webhook_id = ? AND seq <= ?",
                (webhook_id, last_seq),
            )
            await conn.execute(
                "UPDATE webhooks SET state = ? WHERE id = ?",
                (orjson.dumps(state.to_doc()), webhook_id),
            )
