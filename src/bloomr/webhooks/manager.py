"""The webhooks of one node: the API's operations (create, list, get, delete), and the
hub's listener, which hands each publish to the outbox writer (`outbox.py`); the
delivering node (`delivery.py`, one per cluster through its lease) runs the workers.
A publish waits for webhooks only in a cluster, only when its stream has webhooks that
want it (until their outbox items are in PostgreSQL), and when the writer pushes back."""

from __future__ import annotations

import asyncio
import logging

from ..control import Control, ControlEvent
from ..errors import BloomrError
from ..leases import LeaseKeeper
from ..model import DEFAULT_CHANNEL, Message
from ..store.base import MetadataStore, WebhookStore
from ..webhook_model import (
    DeliveryState,
    Webhook,
    WebhookRecord,
    new_webhook_id,
    new_webhook_secret,
)
from . import guard
from .delivery import Delivery
from .outbox import MAX_PENDING_BYTES, OutboxWriter
from .policy import DEFAULT_POLICY, RetryPolicy

log = logging.getLogger("bloomr.webhooks")

_DRAIN_TIMEOUT = 5.0  # seconds a clean stop waits for the outbox writer


class WebhookManager:
    """Implements the hub's HubListener and Backpressure."""

    def __init__(
        self,
        store: WebhookStore,
        meta: MetadataStore,
        control: Control,
        keeper: LeaseKeeper,
        allow_private: bool,
        policy: RetryPolicy = DEFAULT_POLICY,
        max_pending: int = MAX_PENDING_BYTES,
    ) -> None:
        self._store = store
        self._meta = meta
        self._control = control
        self.allow_private = allow_private
        self._delivery = Delivery(store, meta, keeper, control, allow_private, policy)
        self._outbox = OutboxWriter(
            store, self._delivery.written, self._delivery.dropping, max_pending
        )
        control.watch(self._on_control)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Resume every webhook where it stopped (a batch in flight is sent again)."""
        self._outbox.start()
        self._delivery.start()

    async def stop(self) -> None:
        """Write what is queued (bounded), then stop the workers; attempts in flight are
        abandoned and made again at the next start."""
        await self._outbox.drain(_DRAIN_TIMEOUT)
        await self._delivery.stop()

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
        await self._changed(stream_id)
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
        await self._delivery.forget(record.webhook)
        await self._store.delete_webhook(webhook_id)
        await self._changed(stream_id)

    async def _require_stream(self, stream_id: str) -> None:
        if await self._meta.get_stream(stream_id) is None:
            raise BloomrError("not_found", f"stream {stream_id} not found")

    async def _changed(self, stream_id: str) -> None:
        """Tell the delivering node (this one included) to look at the store, and every
        node's routes cache to read the stream's routes again."""
        self._outbox.routes.forget(stream_id)  # this node's next publish sees it already
        self._delivery.changed()
        try:
            await self._control.send(ControlEvent("webhooks_changed", stream_id))
        except Exception as exc:  # its next look at the store finds the change
            log.warning("webhooks: could not tell the other nodes (%s)", exc)

    # -- HubListener and Backpressure -----------------------------------------------------

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind in ("webhooks_changed", "stream_deleted"):
            self._outbox.routes.forget(event.target)

    def on_published(
        self, stream_id: str, epoch: str, messages: list[Message]
    ) -> asyncio.Future[None] | None:
        return self._outbox.published(stream_id, epoch, messages)

    def on_repeated(
        self, stream_id: str, epoch: str, messages: list[Message]
    ) -> asyncio.Future[None] | None:
        """The outboxes may have missed them (their first publish died before its outbox
        write): written again, where they are already nothing is added."""
        return self._outbox.published(stream_id, epoch, messages)

    def on_stream_deleted(self, stream_id: str) -> None:
        self._delivery.stream_deleted(stream_id)
        self._outbox.stream_deleted(stream_id)

    def pushing_back(self) -> bool:
        return self._outbox.pushing_back()

    async def room(self) -> None:
        await self._outbox.room()
