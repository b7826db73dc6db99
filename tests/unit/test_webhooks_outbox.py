"""The outbox writer (webhooks/outbox.py) on a real SQLite webhook store whose database
refuses outbox writes for a while (a trigger added from another connection): nothing
is dropped, and past its bound the writer pushes back until the store takes writes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bloomr.model import Message
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


@pytest.fixture
async def hooks(tmp_path: Path) -> AsyncIterator[tuple[SQLiteWebhookStore, Path]]:
    path = tmp_path / "bloomr.db"
    db = SQLiteStore(path)
    await db.open()
    store = SQLiteWebhookStore(db)
    await store.open()
    created = "2024-03-26T15:24:57.000Z"
    await store.create_webhook(Webhook("wh_1", STREAM, "http://x/h", "whsec_x", "", created))
    try:
        yield store, path
    finally:
        await db.close()


async def outbox_seqs(store: SQLiteWebhookStore) -> list[int]:
    return [seq for seq, _ in await store.outbox("wh_1", 1000)]


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
        for seq in range(1, 6):
            writer.published(STREAM, messages(seq))
        assert not writer.pushing_back()  # at the bound, not past it
        writer.published(STREAM, messages(6))
        assert writer.pushing_back()
        room = asyncio.create_task(writer.room())
        await asyncio.sleep(1.0)  # the outage: several failed tries
        assert not room.done() and await outbox_seqs(store) == []
    finally:
        fault.execute("DROP TRIGGER IF EXISTS outage")
        fault.commit()
        fault.close()
    await asyncio.wait_for(room, 5)
    assert not writer.pushing_back()
    await writer.drain(5)
    assert await outbox_seqs(store) == [1, 2, 3, 4, 5, 6]
    assert wakes.webhooks == {"wh_1"}
