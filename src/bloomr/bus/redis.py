"""Cluster fan-out through Redis pub/sub.

The history's append script PUBLISHes every batch on its stream's bus channel in the
same atomic step that gives it its seqs, so Redis holds one order per stream for every
node. This bus listens to all streams' bus channels (one pattern subscription) and to
a control channel, on one pub/sub connection, and hands what arrives to this node's
handler from one task: each stream's messages exactly once, in seq order. A gap (a
reconnection, a lost publish) is filled from the history before anything after it is
delivered; a repeated seq is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any, get_args

import orjson
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..model import Message
from ..store.redis_history import (
    RedisHistory,
    bus_pattern,
    decode_published,
    stream_of_channel,
)
from .base import BusHandler, ControlEvent, ControlKind

log = logging.getLogger("bloomr.bus.redis")

_FILL_PAGE = 1000
_CONTROL_KINDS = frozenset(get_args(ControlKind))


def control_channel(prefix: str) -> str:
    return f"{prefix}:control"


def encode_control(event: ControlEvent) -> bytes:
    return orjson.dumps({"kind": event.kind, "target": event.target})


def decode_control(payload: bytes) -> ControlEvent | None:
    """None for anything that is not a control event this version knows."""
    try:
        doc = orjson.loads(payload)
        kind, target = doc["kind"], doc["target"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if kind not in _CONTROL_KINDS or not isinstance(target, str):
        return None
    return ControlEvent(kind, target)


class Sequencer:
    """What each stream's handler has been given: the last seq delivered per stream.
    Pure bookkeeping; the bus does the reading."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def fresh(self, stream_id: str, messages: list[Message]) -> list[Message]:
        """The messages not yet delivered (a batch is contiguous, so a suffix)."""
        last = self.last.get(stream_id)
        if last is None or messages[0].seq > last:
            return messages
        return [m for m in messages if m.seq > last]

    def gap(self, stream_id: str, first_seq: int) -> int | None:
        """The last seq delivered when `first_seq` does not follow it (None: no gap, or
        a stream seen for the first time: what came before is not ours to fill)."""
        last = self.last.get(stream_id)
        return last if last is not None and first_seq > last + 1 else None

    def delivered(self, stream_id: str, messages: list[Message]) -> None:
        self.last[stream_id] = messages[-1].seq

    def forget(self, stream_id: str) -> None:
        """A dropped stream starts again at seq 1."""
        self.last.pop(stream_id, None)


