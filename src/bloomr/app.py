"""Builds the ASGI app and wires the parts together in its lifespan."""

from __future__ import annotations

import asyncio
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
from .api.cors import Cors
from .api.fastpath import FastPublish
from .api.limits import BodyLimit
from .auth import Authenticator
from .backends import Backends, for_settings
from .config import Settings, new_admin_key
from .control import Control
from .dashboard import Dashboard
from .hub import Hub, Limits
from .metrics import Counters, NodeCollector, registry_for
from .model import hash_secret
from .retention import Trimmer
from .scripts import ScriptManager
from .store.base import MetadataStore, WebhookStore
from .streams import Streams
from .throttle import ConnectionCount, FailureThrottle
from .transports import Transports, build_transports
from .webhooks.manager import WebhookManager

log = logging.getLogger("bloomr")


@dataclass
class Bloomr:
    """The running parts of one bloomr node. `admin_key` None (cluster only): the
    cluster's stored key hash is used, or a new key is generated, stored as a hash and
    kept in `generated_admin_key` for printing once."""

    settings: Settings
    admin_key: str | None
    backends: Backends = field(init=False)
    store: MetadataStore = field(init=False)
    control: Control = field(init=False)
    hub: Hub = field(init=False)
    trimmer: Trimmer = field(init=False)
    streams: Streams = field(init=False)
    auth: Authenticator = field(init=False)
    transports: Transports = field(init=False)
    scripts: ScriptManager = field(init=False)
    webhook_store: WebhookStore = field(init=False)
    webhooks: WebhookManager = field(init=False)
    counters: Counters = field(init=False)
    metrics: CollectorRegistry = field(init=False)
    ctx: Context = field(init=False)
    generated_admin_key: str | None = field(init=False, default=None)
    _connected: bool = field(init=False, default=False)
    _scripts_closed: asyncio.Future[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        s = self.settings
        b = self.backends = for_settings(s)
        self.store = b.meta
        limits = Limits(
            backlog_messages=s.backlog_messages,
            backlog_bytes=s.backlog_bytes,
        )
        self.control = Control(b.control)
        revoked: set[str] = set()  # token ids revoked while this node runs
        self.hub = Hub(b.broker, self.control, limits, revoked)
        self.hub.subscribers.per_token = ConnectionCount(s.bounds.max_per_token)
        self.hub.subscribers.changed = b.presence.changed
        self.trimmer = Trimmer(b.broker, b.meta.list_streams, s.trim_interval)
        self.streams = Streams(b.meta, self.hub, self.control, revoked)
        key_hash = hash_secret(self.admin_key) if self.admin_key else ""
        throttle = FailureThrottle(s.bounds.auth_failures)
        self.auth = Authenticator(b.meta.get_token_by_hash, key_hash, revoked, throttle)
        self.transports = build_transports(self.hub, self.streams, self.auth, s)
        self.scripts = ScriptManager(
            self.hub, self.streams, self.control, b.meta, b.leases, b.script_status,
            s.script_grace,
        )  # fmt: skip
        self.streams.hook(self.scripts)
        self.webhook_store = b.webhooks
        self.webhooks = WebhookManager(
            b.webhooks, b.meta, self.control, b.leases, s.webhook_allow_private
        )
        self.hub.add_listener(self.webhooks)
        self.hub.add_backpressure(self.webhooks)
        self.counters = Counters()
        self.hub.add_listener(self.counters)
        self.metrics = registry_for(self._collector())
        self.ctx = Context(
            settings=s,
            meta=self.store,
            hub=self.hub,
            streams=self.streams,
            auth=self.auth,
            scripts=self.scripts,
            metrics=self.metrics,
            probes=b.probes,
            presence=b.presence,
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
                    lambda: hub.subscribers.slow_consumers,
                ),
            },
            gauges={
                "bloomr_subscriptions": (
                    "Live subscribers (Socket.IO, SSE, long polls)",
                    lambda: hub.subscribers.count,
                ),
                "bloomr_scripts_running": (
                    "Scripts running or waiting to restart",
                    lambda: self.scripts.running_count,
                ),
            },
        )

    async def connect(self) -> None:
        """Open the stores (raises backends.Unreachable) and settle the admin key.
        Idempotent: `serve` calls it before listening, to fail in one clear line."""
        if self._connected:
            return
        await self.backends.open()
        self._connected = True
        claim = self.backends.claim_admin_hash
        if not self.auth.admin_key_hash and claim is not None:
            key = new_admin_key()
            kept = await claim(hash_secret(key))
            self.auth.admin_key_hash = kept
            if kept == hash_secret(key):
                self.generated_admin_key = key
        if not self.auth.admin_key_hash:
            raise RuntimeError("no admin key")

    async def start(self) -> None:
        await self.connect()
        await self.control.start()
        await self.backends.leases.start()
        await self.hub.start()
        await self.backends.presence.start(self.hub.subscribers.occupancies)
        self.trimmer.start()
        await self.webhooks.start()  # before the scripts: their first lines count too
        await self.scripts.start()

    def begin_stop(self) -> None:
        """The server accepts no one new: stop the scripts now, alongside the rest of
        the stop (their last output still reaches the store), and end the long polls."""
        self.ctx.stopping.set()
        if self._scripts_closed is None:
            self._scripts_closed = asyncio.ensure_future(self.scripts.close())

    async def stop(self) -> None:
        """Stop taking work, end sessions, flush, close the store."""
        self.begin_stop()
        assert self._scripts_closed is not None
        await self._scripts_closed
        self._scripts_closed = None
        await self.transports.close()
        await self.backends.presence.stop()
        await self.webhooks.stop()  # writes the outboxes of everything published so far
        await self.backends.leases.stop()
        await self.trimmer.stop()
        await self.hub.stop()
        await self.control.stop()
        await self.backends.close()
        self._connected = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Bloomr]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()


def build_asgi(node: Bloomr) -> Any:
    """A transport's paths go to it (`transports/`), the dashboard's files to it,
    everything else to the HTTP API; all behind the CORS layer (outside everything that
    answers by hand) but for the transports that answer CORS themselves. (Websockets
    never get here: the server's websocket protocol takes them.)"""
    transports = node.transports
    fastapi = build_api(node.ctx, node.webhooks, transports.openapi())
    api = BodyLimit(FastPublish(fastapi, node.ctx), node.settings.max_body_bytes, node.auth)

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        transport = transports.for_http(scope["path"])
        if transport is not None:
            await transport.http(scope, receive, send)
        else:
            await api(scope, receive, send)

    front = Dashboard(Cors(routed, node.settings.admin_cors_origins))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(node, receive, send)
            return
        transport = transports.for_http(scope["path"])
        if transport is not None and transport.answers_cors:
            await transport.http(scope, receive, send)
        else:
            await front(scope, receive, send)

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
