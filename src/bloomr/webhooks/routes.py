"""Which webhooks each stream has, known without a read on the publish path.

A publish asks synchronously; it must not wait for a store to learn that its stream has
no webhook (most streams have none). The embedded store knows its routes exactly (one
process owns the file). In a cluster, webhooks are made and deleted on any node: this
node keeps what it read per stream for `ttl` seconds, reads it again in the background
once half of that has passed (a busy stream never finds its entry gone), and forgets a
stream's entry when told it changed (`webhooks_changed`, sent by the node that changed
it, this one included; `stream_deleted`). Without an entry a publish cannot tell, and the
outbox writer reads the routes before it answers it."""

from __future__ import annotations

import asyncio
import logging
import time

from ..store.base import Routes, WebhookStore

log = logging.getLogger("bloomr.webhooks")

TTL = 2.0  # seconds a stream's routes read from the store are trusted


class RoutesCache:
    def __init__(self, store: WebhookStore, ttl: float = TTL) -> None:
        self._store = store
        self._ttl = ttl
        self._entries: dict[str, tuple[float, Routes]] = {}  # stream -> (read at, routes)
        self._generation = 0  # bumped by every forget: a read that raced one is not kept
        self._refreshing: dict[str, asyncio.Task[Routes]] = {}

    def get(self, stream_id: str) -> Routes | None:
        """The stream's routes, or None when unknown (read them with `load`)."""
        exact = self._store.known_routes(stream_id)
        if exact is not None:
            return exact
        entry = self._entries.get(stream_id)
        if entry is None:
            return None
        age = time.monotonic() - entry[0]
        if age >= self._ttl:
            return None
        if age >= self._ttl / 2 and stream_id not in self._refreshing:
            task = asyncio.get_running_loop().create_task(self.load(stream_id))
            self._refreshing[stream_id] = task
            task.add_done_callback(lambda t: self._refreshed(stream_id, t))
        return entry[1]

    def _refreshed(self, stream_id: str, task: asyncio.Task[Routes]) -> None:
        if self._refreshing.get(stream_id) is task:
            del self._refreshing[stream_id]
        if not task.cancelled() and task.exception() is not None:
            log.debug("webhooks: reading routes of %s failed: %s", stream_id, task.exception())

    async def load(self, stream_id: str) -> Routes:
        """Read the stream's routes from the store (and keep them)."""
        exact = self._store.known_routes(stream_id)
        if exact is not None:
            return exact
        generation, read_at = self._generation, time.monotonic()
        routes = await self._store.routes(stream_id)
        if generation == self._generation:
            self._entries[stream_id] = (read_at, routes)
        return routes

    def forget(self, stream_id: str | None = None) -> None:
        """The stream's webhooks (every stream's, for None) may have changed."""
        self._generation += 1
        if stream_id is None:
            self._entries.clear()
        else:
            self._entries.pop(stream_id, None)

    async def close(self) -> None:
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refreshing.clear()


def wanted(routes: Routes, channels: set[str]) -> list[str]:
    """The webhooks of `routes` that want a message of one of `channels`."""
    return [webhook_id for webhook_id, channel in routes if channel in channels]
