"""Builds the ASGI app and wires the parts together in its lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from .api import build_api
from .api.context import Context
from .api.fastpath import FastPublish
from .api.limits import BodyLimit
from .auth import Authenticator
from .bus.local import LocalBus
from .config import Settings
from .gateway import Gateway, build_gateway
from .hub import Hub, Limits
from .metrics import Counters, NodeCollector, registry_for
from .scripts import ScriptManager
from .store.sqlite import SQLiteStore
from .store.sqlite_webhooks import SQLiteWebhookStore
from .webhooks.manager import WebhookManager

log = logging.getLogger("bloomr")


@dataclass
class Bloomr:
    """The running parts of one bloomr node."""

    settings: Settings
    admin_key: str
    store: SQLiteStore = field(init=False)
    hub: Hub = field(init=False)
    auth: Authenticator = field(init=False)
    gateway: Gateway = field(init=False)
    scripts: ScriptManager = field(init=False)
    webhook_store: SQLiteWebhookStore = field(init=False)
    webhooks: WebhookManager = field(init=False)
    counters: Counters = field(init=False)
    metrics: CollectorRegistry = field(init=False)
    ctx: Context = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.store = SQLiteStore(s.database_path)
        limits = Limits(
            backlog_messages=s.backlog_messages,
            backlog_bytes=s.backlog_bytes,
            trim_interval=s.trim_interval,
        )
        self.hub = Hub(self.store, self.store, LocalBus(), limits)
        self.auth = Authenticator(self.store, self.admin_key, self.hub.revoked_tokens)
        self.gateway = build_gateway(s.gateway, self.hub, self.auth, s.cors_origins)
        self.scripts = ScriptManager(self.hub, self.store, s.script_grace)
        self.webhook_store = SQLiteWebhookStore(self.store)
        self.webhooks = WebhookManager(self.webhook_store, self.store, s.webhook_allow_private)
        self.hub.add_listener(self.webhooks)
        self.counters = Counters()
        self.hub.add_listener(self.counters)
        self.metrics = registry_for(self._collector())
        self.ctx = Context(
            settings=s,
            meta=self.store,
            hub=self.hub,
            auth=self.auth,
            scripts=self.scripts,
            metrics=self.metrics,
        )

    def _collector(self) -> NodeCollector:
        hub, counters = self.hub, self.counters
        return NodeCollector(
            counters={
                "bloomr_messages_published": (
                    "Messages published (stored, or ordered when history is off)",
                    lambda: counters.published,
                ),
                "bloomr_publish_batches": ("Publish batches", lambda: counters.publish_batches),
                "bloomr_slow_consumers": (
                    "Subscribers cut off for falling behind",
                    lambda: hub.slow_consumers,
                ),
            },
            gauges={
                "bloomr_subscriptions": (
                    "Live subscribers (Socket.IO, SSE, long polls)",
                    lambda: hub.subscription_count,
                ),
                "bloomr_scripts_running": (
                    "Scripts running or waiting to restart",
                    lambda: self.scripts.running_count,
                ),
            },
        )

    async def start(self) -> None:
        await self.store.open()
        await self.webhook_store.open()
        await self.hub.start()
        await self.webhooks.start()  # before the scripts: their first lines count too
        await self.scripts.start()

    async def stop(self) -> None:
        """Stop taking work, end sessions, flush, close the store."""
        await self.scripts.close()  # their last output still reaches the store
        await self.gateway.close()
        await self.webhooks.stop()  # writes the outboxes of everything published so far
        await self.hub.stop()
        await self.store.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Bloomr]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


def build_asgi(node: Bloomr) -> Any:
    """`/socket.io/` goes to the gateway, everything else to the HTTP API."""
    api = BodyLimit(
        FastPublish(build_api(node.ctx, node.webhooks), node.ctx), node.settings.max_body_bytes
    )
    sio = node.gateway.asgi_app()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(node, receive, send)
        elif scope["path"].startswith("/socket.io"):
            await sio(scope, receive, send)
        else:
            await api(scope, receive, send)

    return app


async def _lifespan(node: Bloomr, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await node.start()
            except Exception as exc:
                log.exception("startup failed")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            # What start-up made (modules, the app, its routes) lives as long as the
            # process: out of the collector's sight, full collections stay short.
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await node.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
