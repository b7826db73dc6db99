"""The webhooks of one node: create, list, delete; one DeliveryWorker per webhook; and
the outbox writer that feeds them from the hub.

The hub tells the manager about every publish (`on_published`, synchronously, in the
stream's order); the manager only queues it. One writer task then copies the
messages each webhook wants into the outboxes, in that order, in one transaction per
round, and wakes the workers. Publishing therefore never waits for webhooks.

In a cluster (`cluster` given), the publishing node still writes the outboxes (it
reads the stream's webhooks from the shared store for that, since they may have been
created on another node), and one node at a time, the holder of the lease
`webhooks:delivery`, runs the delivery workers. Control events tell it at once of new
webhooks and of messages waiting; it also looks at the store every second.

The price: the outbox is written just after the publish is stored, not in the same
transaction. If bloomr crashes (kill -9, power loss) between the two, the messages of
that moment are stored and were acknowledged but never reach the webhooks. A clean
stop drains the writer first, so it loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from ..control import ControlEvent
from ..errors import BloomrError
from ..model import DEFAULT_CHANNEL, Message
from ..store.base import LeaseStore, MetadataStore, OutboxItem, WebhookStore
from ..webhook_model import (
    DeliveryState,
    Webhook,
    WebhookRecord,
    new_webhook_id,
    new_webhook_secret,
)
from . import guard
from .policy import DEFAULT_POLICY, RetryPolicy
from .worker import DeliveryWorker, Sender, new_client

log = logging.getLogger("bloomr.webhooks")

_DRAIN_TIMEOUT = 5.0  # seconds a clean stop waits for the outbox writer
_WRITE_ATTEMPTS = 3


DELIVERY_LEASE = "webhooks:delivery"
_LOOK_EVERY = 1.0  # seconds between the delivering node's looks at the store


@dataclass(frozen=True, slots=True)
class Cluster:
    """What a node of a cluster needs to share webhook work with the others."""

    leases: LeaseStore
    node_id: str
    ttl: float
    signal: Callable[[ControlEvent], Awaitable[None]]  # the bus: to every node


@dataclass(frozen=True, slots=True)
class _Enqueue:
    # (webhook id, channel) that existed at publish; None: read them from the store
    hooks: tuple[tuple[str, str], ...] | None
    stream_id: str
    messages: list[Message]


@dataclass(frozen=True, slots=True)
class _DropStream:
    stream_id: str


_Op = _Enqueue | _DropStream


class WebhookManager:
    """Implements the hub's HubListener."""

    def __init__(
        self,
        store: WebhookStore,
        meta: MetadataStore,
        allow_private: bool,
        policy: RetryPolicy = DEFAULT_POLICY,
        cluster: Cluster | None = None,
    ) -> None:
        self._cluster = cluster
        self._leader = False  # cluster: this node holds the delivery lease
        self._renewed_at = 0.0
        self._look = asyncio.Event()
        self._leading: asyncio.Task[None] | None = None
        self._store = store
        self._meta = meta
        self.allow_private = allow_private
        self._policy = policy
        self._by_stream: dict[str, dict[str, str]] = {}  # stream -> webhook id -> channel
        self._workers: dict[str, DeliveryWorker] = {}
        self._retired: set[DeliveryWorker] = set()  # cancelled, not yet awaited
        self._ops: list[_Op] = []
        self._work = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self._sender: Sender | None = None
        self._tls: ssl.SSLContext | None = None

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every webhook where it stopped (a batch in flight is sent again)."""
        self._sender = Sender(self._store, self._new_client, self.allow_private, self._policy)
        self._closing = False
        self._writer = asyncio.create_task(self._write_outboxes(), name="bloomr-webhook-outbox")
        if self._cluster is not None:
            self._leading = asyncio.create_task(self._lead(), name="bloomr-webhook-lease")
            return
        streams = {s.id for s in await self._meta.list_streams()}
        for record in await self._store.list_webhooks():
            if record.webhook.stream not in streams:  # its stream went while we were down
                await self._store.delete_webhook(record.webhook.id)
                continue
            self._run(record.webhook, record.state)

    async def stop(self) -> None:
        """Write what is queued (bounded), then stop the workers; attempts in flight are
        abandoned and made again at the next start."""
        self._closing = True
        self._work.set()
        if self._leading is not None:
            self._leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leading
            self._leading = None
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer, _DRAIN_TIMEOUT)
            except TimeoutError:
                log.warning("webhook outbox writer did not drain in time")
            self._writer = None
        workers = [*self._workers.values(), *self._retired]
        self._workers.clear()
        self._retired.clear()
        self._by_stream.clear()
        await asyncio.gather(*(w.stop() for w in workers))
        self._sender = None
        if self._cluster is not None and self._leader:
            self._leader = False
            with contextlib.suppress(Exception):
                await self._cluster.leases.release(DELIVERY_LEASE, self._cluster.node_id)

    def _new_client(self) -> httpx.AsyncClient:
        if self._tls is None:  # built once, when the first webhook runs
            self._tls = httpx.create_ssl_context()
        return new_client(self._tls)

    def _run(self, webhook: Webhook, state: DeliveryState) -> None:
        assert self._sender is not None, "the manager is not started"
        self._by_stream.setdefault(webhook.stream, {})[webhook.id] = webhook.channel
        worker = self._workers[webhook.id] = DeliveryWorker(webhook, state, self._sender)
        worker.start()
        worker.wake()

    def _forget(self, webhook: Webhook) -> DeliveryWorker | None:
        hooks = self._by_stream.get(webhook.stream)
        if hooks is not None:
            hooks.pop(webhook.id, None)
            if not hooks:
                del self._by_stream[webhook.stream]
        return self._workers.pop(webhook.id, None)

    # -- the API's operations ---------------------------------------------------------

    async def create_webhook(
        self, stream_id: str, url: str, channel: str = DEFAULT_CHANNEL, secret: str | None = None
    ) -> WebhookRecord:
        """A new webhook, delivering what the stream publishes from now on. Raises
        `validation_failed` (field `url`) for a URL it may not call."""
        await self._require_stream(stream_id)
        try:
            await guard.check(url, self.allow_private)
        except guard.UrlRefused as exc:
            raise BloomrError("validation_failed", f"url: {exc}", field="url") from None
        webhook = Webhook(
            id=new_webhook_id(),
            stream=stream_id,
            url=url,
            secret=secret or new_webhook_secret(),
            channel=channel,
        )
        await self._store.create_webhook(webhook)
        if await self._meta.get_stream(stream_id) is None:  # deleted meanwhile
            await self._store.delete_webhook(webhook.id)
            raise BloomrError("not_found", f"stream {stream_id} not found")
        if self._cluster is None:
            self._run(webhook, DeliveryState())
        else:
            await self._cluster.signal(ControlEvent("webhooks_changed", stream_id))
        return WebhookRecord(webhook, DeliveryState(), pending=0)

    async def list_webhooks(self, stream_id: str) -> list[WebhookRecord]:
        await self._require_stream(stream_id)
        return await self._store.list_webhooks(stream_id)

    async def get_webhook(self, stream_id: str, webhook_id: str) -> WebhookRecord:
        await self._require_stream(stream_id)
        record = await self._store.get_webhook(webhook_id)
        if record is None or record.webhook.stream != stream_id:
            raise BloomrError("not_found", f"webhook {webhook_id} not found")
        return record

    async def delete_webhook(self, stream_id: str, webhook_id: str) -> None:
        """No delivery starts once this returns (one in flight may still complete)."""
        record = await self.get_webhook(stream_id, webhook_id)
        worker = self._forget(record.webhook)
        if worker is not None:
            await worker.stop()
        await self._store.delete_webhook(webhook_id)
        if self._cluster is not None:
            await self._cluster.signal(ControlEvent("webhooks_changed", stream_id))

    async def _require_stream(self, stream_id: str) -> None:
        if await self._meta.get_stream(stream_id) is None:
            raise BloomrError("not_found", f"stream {stream_id} not found")

    # -- HubListener ------------------------------------------------------------------

    def on_published(self, stream_id: str, messages: list[Message]) -> None:
        if self._closing:
            return
        if self._cluster is not None:  # webhooks made on any node: the writer reads them
            self._ops.append(_Enqueue(None, stream_id, messages))
            self._work.set()
            return
        hooks = self._by_stream.get(stream_id)
        if hooks:
            self._ops.append(_Enqueue(tuple(hooks.items()), stream_id, messages))
            self._work.set()

    def on_stream_deleted(self, stream_id: str) -> None:
        for webhook_id in list(self._by_stream.pop(stream_id, {})):
            worker = self._workers.pop(webhook_id, None)
            if worker is not None:
                worker.cancel()  # now: no attempt starts after this
                self._retired.add(worker)
        if not self._closing:  # else the next start deletes them
            self._ops.append(_DropStream(stream_id))
            self._work.set()

    # -- the outbox writer ------------------------------------------------------------

    async def _write_outboxes(self) -> None:
        """Apply queued operations in order; return once closing and nothing is left."""
        while True:
            if not self._ops:
                if self._closing:
                    return
                await self._work.wait()
                self._work.clear()
                continue
            ops, self._ops = self._ops, []
            for run in _runs(ops):
                await self._apply(run)

    async def _apply(self, run: list[_Op]) -> None:
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                # shielded: a store transaction cut at its BEGIN by a cancellation (a
                # stop that timed out) would leave the store's connection unusable
                if isinstance(run[0], _DropStream):
                    await asyncio.shield(self._drop_stream(run[0].stream_id))
                else:
                    ops = [op for op in run if isinstance(op, _Enqueue)]
                    await asyncio.shield(self._enqueue(ops))
                return
            except Exception:
                log.exception("webhook outbox write failed (attempt %d)", attempt)
                if attempt < _WRITE_ATTEMPTS:
                    await asyncio.sleep(attempt)
        log.error("webhook outbox: gave up on a write (%s)", type(run[0]).__name__)

    async def _enqueue(self, ops: list[_Enqueue]) -> None:
        items: list[OutboxItem] = []
        found: dict[str, tuple[tuple[str, str], ...]] = {}
        for op in ops:
            hooks = op.hooks
            if hooks is None:
                if op.stream_id not in found:
                    records = await self._store.list_webhooks(op.stream_id)
                    found[op.stream_id] = tuple((r.webhook.id, r.webhook.channel) for r in records)
                hooks = found[op.stream_id]
            for webhook_id, channel in hooks:
                items.extend(
                    OutboxItem(webhook_id, m.seq, m.envelope_json(None))
                    for m in op.messages
                    if m.channel == channel
                )
        if not items or not await self._store.enqueue(items):
            return
        for webhook_id in {item.webhook_id for item in items}:
            worker = self._workers.get(webhook_id)
            if worker is not None:
                worker.wake()
        if self._cluster is not None and not self._leader:  # wake the delivering node
            for stream_id in {op.stream_id for op in ops}:
                await self._cluster.signal(ControlEvent("webhooks_pending", stream_id))

    # -- cluster: one delivering node -----------------------------------------------------

    def on_control(self, event: ControlEvent) -> None:
        """A hub control watcher (cluster): wake what another node's change concerns."""
        if not self._leader:
            return
        if event.kind == "webhooks_pending":
            for webhook_id in self._by_stream.get(event.target, {}):
                worker = self._workers.get(webhook_id)
                if worker is not None:
                    worker.wake()
        elif event.kind in ("webhooks_changed", "stream_deleted"):
            self._look.set()

    async def _lead(self) -> None:
        """Hold the delivery lease (renewed every ttl/5) and, while held, run a worker
        for every webhook in the store; give them up when the lease is lost or cannot
        be renewed for half its ttl, before another node may take over."""
        assert self._cluster is not None
        cluster = self._cluster
        next_renew = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(_LOOK_EVERY, cluster.ttl / 5)):
                    await self._look.wait()
            self._look.clear()
            now = time.monotonic()
            if now >= next_renew:
                next_renew = now + cluster.ttl / 5
                await self._renew(cluster)
            if self._leader:
                try:
                    await self._sync_workers()
                except Exception:
                    log.exception("webhooks: reading the store failed")

    async def _renew(self, cluster: Cluster) -> None:
        try:
            held = await cluster.leases.acquire(DELIVERY_LEASE, cluster.node_id, cluster.ttl)
        except Exception as exc:
            late = time.monotonic() - self._renewed_at
            if self._leader and late > cluster.ttl / 2:
                log.error("webhooks: delivery lease not renewed for %.1f s: pausing", late)
                await self._step_down()
            else:
                log.warning("webhooks: renewing the delivery lease failed (%s)", exc)
            return
        if held:
            self._renewed_at = time.monotonic()
            if not self._leader:
                log.info("webhooks: node %s delivers them now", cluster.node_id)
            self._leader = True
        elif self._leader:
            log.warning("webhooks: lost the delivery lease")
            await self._step_down()

    async def _step_down(self) -> None:
        self._leader = False
        workers = list(self._workers.values())
        self._workers.clear()
        self._by_stream.clear()
        await asyncio.gather(*(w.stop() for w in workers))

    async def _sync_workers(self) -> None:
        """Workers for the webhooks in the store, none for the others; wake those with
        messages waiting (in case a wake-up was missed)."""
        records = {r.webhook.id: r for r in await self._store.list_webhooks()}
        for webhook_id in [w for w in self._workers if w not in records]:
            gone = self._workers[webhook_id]
            self._forget(gone.webhook)
            await gone.stop()
        for webhook_id, record in records.items():
            running = self._workers.get(webhook_id)
            if running is None:
                self._run(record.webhook, record.state)
            elif record.pending:
                running.wake()

    async def _drop_stream(self, stream_id: str) -> None:
        retired = [w for w in self._retired if w.webhook.stream == stream_id]
        await asyncio.gather(*(w.stop() for w in retired))
        self._retired.difference_update(retired)
        for record in await self._store.list_webhooks(stream_id):
            await self._store.delete_webhook(record.webhook.id)


def _runs(ops: list[_Op]) -> list[list[_Op]]:
    """Consecutive enqueues together (one transaction), each stream drop on its own."""
    runs: list[list[_Op]] = []
    for op in ops:
        if runs and isinstance(op, _Enqueue) and isinstance(runs[-1][0], _Enqueue):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs
