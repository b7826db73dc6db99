"""Webhooks in the embedded SQLite database, on the connections of a SQLiteStore (one
file, one writer): definitions, delivery state and the per-webhook outbox, which the
history's append writes in its own transaction (`sqlite_outbox.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..faults import guarded
from ..webhook_model import DeliveryState, Webhook, WebhookRecord
from .base import OutboxItem, OutboxRow, Routes, Span
from .sqlite import SQLiteStore
from .sqlite_outbox import INSERT_ERA, INSERT_ITEM, SELECT_ERA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id TEXT PRIMARY KEY, stream_id TEXT NOT NULL, doc BLOB NOT NULL, state BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS webhooks_by_stream ON webhooks (stream_id);
"""  # webhook_outbox and outbox_eras: made by the database's migrations (sqlite_db.py)
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

    outbox_with_history = True

    def __init__(self, db: SQLiteStore) -> None:
        self._db = db
        # the routes of every stream that has webhooks, exact because every write of the
        # table goes through this object (one process owns the file); the history's
        # appends read it (on their thread) to write each publish's outbox items
        self._routes: dict[str, list[tuple[str, str]]] = {}
        db.outbox_routes = self._routes

    async def open(self) -> None:
        """Create the tables (after `db.open()`) and read the routes."""
        await self._db.writer.executescript(_SCHEMA)
        await self._load_routes()

    async def _load_routes(self) -> None:
        rows = await self._db._read("SELECT doc FROM webhooks ORDER BY rowid")
        routes: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            hook = Webhook.from_doc(orjson.loads(row[0]))
            routes.setdefault(hook.stream, []).append((hook.id, hook.channel))
        self._routes.clear()
        self._routes.update(routes)

    def _route(self, stream_id: str, routes: list[tuple[str, str]]) -> None:
        """Replace a stream's routes with one assignment (an append on another thread
        reads them whole, old or new)."""
        if routes:
            self._routes[stream_id] = routes
        else:
            self._routes.pop(stream_id, None)

    async def create_webhook(self, webhook: Webhook) -> None:
        doc, state = orjson.dumps(webhook.to_doc()), orjson.dumps(DeliveryState().to_doc())
        sql = "INSERT INTO webhooks (id, stream_id, doc, state) VALUES (?, ?, ?, ?)"
        await self._db._write(sql, (webhook.id, webhook.stream, doc, state))
        # publishes stored from now on are in its outbox
        routes = [*self._routes.get(webhook.stream, ()), (webhook.id, webhook.channel)]
        self._route(webhook.stream, routes)

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
        # no append adds to its outbox once its route is gone; the transaction (after
        # any append under way, one writer) empties the outbox
        for stream_id, routes in list(self._routes.items()):
            self._route(stream_id, [r for r in routes if r[0] != webhook_id])
        try:
            async with self._db._transaction() as conn:
                await conn.execute("DELETE FROM webhook_outbox WHERE webhook_id = ?", (webhook_id,))
                cursor = await conn.execute("DELETE FROM webhooks WHERE id = ?", (webhook_id,))
                return int(cursor.rowcount) > 0
        except BaseException:
            await self._load_routes()  # it may still be there
            raise

    async def routes(self, stream_id: str) -> list[tuple[str, str]]:
        return list(self._routes.get(stream_id, ()))

    def known_routes(self, stream_id: str) -> Routes:
        return self._routes.get(stream_id, ())

    async def enqueue(self, items: Sequence[OutboxItem]) -> int:
        if not items:
            return 0
        ids = sorted({item.webhook_id for item in items})
        async with self._db._transaction() as conn:
            marks = ",".join("?" * len(ids))
            sql = f"SELECT id FROM webhooks WHERE id IN ({marks})"
            alive = {row[0] for row in await conn.execute_fetchall(sql, ids)}
            eras: dict[str, int] = {}
            for epoch in sorted({item.epoch for item in items}):
                await conn.execute(INSERT_ERA, (epoch,))
                found = await conn.execute_fetchall(SELECT_ERA, (epoch,))
                eras[epoch] = int(next(iter(found))[0])
            rows = [
                (i.webhook_id, eras[i.epoch], i.seq, i.envelope)
                for i in items
                if i.webhook_id in alive
            ]
            before = conn.total_changes
            await conn.executemany(INSERT_ITEM, rows)
            return int(conn.total_changes - before)

    async def outbox(
        self, webhook_id: str, limit: int, span: Span | None = None
    ) -> list[OutboxRow]:
        if span is None:
            sql = (
                "SELECT era, seq, envelope FROM webhook_outbox WHERE webhook_id = ? "
                "ORDER BY era, seq LIMIT ?"
            )
            rows = await self._db._read(sql, (webhook_id, limit))
        else:
            sql = (
                "SELECT era, seq, envelope FROM webhook_outbox WHERE webhook_id = ? AND era = ? "
                "AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"
            )
            rows = await self._db._read(sql, (webhook_id, *span, limit))
        return [OutboxRow(int(r[0]), int(r[1]), bytes(r[2])) for r in rows]

    async def save_state(self, webhook_id: str, state: DeliveryState) -> None:
        sql = "UPDATE webhooks SET state = ? WHERE id = ?"
        await self._db._write(sql, (orjson.dumps(state.to_doc()), webhook_id))

    async def finish_batch(
        self, webhook_id: str, era: int, last_seq: int, state: DeliveryState
    ) -> None:
        async with self._db._transaction() as conn:
            await conn.execute(
                "DELETE FROM webhook_outbox WHERE webhook_id = ? AND era = ? AND seq <= ?",
                (webhook_id, era, last_seq),
            )
            await conn.execute(
                "UPDATE webhooks SET state = ? WHERE id = ?",
                (orjson.dumps(state.to_doc()), webhook_id),
            )