class RedisBus:
    """Implements Bus over Redis pub/sub, for a cluster whose history is a RedisHistory
    on the same Redis and prefix."""

    def __init__(
        self,
        url: str,
        history: RedisHistory,
        prefix: str = "bloomr",
        *,
        reconnect_delay: float = 0.05,
        max_reconnect_delay: float = 5.0,
        idle_ping: float = 5.0,
    ) -> None:
        if prefix != history.prefix:
            raise ValueError("the bus must listen where its history publishes (same prefix)")
        self.url = url
        self.history = history
        self.prefix = prefix
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.idle_ping = idle_ping
        self.reconnects = 0  # how many times the pub/sub connection was made again
        self.filled = 0  # messages delivered from the history rather than from pub/sub
        self.sequencer = Sequencer()
        self._handler: BusHandler | None = None
        self._client: aioredis.Redis | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def client_name(self) -> str:
        """The name of this bus's Redis connections (CLIENT LIST shows it)."""
        return f"bloomr-bus:{self.prefix}"

    # -- Bus --------------------------------------------------------------------------

    async def start(self, handler: BusHandler) -> None:
        """Returns once subscribed: whatever is published from then on reaches the
        handler. Raises if Redis cannot be reached now; later outages are retried."""
        self._handler = handler
        # No retries inside the client: this bus reconnects itself, so that it knows
        # when it did and can fill what it missed meanwhile.
        self._client = aioredis.Redis.from_url(
            self.url, retry=Retry(NoBackoff(), 0), client_name=self.client_name
        )
        try:
            pubsub = await self._subscribe()
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._run(pubsub), name="bloomr-redis-bus")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._handler = None

    async def publish(self, stream_id: str, messages: list[Message]) -> None:
        """Nothing to do: the history's append script already published these messages,
        atomically with ordering and storing them. Every node, this one included, gets
        them from Redis, which is what gives all nodes one order."""

    async def control(self, event: ControlEvent) -> None:
        """Publish to every node, this one included (it hears it back from Redis)."""
        assert self._client is not None, "bus is not started"
        await self._client.publish(control_channel(self.prefix), encode_control(event))

    # -- the connection -----------------------------------------------------------------

    async def _subscribe(self) -> PubSub:
        """A pub/sub connection subscribed to the control channel and every stream,
        returned once Redis confirmed the pattern: from then on nothing is missed."""
        assert self._client is not None
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(control_channel(self.prefix))
            await pubsub.psubscribe(bus_pattern(self.prefix))
            await self._confirmed(pubsub)
        except BaseException:
            await _close(pubsub)
            raise
        return pubsub

    async def _confirmed(self, pubsub: PubSub) -> None:
        """Wait for the pattern's confirmation; control events may come first (the
        pattern is asked for last, so no stream message can)."""
        async with asyncio.timeout(max(self.idle_ping, 1.0)):
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                if message["type"] == "psubscribe":
                    return
                await self._dispatch(message)

    async def _run(self, pubsub: PubSub) -> None:
        while True:
            try:
                await self._listen(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis bus connection lost (%s): reconnecting", exc)
            except Exception:  # a bug: start over on a new connection rather than stop
                log.exception("redis bus failed: reconnecting")
            finally:
                await _close(pubsub)
            pubsub = await self._reconnect()
            self.reconnects += 1

    async def _reconnect(self) -> PubSub:
        """Subscribe again, with backoff, then fill what every known stream missed."""
        delay = self.reconnect_delay
        while True:
            await asyncio.sleep(delay * (0.5 + random.random()))  # jitter: nodes apart
            try:
                pubsub = await self._subscribe()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis bus cannot reconnect yet (%s)", exc)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            try:
                await self._catch_up()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("redis bus cannot catch up yet (%s)", exc)
                await _close(pubsub)
                delay = min(delay * 2, self.max_reconnect_delay)
                continue
            return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        """Dispatch until the connection fails. A connection quiet for `idle_ping` gets
        a PING; quiet for another `idle_ping` it is taken for dead (a peer that vanished
        without closing it would otherwise be waited on forever)."""
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=self.idle_ping)
            if message is not None:
                pinged = False
                await self._dispatch(message)
            elif pinged:
                raise TimeoutError("no answer to PING")
            else:
                await pubsub.ping()
                pinged = True

    # -- delivery -------------------------------------------------------------------------

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pmessage":
            stream_id = stream_of_channel(self.prefix, message["channel"])
            try:
                messages = decode_published(stream_id, message["data"])
            except Exception:  # not from our script: skip it, the seqs tell if it mattered
                log.exception("undecodable publish on %r", message["channel"])
                return
            await self._deliver(stream_id, messages)
        elif kind == "message":
            event = decode_control(message["data"])
            if event is not None:
                self._on_control(event)

    async def _deliver(self, stream_id: str, messages: list[Message]) -> None:
        """Give the handler what it has not had of `messages`, after whatever it
        missed before them (read from the history)."""
        messages = self.sequencer.fresh(stream_id, messages) if messages else messages
        if not messages:
            return
        last = self.sequencer.gap(stream_id, messages[0].seq)
        if last is not None:
            missed = await self._stored_between(stream_id, last, messages[0].seq)
            self.filled += len(missed)
            messages = missed + messages
        self._hand_over(stream_id, messages)

    async def _stored_between(self, stream_id: str, after: int, before: int) -> list[Message]:
        """Stored messages with after < seq < before. Some seqs may have none: messages
        of a stream without history, or trimmed already, cannot be filled."""
        found: list[Message] = []
        while True:
            page = await self.history.since_seq(stream_id, after, _FILL_PAGE)
            found += [m for m in page if m.seq < before]
            if len(page) < _FILL_PAGE or page[-1].seq >= before - 1:
                return found
            after = page[-1].seq

    async def _catch_up(self) -> None:
        """After a reconnection: what each stream seen so far published meanwhile."""
        for stream_id in list(self.sequencer.last):
            while (last := self.sequencer.last.get(stream_id)) is not None:
                page = await self.history.since_seq(stream_id, last, _FILL_PAGE)
                if page:
                    self.filled += len(page)
                    self._hand_over(stream_id, page)
                if len(page) < _FILL_PAGE:
                    break

    def _hand_over(self, stream_id: str, messages: list[Message]) -> None:
        self.sequencer.delivered(stream_id, messages)
        if self._handler is None:
            return
        try:
            self._handler.on_messages(stream_id, messages)
        except Exception:  # one handler bug must not stop the bus for every stream
            log.exception("bus handler failed on messages of %s", stream_id)

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind == "stream_deleted":
            self.sequencer.forget(event.target)
        if self._handler is None:
            return
        try:
            self._handler.on_control(event)
        except Exception:
            log.exception("bus handler failed on %r", event)


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()  # type: ignore[no-untyped-call]
