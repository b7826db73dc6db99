"""Cluster fan-out through Redis pub/sub.

The history's append script PUBLISHes every batch on its stream's bus channel in the
same atomic step that gives it its seqs, so Redis holds one order per stream for every
node. This bus listens to all streams' bus channels (one pattern subscription) and
hands what arrives to this node's handler from one task: each stream's messages exactly
once, in seq order. A gap (a reconnection, a lost publish) is filled from the history
before anything after it is delivered; a repeated seq is dropped."""

from __future__ import annotations

import logging
from typing import Any

from ..model import Message
from ..redis_pubsub import Subscription
from ..store.redis_history import (
    RedisHistory,
    bus_pattern,
    decode_published,
    stream_of_channel,
)
from .base import BusHandler

log = logging.getLogger("bloomr.bus.redis")

_FILL_PAGE = 1000


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
        self, url: str, history: RedisHistory, prefix: str = "bloomr", **options: Any
    ) -> None:
        if prefix != history.prefix:
            raise ValueError("the bus must listen where its history publishes (same prefix)")
        self.history = history
        self.prefix = prefix
        self.filled = 0  # messages delivered from the history rather than from pub/sub
        self.sequencer = Sequencer()
        self._handler: BusHandler | None = None
        self.subscription = Subscription(
            url,
            f"bloomr-bus:{prefix}",
            self._dispatch,
            patterns=[bus_pattern(prefix)],
            on_reconnect=self._catch_up,
            **options,
        )

    @property
    def reconnects(self) -> int:
        return self.subscription.reconnects

    @property
    def client_name(self) -> str:
        """The name of this bus's Redis connections (CLIENT LIST shows it)."""
        return self.subscription.name

    # -- Bus --------------------------------------------------------------------------

    async def start(self, handler: BusHandler) -> None:
        """Returns once subscribed: whatever is published from then on reaches the
        handler. Raises if Redis cannot be reached now; later outages are retried."""
        self._handler = handler
        await self.subscription.start()

    async def stop(self) -> None:
        await self.subscription.stop()
        self._handler = None

    async def publish(self, stream_id: str, messages: list[Message]) -> None:
        """Nothing to do: the history's append script already published these messages,
        atomically with ordering and storing them. Every node, this one included, gets
        them from Redis, which is what gives all nodes one order."""

    def forget(self, stream_id: str) -> None:
        self.sequencer.forget(stream_id)

    # -- delivery -------------------------------------------------------------------------

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] != "pmessage":
            return
        stream_id = stream_of_channel(self.prefix, message["channel"])
        try:
            messages = decode_published(stream_id, message["data"])
        except Exception:  # not from our script: skip it, the seqs tell if it mattered
            log.exception("undecodable publish on %r", message["channel"])
            return
        await self._deliver(stream_id, messages)

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
