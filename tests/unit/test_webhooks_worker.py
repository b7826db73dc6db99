"""The delivery worker against the real SQLite store, with httpx's MockTransport in
place of the receiver: batches, retries, drops, and the address check at delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bloomr.model import now_ms
from bloomr.store.base import OutboxItem
from bloomr.store.sqlite import SQLiteStore
from bloomr.store.sqlite_webhooks import SQLiteWebhookStore
from bloomr.webhook_model import DeliveryState, Webhook
from bloomr.webhooks.policy import RetryPolicy
from bloomr.webhooks.signing import verify
from bloomr.webhooks.worker import DeliveryWorker, Sender

FAST = RetryPolicy(first_delay=0.01, max_delay=0.02, retry_for=60.0, jitter=0.0)
SECRET = "whsec_unit"


@dataclass
class Receiver:
    """Records requests; answers with the next status of `statuses` (200 when empty)."""

    statuses: list[int] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        self.changed.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return httpx.Response(status, text="nope" if status >= 300 else "")

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(5):
            while len(self.requests) < n:
                self.changed.clear()
                await self.changed.wait()

    def seqs(self) -> list[list[int]]:
        return [[m["data"] for m in orjson.loads(r.content)["messages"]] for r in self.requests]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteWebhookStore]:
    db = SQLiteStore(tmp_path / "bloomr.db")
    await db.open()
    hooks = SQLiteWebhookStore(db)
    await hooks.open()
    try:
        yield hooks
    finally:
        await db.close()


Run = Callable[..., Awaitable[DeliveryWorker]]
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@pytest.fixture
async def run(store: SQLiteWebhookStore) -> AsyncIterator[Run]:
    """run(receiver, url=..., allow_private=..., resolver=..., policy=...) -> a started
    worker for a new webhook, stopped at the end."""
    workers: list[DeliveryWorker] = []

    async def make(receiver: Handler, url: str = "http://127.0.0.1:9/hook", **kw: Any) -> Any:
        webhook = Webhook("wh_unit", "streamAAAA", url, SECRET)
        await store.create_webhook(webhook)

        def client() -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.MockTransport(receiver))

        sender = Sender(store, client, kw.pop("allow_private", True), kw.pop("policy", FAST))
        for name, value in kw.items():
            setattr(sender, name, value)
        worker = DeliveryWorker(webhook, DeliveryState(), sender)
        workers.append(worker)
        worker.start()
        return worker

    yield make
    for worker in workers:
        await worker.stop()


async def put(
    store: SQLiteWebhookStore, worker: DeliveryWorker, *seqs: int, epoch: str = ""
) -> None:
    envelopes = [OutboxItem("wh_unit", s, orjson.dumps({"data": s}), epoch) for s in seqs]
    await store.enqueue(envelopes)
    worker.wake()


async def settled(store: SQLiteWebhookStore) -> DeliveryState:
    """The stored state once the outbox is empty and no batch is in flight."""
    async with asyncio.timeout(5):
        while True:
            record = await store.get_webhook("wh_unit")
            assert record is not None
            if record.pending == 0 and record.state.batch is None:
                return record.state
            await asyncio.sleep(0.01)


async def test_one_message_one_signed_request(store: SQLiteWebhookStore, run: Run) -> None:
    receiver = Receiver()
    worker = await run(receiver)
    await put(store, worker, 1)
    await receiver.wait_for(1)
    request = receiver.requests[0]
    assert request.method == "POST" and str(request.url) == "http://127.0.0.1:9/hook"
    assert request.content == b'{"messages":[{"data":1}]}'
    assert request.headers["content-type"] == "application/json"
    timestamp = request.headers["x-bloomr-timestamp"]
    assert verify(SECRET, timestamp, request.content, request.headers["x-bloomr-signature"])
    state = await settled(store)
    assert state.delivered == 1 and state.last_status == 200 and state.last_error is None
    assert state.last_delivery_ms is not None


async def test_a_backlog_goes_in_batches_of_100_in_order(
    store: SQLiteWebhookStore, run: Run
) -> None:
    receiver = Receiver()
    worker = await run(receiver)
    await put(store, worker, *range(1, 251))
    await receiver.wait_for(3)
    assert receiver.seqs() == [list(range(1, 101)), list(range(101, 201)), list(range(201, 251))]
    assert len({r.headers["x-bloomr-delivery"] for r in receiver.requests}) == 3
    assert (await settled(store)).delivered == 250


async def test_a_history_reset_is_delivered_after_what_waited_of_the_old_epoch(
    store: SQLiteWebhookStore, run: Run
) -> None:
    """Issue 12: items of epoch A wait (the receiver is failing); the history starts over
    in epoch B with seqs from 1 again. Nothing collides, nothing is lost: A's items
    first, in seq order, then B's, never one batch across the two."""
    receiver = Receiver(statuses=[500])
    worker = await run(receiver)
    await put(store, worker, 7, 8, 9, epoch="epochA")
    await receiver.wait_for(1)  # [7, 8, 9] failed: it waits for its retry
    await put(store, worker, 1, 2, 3, epoch="epochB")
    await put(store, worker, 10, epoch="epochA")  # late, yet before B's
    await put(store, worker, 4, epoch="epochB")
    state = await settled(store)
    assert receiver.seqs()[:2] == [[7, 8, 9], [7, 8, 9]]  # the retry: the same batch
    delivered = [seq for batch in receiver.seqs()[1:] for seq in batch]
    assert delivered == [7, 8, 9, 10, 1, 2, 3, 4]
    assert state.delivered == 8 and state.dropped == 0


