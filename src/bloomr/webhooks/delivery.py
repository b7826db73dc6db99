"""The delivering node: one node at a time, the holder of the lease `webhooks:delivery`,
runs a DeliveryWorker for every webhook in the store.

Control events tell it at once of new or deleted webhooks and of messages waiting in
outboxes written by other nodes; it also looks at the store every second, in case an
event was lost. When the lease keeper says the lease is lost, it stops every worker
(before another node may take over). On a single node the local keeper grants the lease
at once and never takes it back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import httpx

from ..control import Control, ControlEvent
from ..leases import LeaseKeeper
from ..store.base import MetadataStore, WebhookStore
from ..tasks import cancel
from ..webhook_model import DeliveryState, Webhook
from .policy import RetryPolicy
from .worker import DeliveryWorker, Sender, new_client

log = logging.getLogger("bloomr.webhooks")

DELIVERY_LEASE = "webhooks:delivery"
_LOOK_EVERY = 1.0  # seconds between looks at the store (and tries to take the lease)


class Delivery:
    def __init__(
        self,
        store: WebhookStore,
        meta: MetadataStore,
        keeper: LeaseKeeper,
        control: Control,
        allow_private: bool,
        policy: RetryPolicy,
    ) -> None:
        self._store, self._meta, self._keeper, self._control = store, meta, keeper, control
        self._sender = Sender(store, self._new_client, allow_private, policy)
        self._by_stream: dict[str, dict[str, str]] = {}  # stream -> webhook id -> channel
        self._workers: dict[str, DeliveryWorker] = {}
        self._retired: set[DeliveryWorker] = set()  # cancelled, not yet awaited
        self._look = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tls: ssl.SSLContext | None = None
        control.watch(self._on_control)

    @property
    def leading(self) -> bool:
        return self._keeper.holds(DELIVERY_LEASE)

    def start(self) -> None:
        self._task = asyncio.create_task(self._lead(), name="bloomr-webhook-delivery")

    async def stop(self) -> None:
        """Stop the workers (attempts in flight are made again by the next holder) and
        free the lease."""
        await cancel(self._task)
        self._task = None
        await self._stop_workers()
        with contextlib.suppress(Exception):  # unreleased, it expires after the ttl
            await self._keeper.release(DELIVERY_LEASE)

    # -- what the manager and the outbox writer tell it ---------------------------------

    def changed(self) -> None:
        """Webhooks were made or deleted on this node: look at the store now."""
        self._look.set()

    async def forget(self, webhook: Webhook) -> None:
        """Stop the webhook's worker here, if it runs here."""
        worker = self._unlist(webhook)
        if worker is not None:
            await worker.stop()

    def stream_deleted(self, stream_id: str) -> None:
        """No attempt of the stream's webhooks starts after this."""
        for webhook_id in list(self._by_stream.pop(stream_id, {})):
            worker = self._workers.pop(webhook_id, None)
            if worker is not None:
                worker.cancel()
                self._retired.add(worker)

    async def dropping(self, stream_id: str) -> None:
        """The stream's webhooks are about to be deleted: await its cancelled workers."""
        retired = [w for w in self._retired if w.webhook.stream == stream_id]
        await asyncio.gather(*(w.stop() for w in retired))
        self._retired.difference_update(retired)

    async def written(self, webhook_ids: set[str], stream_ids: set[str]) -> None:
        """Outboxes got messages: wake their workers here, or the delivering node."""
        for webhook_id in webhook_ids:
            worker = self._workers.get(webhook_id)
            if worker is not None:
                worker.wake()
        if self.leading:
            return
        try:
            for stream_id in stream_ids:
                await self._control.send(ControlEvent("webhooks_pending", stream_id))
        except Exception as exc:  # the delivering node's next look finds them anyway
            log.warning("webhooks: could not wake the delivering node (%s)", exc)

    # -- leading ------------------------------------------------------------------------

    def _on_control(self, event: ControlEvent) -> None:
        if not self.leading:
            return
        if event.kind == "webhooks_pending":
            for webhook_id in self._by_stream.get(event.target, {}):
                worker = self._workers.get(webhook_id)
                if worker is not None:
                    worker.wake()
        elif event.kind in ("webhooks_changed", "stream_deleted"):
            self._look.set()

    async def _lead(self) -> None:
        """Take the lease when it is free; while held, run a worker per webhook."""
        while True:
            try:
                if not self.leading and await self._keeper.take(DELIVERY_LEASE, self._lost):
                    log.info("webhooks: this node delivers them now")
                    await self._drop_orphans()
                if self.leading:
                    await self._sync_workers()
            except Exception:
                log.exception("webhooks: reading the store failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_LOOK_EVERY):
                    await self._look.wait()
            self._look.clear()

    async def _lost(self, key: str, left: float) -> None:
        log.warning("webhooks: lost the delivery lease: pausing delivery here")
        await self._stop_workers()

    async def _drop_orphans(self) -> None:
        """Delete the webhooks of streams deleted while no node delivered. Webhooks are
        read before streams: a webhook listed then whose stream is not is an orphan."""
        records = await self._store.list_webhooks()
        streams = {s.id for s in await self._meta.list_streams()}
        for record in records:
            if record.webhook.stream not in streams:
                await self._store.delete_webhook(record.webhook.id)

    async def _sync_workers(self) -> None:
        """Workers for the webhooks in the store, none for the others; wake those with
        messages waiting (in case a wake-up was missed)."""
        records = {r.webhook.id: r for r in await self._store.list_webhooks()}
        if not self.leading:  # lost while reading
            return
        for webhook_id in [w for w in self._workers if w not in records]:
            await self.forget(self._workers[webhook_id].webhook)
        for webhook_id, record in records.items():
            running = self._workers.get(webhook_id)
            if running is None:
                self._run(record.webhook, record.state)
            elif record.pending:
                running.wake()

    # -- workers ------------------------------------------------------------------------

    def _run(self, webhook: Webhook, state: DeliveryState) -> None:
        self._by_stream.setdefault(webhook.stream, {})[webhook.id] = webhook.channel
        worker = self._workers[webhook.id] = DeliveryWorker(webhook, state, self._sender)
        worker.start()
        worker.wake()

    def _unlist(self, webhook: Webhook) -> DeliveryWorker | None:
        hooks = self._by_stream.get(webhook.stream)
        if hooks is not None:
            hooks.pop(webhook.id, None)
            if not hooks:
                del self._by_stream[webhook.stream]
        return self._workers.pop(webhook.id, None)

    async def _stop_workers(self) -> None:
        workers = [*self._workers.values(), *self._retired]
        self._workers.clear()
        self._retired.clear()
        self._by_stream.clear()
        await asyncio.gather(*(w.stop() for w in workers))

    def _new_client(self) -> httpx.AsyncClient:
        if self._tls is None:  # built once, when the first webhook runs
            self._tls = httpx.create_ssl_context()
        return new_client(self._tls)
