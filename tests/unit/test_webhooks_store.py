"""Conformance suite for the WebhookStore contract (store/base.py): definitions,
delivery state and outboxes. Every backend must pass it; add one to BACKENDS."""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol

import asyncpg

from backends import Backend, PostgresBackend, SQLiteBackend
from bloomr.store.base import OutboxItem, WebhookStore
from bloomr.store.sqlite import SQLiteStore
from bloomr.store.sqlite_webhooks import SQLiteWebhookStore
from bloomr.webhook_model import Batch, DeliveryState, Webhook


class Store(WebhookStore, Protocol):
    async def close(self) -> None: ...


class SQLiteWebhooksBackend(SQLiteBackend):
    """The SQLite database with its webhook store on top."""

    async def open(self) -> Store:
        db = await super().open()
        hooks = SQLiteWebhookStore(db)
        await hooks.open()
        return _Closing(hooks, db)


class _Closing:
    """The webhook store, closing the database it shares."""

    def __init__(self, hooks: SQLiteWebhookStore, db: SQLiteStore) -> None:
        self._hooks, self._db = hooks, db

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hooks, name)

    async def close(self) -> None:
        await self._db.close()


BACKENDS: dict[str, Any] = {"sqlite": SQLiteWebhooksBackend, "postgres": PostgresBackend}


def hook(webhook_id: str = "wh_1", stream: str = "streamAAAA", channel: str = "") -> Webhook:
    created_at = "2024-03-26T15:24:57.000Z"
    return Webhook(webhook_id, stream, "http://example.com/h", "whsec_x", channel, created_at)


def items(webhook_id: str, *seqs: int, epoch: str = "") -> list[OutboxItem]:
    return [OutboxItem(webhook_id, seq, f'{{"seq":{seq}}}'.encode(), epoch) for seq in seqs]


async def seqs(store: Store, webhook_id: str, limit: int = 100) -> list[int]:
    return [row.seq for row in await store.outbox(webhook_id, limit)]


async def test_create_get_list(store: Store) -> None:
    await store.create_webhook(hook("wh_1"))
    await store.create_webhook(hook("wh_2", channel="progress"))
    await store.create_webhook(hook("wh_3", stream="streamBBBB"))
    record = await store.get_webhook("wh_2")
    assert record is not None
    assert record.webhook == hook("wh_2", channel="progress")
    assert record.state == DeliveryState() and record.pending == 0
    assert [r.webhook.id for r in await store.list_webhooks("streamAAAA")] == ["wh_1", "wh_2"]
    assert {r.webhook.id for r in await store.list_webhooks()} == {"wh_1", "wh_2", "wh_3"}
    assert await store.get_webhook("wh_nope") is None


async def test_outbox_is_ordered_limited_and_counted(store: Store) -> None:
    await store.create_webhook(hook())
    assert await store.enqueue(items("wh_1", 5, 2, 9, 3)) == 4
    rows = await store.outbox("wh_1", 100)
    assert [(row.seq, row.envelope) for row in rows] == [
        (2, b'{"seq":2}'),
        (3, b'{"seq":3}'),
        (5, b'{"seq":5}'),
        (9, b'{"seq":9}'),
    ]
    assert len({row.era for row in rows}) == 1
    assert await seqs(store, "wh_1", 2) == [2, 3]
    ranged = await store.outbox("wh_1", 100, (rows[0].era, 3, 5))
    assert [row.seq for row in ranged] == [3, 5]
    record = await store.get_webhook("wh_1")
    assert record is not None and record.pending == 4


async def test_enqueue_skips_duplicates_and_unknown_webhooks(store: Store) -> None:
    await store.create_webhook(hook())
    assert await store.enqueue(items("wh_1", 1, 2)) == 2
    assert await store.enqueue(items("wh_1", 2, 3) + items("wh_gone", 1, 2)) == 1
    assert await seqs(store, "wh_1") == [1, 2, 3]
    assert await store.outbox("wh_gone", 100) == []
    assert await store.enqueue([]) == 0


async def test_finish_batch_drops_the_outbox_up_to_it_and_saves_the_state(store: Store) -> None:
    await store.create_webhook(hook())
    await store.enqueue(items("wh_1", 1, 2, 3, 4))
    state = DeliveryState(delivered=2, last_status=200, last_delivery_ms=123)
    era = (await store.outbox("wh_1", 1))[0].era
    await store.finish_batch("wh_1", era, 2, state)
    record = await store.get_webhook("wh_1")
    assert record is not None
    assert record.state == state and record.pending == 2
    assert await seqs(store, "wh_1") == [3, 4]


async def test_state_with_a_batch_round_trips(store: Store) -> None:
    await store.create_webhook(hook())
    batch = Batch("d-1", 3, 7, 5, first_attempt_ms=1000, attempts=2, next_attempt_ms=5000)
    state = DeliveryState(delivered=10, dropped=1, dropped_batches=1, last_error="HTTP 500")
    state.batch = batch
    await store.save_state("wh_1", state)
    record = await store.get_webhook("wh_1")
    assert record is not None and record.state == state
    await store.save_state("wh_gone", state)  # no-op
    assert await store.get_webhook("wh_gone") is None


async def test_delete_takes_the_outbox_along(store: Store) -> None:
    await store.create_webhook(hook("wh_1"))
    await store.create_webhook(hook("wh_2"))
    await store.enqueue(items("wh_1", 1, 2) + items("wh_2", 1))
    assert await store.delete_webhook("wh_1")
    assert not await store.delete_webhook("wh_1")
    assert await store.outbox("wh_1", 100) == []
    assert await seqs(store, "wh_2") == [1]
    assert await store.enqueue(items("wh_1", 3)) == 0  # a late enqueue leaves nothing


async def test_everything_survives_a_reopen(backend: Backend[Store]) -> None:
    store = await backend.open()
    try:
        await store.create_webhook(hook())
        await store.enqueue(items("wh_1", 1, 2, 3))
        state = DeliveryState(batch=Batch("d-9", 1, 2, 2, first_attempt_ms=42, attempts=1))
        await store.save_state("wh_1", state)
    finally:
        await store.close()
    store = await backend.open()
    try:
        record = await store.get_webhook("wh_1")
        assert record is not None and record.state == state and record.pending == 3
        assert await seqs(store, "wh_1") == [1, 2, 3]
    finally:
        await store.close()


async def test_routes_follow_creates_and_deletes(store: Store) -> None:
    assert await store.routes("streamAAAA") == []
    await store.create_webhook(hook("wh_1"))
    await store.create_webhook(hook("wh_2", channel="progress"))
    await store.create_webhook(hook("wh_3", stream="streamBBBB"))
    assert await store.routes("streamAAAA") == [("wh_1", ""), ("wh_2", "progress")]
    await store.delete_webhook("wh_1")
    assert await store.routes("streamAAAA") == [("wh_2", "progress")]
    assert await store.routes("streamBBBB") == [("wh_3", "")]


async def test_a_history_that_starts_over_is_delivered_after_the_old_one(store: Store) -> None:
    """Issue 12: a Redis history reset (a new epoch, seqs from 1 again) neither collides
    with what still waits of the old epoch nor jumps ahead of it: the old epoch's items
    come first, then the new one's, each in seq order."""
    await store.create_webhook(hook())
    assert await store.enqueue(items("wh_1", 7, 8, 9, epoch="epochA")) == 3
    assert await store.enqueue(items("wh_1", 1, 2, epoch="epochB")) == 2
    assert await store.enqueue(items("wh_1", 10, epoch="epochA")) == 1  # late, still first
    assert await store.enqueue(items("wh_1", 2, 3, epoch="epochB")) == 1  # 2 is there
    rows = await store.outbox("wh_1", 100)
    assert [row.seq for row in rows] == [7, 8, 9, 10, 1, 2, 3]
    old, new = rows[0].era, rows[-1].era
    assert old < new and {row.era for row in rows} == {old, new}
    # a batch never spans two eras: the worker delivers the old one, then the new one
    await store.finish_batch("wh_1", old, 10, DeliveryState(delivered=4))
    assert [(row.era, row.seq) for row in await store.outbox("wh_1", 100)] == [
        (new, 1),
        (new, 2),
        (new, 3),
    ]
    assert [row.seq for row in await store.outbox("wh_1", 100, (new, 2, 3))] == [2, 3]
    # an epoch keeps its era: more of the new one goes after what waits of it
    await store.enqueue(items("wh_1", 4, epoch="epochB"))
    assert await seqs(store, "wh_1") == [1, 2, 3, 4]


# -- an outbox from before eras (key (webhook_id, seq)) -------------------------------------

OLD_ROWS = [("wh_1", 5, b'{"seq":5}'), ("wh_1", 6, b'{"seq":6}')]


def _sqlite_before_eras(path: Any) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(
            "DROP TABLE webhook_outbox; DROP TABLE outbox_eras;"
            "CREATE TABLE webhook_outbox (webhook_id TEXT NOT NULL, seq INTEGER NOT NULL,"
            " envelope BLOB NOT NULL, PRIMARY KEY (webhook_id, seq)) WITHOUT ROWID;"
            "PRAGMA user_version = 5;"
        )
        db.executemany("INSERT INTO webhook_outbox VALUES (?, ?, ?)", OLD_ROWS)
        db.commit()
    finally:
        db.close()


async def _postgres_before_eras(backend: PostgresBackend) -> None:
    conn = await asyncpg.connect(backend.schema.dsn)
    try:
        await conn.execute(f"SET search_path = {backend.schema.name}")
        await conn.execute("DROP TABLE outbox_eras")
        await conn.execute("ALTER TABLE webhook_outbox DROP CONSTRAINT webhook_outbox_pkey")
        await conn.execute("ALTER TABLE webhook_outbox DROP COLUMN era")
        await conn.execute("ALTER TABLE webhook_outbox ADD PRIMARY KEY (webhook_id, seq)")
        await conn.executemany("INSERT INTO webhook_outbox VALUES ($1, $2, $3)", OLD_ROWS)
    finally:
        await conn.close()


async def test_an_outbox_from_before_eras_is_kept_and_delivered_first(backend: Any) -> None:
    """The schema migration: what waited is era 0, before any epoch seen since, even with
    the same seqs; a batch in flight saved then (no era in its document) is era 0."""
    store = await backend.open()
    try:
        await store.create_webhook(hook())
    finally:
        await store.close()
    if isinstance(backend, PostgresBackend):
        await _postgres_before_eras(backend)
    else:
        _sqlite_before_eras(backend.path)
    store = await backend.open()
    try:
        assert await store.enqueue(items("wh_1", 6, 7, epoch="epochA")) == 2
        rows = await store.outbox("wh_1", 100)
        assert [(row.era, row.seq) for row in rows][:2] == [(0, 5), (0, 6)]
        assert [row.seq for row in rows[2:]] == [6, 7] and rows[2].era > 0
        doc = Batch("d-1", 5, 6, 2, first_attempt_ms=1).to_doc()
        del doc["era"]
        assert Batch.from_doc(doc).era == 0
        assert [row.seq for row in await store.outbox("wh_1", 10, (0, 5, 6))] == [5, 6]
    finally:
        await store.close()