async def test_a_failed_batch_is_retried_same_id_same_body(
    store: SQLiteWebhookStore, run: Run
) -> None:
    receiver = Receiver(statuses=[500, 503, 200])
    worker = await run(receiver)
    await put(store, worker, 1, 2)
    await receiver.wait_for(3)
    first = receiver.requests[0]
    for retry in receiver.requests[1:]:
        assert retry.headers["x-bloomr-delivery"] == first.headers["x-bloomr-delivery"]
        assert retry.content == first.content
    state = await settled(store)
    assert state.delivered == 2 and state.last_status == 200 and state.last_error is None


async def test_failures_are_recorded_while_retrying(store: SQLiteWebhookStore, run: Run) -> None:
    slow = RetryPolicy(first_delay=30, retry_for=3600)
    receiver = Receiver(statuses=[500])
    worker = await run(receiver, policy=slow)
    await put(store, worker, 7)
    await receiver.wait_for(1)
    async with asyncio.timeout(5):
        while (record := await store.get_webhook("wh_unit")) is not None and (
            record.state.batch is None or record.state.batch.attempts == 0
        ):
            await asyncio.sleep(0.01)
    assert record is not None and record.state.batch is not None
    assert record.pending == 1 and record.state.batch.attempts == 1
    assert record.state.last_status == 500 and record.state.last_error == "HTTP 500: nope"
    doc = record.to_json()
    assert doc["attempts"] == 1 and doc["next_attempt_at"] is not None
    assert doc["delivery_id"] == receiver.requests[0].headers["x-bloomr-delivery"]
    assert "secret" not in doc


async def test_a_batch_is_dropped_after_its_window_and_the_next_goes(
    store: SQLiteWebhookStore, run: Run
) -> None:
    short = RetryPolicy(first_delay=0.01, max_delay=0.01, retry_for=0.15, jitter=0.0)
    receiver = Receiver(statuses=[500] * 1000)
    worker = await run(receiver, policy=short)
    await put(store, worker, 1)
    await receiver.wait_for(2)
    await put(store, worker, 2)
    async with asyncio.timeout(5):
        while (record := await store.get_webhook("wh_unit")) is not None and (
            record.state.dropped < 1
        ):
            await asyncio.sleep(0.01)
    receiver.statuses.clear()
    state = await settled(store)
    assert state.dropped == 1 and state.dropped_batches == 1 and state.delivered == 1
    assert receiver.seqs()[-1] == [2]


