"""The outbox writer (webhooks/outbox.py) of a cluster, on a real SQLite webhook store
standing in for PostgreSQL (its history does not write the outboxes), whose database
refuses outbox writes for a while (a trigger added from another connection): nothing
is dropped, a publish is answered only once its items landed, and past its bound the
writer pushes back until the store takes writes. A stream without webhooks is never
held up once its routes are known."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bloomr.model import Message
from bloomr.store.base import Routes
from bloomr.store.sqlite import SQLiteStore
from bloomr.store.sqlite_webhooks import SQLiteWebhookStore
from bloomr.webhook_model import Webhook
from bloomr.webhooks.outbox import OutboxWriter

STREAM = "streamAAAA"
OUTAGE = (
    "CREATE TRIGGER outage BEFORE INSERT ON webhook_outbox"
    " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
)


def messages(*seqs: int) -> list[Message]:
    return [Message(f"id{s}", STREAM, "", 1_700_000_000_000 + s, s, orjson.dumps(s)) for s in seqs]


class Wakes:
    def __init__(self) -> None:
        self.webhooks: set[str] = set()

    async def written(self, webhook_ids: set[str], stream_ids: set[str]) -> None:
        self.webhooks |= webhook_ids

    async def dropping(self, stream_id: str) -> None:
        pass


class WrittenAfter(SQLiteWebhookStore):
    """The store as a cluster's is: the history does not write the outboxes (the
    writer does), and routes are known only by reading them."""

    outbox_with_history = False

    def known_routes(self, stream_id: str) -> Routes | None:
        return None


@pytest.fixture
async def hooks(tmp_path: Path) -> AsyncIterator[tuple[SQLiteWebhookStore, Path]]:
    path = tmp_path / "bloomr.db"
    db = SQLiteStore(path)
    await db.open()
    store = WrittenAfter(db)
    await store.open()
    created = "2024-03-26T15:24:57.000Z"
    await store.create_webhook(Webhook("wh_1", STREAM, "http://x/h", "whsec_x", "", created))
    try:
        yield store, path
    finally:
        await db.close()


async def outbox_seqs(store: SQLiteWebhookStore) -> list[int]:
    return [row.seq for row in await store.outbox("wh_1", 1000)]


async def test_writes_wait_out_an_outage_and_push_back_past_the_bound(
    hooks: tuple[SQLiteWebhookStore, Path],
) -> None:
    store, path = hooks
    wakes = Wakes()
    one = sum(m.size for m in messages(1))
    writer = OutboxWriter(store, wakes.written, wakes.dropping, max_pending=5 * one)
    writer.start()
    fault = sqlite3.connect(path, timeout=10)
    try:
        fault.execute(OUTAGE)
        fault.commit()
        landed = [writer.published(STREAM, "epochA", messages(seq)) for seq in range(1, 6)]
        assert not writer.pushing_back()  # at the bound, not past it
        landed.append(writer.published(STREAM, "epochA", messages(6)))
        assert writer.pushing_back()
        room = asyncio.create_task(writer.room())
        await asyncio.sleep(1.0)  # the outage: several failed tries
        assert not room.done() and await outbox_seqs(store) == []
        assert all(f is not None and not f.done() for f in landed)  # nothing answered
    finally:
        fault.execute("DROP TRIGGER IF EXISTS outage")
        fault.commit()
        fault.close()
    await asyncio.wait_for(room, 5)
    assert not writer.pushing_back()
    await asyncio.wait_for(asyncio.gather(*[f for f in landed if f is not None]), 5)
    await writer.drain(5)
    assert await outbox_seqs(store) == [1, 2, 3, 4, 5, 6]
    assert wakes.webhooks == {"wh_1"}


async def test_a_stream_without_webhooks_is_not_held_up(
    hooks: tuple[SQLiteWebhookStore, Path],
) -> None:
    """Its routes unknown, a publish waits for them to be read; known (for the routes
    cache's ttl, refreshed in the background), publishes go through at once, and a
    webhook made since is seen once the cache is told (`webhooks_changed`)."""
    store, _ = hooks
    wakes = Wakes()
    writer = OutboxWriter(store, wakes.written, wakes.dropping)
    writer.start()
    try:
        first = writer.published("streamBBBB", "epochA", messages(1))
        assert first is not None
        await asyncio.wait_for(first, 5)
        assert writer.published("streamBBBB", "epochA", messages(2)) is None
        # a channel no webhook of the stream wants is not held up either
        assert await writer.routes.load(STREAM) == [("wh_1", "")]
        other = [Message("idx", STREAM, "other", 1, 9, b"1")]
        assert writer.published(STREAM, "epochA", other) is None
        created = "2024-03-26T15:24:57.000Z"
        await store.create_webhook(Webhook("wh_2", "streamBBBB", "http://x/h", "w", "", created))
        writer.routes.forget("streamBBBB")
        landed = writer.published("streamBBBB", "epochA", messages(3))
        assert landed is not None
        await asyncio.wait_for(landed, 5)
        assert [row.seq for row in await store.outbox("wh_2", 10)] == [3]
    finally:
        await writer.drain(5)
