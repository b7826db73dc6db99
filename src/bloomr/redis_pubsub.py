"""A Redis pub/sub subscription that stays up: one connection subscribed to some
channels and patterns, made again (with jittered backoff) whenever it breaks, and a
hook that runs after each reconnection, so its owner can fill what it missed.

A connection quiet for `idle_ping` gets a PING; quiet for another `idle_ping` it is taken
for dead (a peer that vanished without closing would otherwise be waited on forever)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .errors import BloomrError
from .faults import BACKEND_TIMEOUT
from .tasks import cancel

log = logging.getLogger("bloomr.redis")

OnMessage = Callable[[dict[str, Any]], Awaitable[None]]
OnReconnect = Callable[[], Awaitable[None]]
_BROKEN = (RedisError, OSError, TimeoutError)


class Subscription:
    def __init__(
        self,
        url: str,
        name: str,
        on_message: OnMessage,
        *,
        channels: Sequence[str] = (),
        patterns: Sequence[str] = (),
        on_reconnect: OnReconnect | None = None,
        reconnect_delay: float = 0.05,
        max_reconnect_delay: float = 5.0,
        idle_ping: float = 5.0,
    ) -> None:
        self.url = url
        self.name = name  # CLIENT LIST shows it
        self._on_message = on_message
        self._channels, self._patterns = list(channels), list(patterns)
        self._on_reconnect = on_reconnect
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.idle_ping = idle_ping
        self.reconnects = 0  # how many times the connection was made again
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def client(self) -> aioredis.Redis:
        assert self._client is not None, "not started"
        return self._client

    async def start(self) -> None:
        """Returns once subscribed: whatever is published from then on is handed over.
        Raises if Redis cannot be reached now; later outages are retried."""
        # No retries inside the client: this reconnects itself, so that it knows when
        # it did and its owner can fill what it missed meanwhile.
        self._client = aioredis.Redis.from_url(
            self.url,
            retry=Retry(NoBackoff(), 0),
            client_name=self.name,
            # bounds the commands sent on its pool (a control event's PUBLISH); the
            # listening itself waits with its own timeouts
            socket_timeout=BACKEND_TIMEOUT,
            socket_connect_timeout=BACKEND_TIMEOUT,
        )
        try:
            pubsub = await self._subscribe()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(pubsub), name=self.name)

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _subscribe(self) -> PubSub:
        """A connection subscribed to everything asked, returned once Redis confirmed
        it all (patterns are asked for last; messages that come first are handed over)."""
        pubsub = self.client.pubsub()
        try:
            if self._channels:
                await pubsub.subscribe(*self._channels)
            if self._patterns:
                await pubsub.psubscribe(*self._patterns)
            await self._confirmed(pubsub, len(self._channels) + len(self._patterns))
        except BaseException:
            await _close(pubsub)
            raise
        return pubsub

    async def _confirmed(self, pubsub: PubSub, expected: int) -> None:
        async with asyncio.timeout(max(self.idle_ping, 1.0)):
            while expected:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                if message["type"] in ("subscribe", "psubscribe"):
                    expected -= 1
                else:
                    await self._on_message(message)

    async def _run(self, pubsub: PubSub) -> None:
        while True:
            try:
                await self._listen(pubsub)
            except _BROKEN as exc:
                log.warning("%s: connection lost (%s): reconnecting", self.name, exc)
            except Exception:  # a bug: start over on a new connection rather than stop
                log.exception("%s failed: reconnecting", self.name)
            finally:
                await _close(pubsub)
            pubsub = await self._reconnect()
            self.reconnects += 1

    async def _reconnect(self) -> PubSub:
        """Subscribe again, with backoff, then run the owner's catch-up."""
        delay = self.reconnect_delay
        while True:
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: nodes apart
            delay = min(delay * 2, self.max_reconnect_delay)
            try:
                pubsub = await self._subscribe()
            except _BROKEN as exc:
                log.warning("%s cannot reconnect yet (%s)", self.name, exc)
                continue
            try:
                if self._on_reconnect is not None:
                    await self._on_reconnect()
            except (*_BROKEN, BloomrError) as exc:  # a store's `unavailable` included
                log.warning("%s cannot catch up yet (%s)", self.name, exc)
                await _close(pubsub)
                continue
            return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.idle_ping)
            if message is not None:
                pinged = False
                await self._on_message(message)
            elif pinged:
                raise TimeoutError("no answer to PING")
            else:
                await pubsub.ping()
                pinged = True


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