def published_at(seq: int, ms: int) -> OutboxItem:
    """An outbox item whose envelope's UUIDv7 id says it was published at `ms`."""
    message_id = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7000-8000-{seq:012x}"
    return OutboxItem("wh_unit", seq, orjson.dumps({"id": message_id, "data": seq}))


async def test_messages_older_than_the_window_are_dropped_not_sent(
    store: SQLiteWebhookStore, run: Run
) -> None:
    """An endpoint that stayed down for longer than the retry window: what waited
    longer than the window is given up, so the outbox stays bounded."""
    window = RetryPolicy(first_delay=0.01, max_delay=0.01, retry_for=60.0, jitter=0.0)
    receiver = Receiver()
    worker = await run(receiver, policy=window)
    long_ago, now = now_ms() - 120_000, now_ms()
    stale = [published_at(seq, long_ago + seq) for seq in range(1, 1501)]
    fresh = [published_at(seq, now) for seq in range(1501, 1504)]
    await store.enqueue([*stale, *fresh])
    worker.wake()
    state = await settled(store)
    assert receiver.seqs() == [[1501, 1502, 1503]]
    assert state.delivered == 3 and state.dropped == 1500


async def test_a_private_address_at_delivery_time_is_not_called(
    store: SQLiteWebhookStore, run: Run
) -> None:
    """DNS changed after the webhook was created: record an error, send nothing."""

    async def resolver(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    receiver = Receiver()
    slow = RetryPolicy(first_delay=30)
    worker = await run(
        receiver, url="http://hooks.example.com/x", allow_private=False, resolver=resolver,
        policy=slow,
    )  # fmt: skip
    await put(store, worker, 1)
    async with asyncio.timeout(5):
        while (record := await store.get_webhook("wh_unit")) is not None and (
            record.state.last_error is None
        ):
            await asyncio.sleep(0.01)
    assert record is not None
    assert record.state.last_error is not None and "10.0.0.7" in record.state.last_error
    assert record.state.last_status is None and record.pending == 1
    assert receiver.requests == []


async def test_a_public_name_is_called_at_the_checked_address(
    store: SQLiteWebhookStore, run: Run
) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    receiver = Receiver()
    worker = await run(
        receiver, url="https://hooks.example.com/x", allow_private=False, resolver=resolver
    )
    await put(store, worker, 1)
    await receiver.wait_for(1)
    request = receiver.requests[0]
    assert request.url.host == "93.184.216.34" and request.url.scheme == "https"
    assert request.headers["host"] == "hooks.example.com"
    assert request.extensions["sni_hostname"] == "hooks.example.com"


async def test_a_network_error_is_a_failed_attempt(store: SQLiteWebhookStore, run: Run) -> None:
    calls = 0

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(204)

    worker = await run(flaky)
    await put(store, worker, 1)
    state = await settled(store)
    assert calls == 2 and state.delivered == 1 and state.last_status == 204


async def test_stopping_a_worker_at_any_moment_leaves_the_store_usable(
    store: SQLiteWebhookStore,
) -> None:
    """A worker is cancelled when its webhook or stream is deleted, maybe in the middle
    of a store call: the store's shared connections must stay usable."""
    webhook = Webhook("wh_unit", "streamAAAA", "http://127.0.0.1:9/hook", SECRET)
    await store.create_webhook(webhook)

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(Receiver()))

    sender = Sender(store, client, True, FAST)
    for i in range(60):
        await store.enqueue([OutboxItem("wh_unit", i + 1, b"{}")])
        worker = DeliveryWorker(webhook, DeliveryState(), sender)
        worker.start()
        worker.wake()
        for _ in range(i % 6):
            await asyncio.sleep(0)
        await worker.stop()
    await store.save_state("wh_unit", DeliveryState(delivered=1))
    record = await store.get_webhook("wh_unit")
    assert record is not None and record.state.delivered == 1
