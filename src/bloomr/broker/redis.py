"""The cluster broker: history and fan-out in Redis, shared by every node.

The history's append script (`store/redis_history.py`) PUBLISHes every batch on its
stream's bus channel in the same atomic step that gives it its seqs, so Redis holds one
order per stream for every node. This broker listens to all streams' bus channels (one
pattern subscription) and hands what arrives to this node's handler from one task: each
stream's messages exactly once, in seq order. A gap (a reconnection, a lost publish) is
filled from the history before anything after it is delivered; a repeated seq is
dropped.

Every publish names the epoch of the history it was stored in. A batch in another
epoch than the one this node knows for its stream means the history was lost (Redis
restarted without persistence, FLUSHALL, eviction) and seqs started over: the stream's
bookkeeping starts over too, the handler is told (`on_reset`), and what the new epoch
holds before that batch is filled from seq 0, so nothing new is taken for a repeat."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..model import Message
from ..redis_pubsub import Subscription
from ..store.redis_history import RedisHistory, Seen
from ..store.redis_layout import (
    bus_pattern,
    decode_published,
    published_epoch,
    stream_of_channel,
)
from .base import AppendBatch, BrokerHandler, Capabilities, Published
from .reads import HistoryReads

log = logging.getLogger("bloomr.broker.redis")

_FILL_PAGE = 1000


class Sequencer:
    """What each stream's handler has been given: the history epoch, and the seq and
    ts_ms of the last message delivered (0, 0 before the first of an epoch), per
    stream. Pure bookkeeping; the bus does the reading."""

    def __init__(self) -> None:
        self.last: dict[str, Seen] = {}
        self._retired: dict[str, set[str]] = {}  # epochs a stream's history left behind

    def epoch(self, stream_id: str) -> str | None:
        state = self.last.get(stream_id)
        return None if state is None else state[0]

    def is_retired(self, stream_id: str, epoch: str) -> bool:
        """Whether `epoch` is one the stream's history already left (a late or repeated
        publish of a lost history: nothing to deliver, nothing to reset)."""
        return epoch in self._retired.get(stream_id, ())

    def is_reset(self, stream_id: str, epoch: str) -> bool:
        """Whether `epoch` says the stream's history was lost since what was delivered
        ("" is no epoch: a history without a head tells nothing yet)."""
        known = self.epoch(stream_id)
        return bool(epoch) and known is not None and known != epoch

    def reset(self, stream_id: str, epoch: str) -> None:
        """The history began again in `epoch`: nothing of it was delivered yet."""
        known = self.epoch(stream_id)
        if known:
            self._retired.setdefault(stream_id, set()).add(known)
        self.last[stream_id] = (epoch, 0, 0)

    def seen(self, stream_id: str) -> Seen | None:
        """The last message delivered, for a history read to compare with its own."""
        state = self.last.get(stream_id)
        return state if state is not None and state[1] > 0 else None

    def fresh(self, stream_id: str, messages: list[Message]) -> list[Message]:
        """The messages not yet delivered (a batch is contiguous, so a suffix; call
        after handling a reset, so the epoch is the known one)."""
        state = self.last.get(stream_id)
        if state is None or messages[0].seq > state[1]:
            return messages
        return [m for m in messages if m.seq > state[1]]

    def gap(self, stream_id: str, first_seq: int) -> int | None:
        """The last seq delivered when `first_seq` does not follow it (None: no gap, or
        a stream seen for the first time: what came before is not ours to fill)."""
        state = self.last.get(stream_id)
        return state[1] if state is not None and first_seq > state[1] + 1 else None

    def delivered(self, stream_id: str, epoch: str, messages: list[Message]) -> None:
        self.last[stream_id] = (epoch, messages[-1].seq, messages[-1].ts_ms)

    def forget(self, stream_id: str) -> None:
        """A dropped stream starts again at seq 1."""
        self.last.pop(stream_id, None)
        self._retired.pop(stream_id, None)


class RedisBroker(HistoryReads):
    """Implements Broker on Redis: `publish` is one Lua call per group commit, which
    orders, stores and PUBLISHes; every node, this one included, delivers what Redis
    publishes, which is what gives all nodes one order."""

    capabilities = Capabilities(publishes_on_the_spot=False)  # a round trip to Redis
    history: RedisHistory

    def __init__(
        self, url: str, prefix: str = "bloomr", name: str | None = None, **options: Any
    ) -> None:
        self.history = RedisHistory(url, prefix)
        self.prefix = prefix
        self.filled = 0  # messages delivered from the history rather than from pub/sub
        self.resets = 0  # histories found lost (a new epoch) so far
        self.sequencer = Sequencer()
        self._handler: BrokerHandler | None = None
        self.subscription = Subscription(
            url,
            name or f"bloomr-bus:{prefix}",  # its connection's name in CLIENT LIST
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
        """The name of this broker's pub/sub connection (CLIENT LIST shows it)."""
        return self.subscription.name

    # -- Broker -----------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        await self.subscription.start()

    async def stop(self) -> None:
        await self.subscription.stop()
        self._handler = None

    async def publish(self, batches: Sequence[AppendBatch]) -> list[Published]:
        return await self.history.append(batches, self.sequencer.seen)

    def publish_now(self, batches: Sequence[AppendBatch]) -> list[Published] | None:
        return None

    async def drop(self, stream_id: str) -> None:
        await self.history.drop(stream_id)
        self.sequencer.forget(stream_id)

    # -- delivery -------------------------------------------------------------------------

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message["type"] != "pmessage":
            return
        stream_id = stream_of_channel(self.prefix, message["channel"])
        try:
            epoch = published_epoch(message["data"])
            messages = decode_published(stream_id, message["data"])
        except Exception:  # not from our script: skip it, the seqs tell if it mattered
            log.exception("undecodable publish on %r", message["channel"])
            return
        await self._deliver(stream_id, epoch, messages)

    async def _deliver(self, stream_id: str, epoch: str, messages: list[Message]) -> None:
        """Give the handler what it has not had of `messages`, after whatever it
        missed before them (read from the history)."""
        if not messages or self.sequencer.is_retired(stream_id, epoch):
            return
        if self.sequencer.is_reset(stream_id, epoch):
            self._reset(stream_id, epoch)
        messages = self.sequencer.fresh(stream_id, messages)
        if not messages:
            return
        last = self.sequencer.gap(stream_id, messages[0].seq)
        if last is not None:
            missed = await self._stored_between(stream_id, epoch, last, messages[0].seq)
            self.filled += len(missed)
            messages = missed + messages
        self._hand_over(stream_id, epoch, messages)

    async def _stored_between(
        self, stream_id: str, epoch: str, after: int, before: int
    ) -> list[Message]:
        """Stored messages of `epoch` with after < seq < before. Some seqs may have
        none: messages of a stream without history, or trimmed already (or a history
        lost again since), cannot be filled."""
        found: list[Message] = []
        while True:
            stored_in, page = await self.history.since_seq(stream_id, after, _FILL_PAGE)
            if stored_in != epoch:
                return found  # lost again: its next publish tells
            found += [m for m in page if m.seq < before]
            if len(page) < _FILL_PAGE or page[-1].seq >= before - 1:
                return found
            after = page[-1].seq

    async def _catch_up(self) -> None:
        """After a reconnection: what each stream seen so far published meanwhile, in
        the epoch known, or from the start of a new one (a Redis that restarted without
        its data and was written to already, or that came back from an older snapshot:
        the read compares the history with the last message delivered)."""
        for stream_id in list(self.sequencer.last):
            while (state := self.sequencer.last.get(stream_id)) is not None:
                epoch, last, _ = state
                seen = self.sequencer.seen(stream_id)
                stored_in, page = await self.history.since_seq(stream_id, last, _FILL_PAGE, seen)
                if self.sequencer.is_reset(stream_id, stored_in):
                    self._reset(stream_id, stored_in)
                    continue  # read the new epoch from its start
                if page and stored_in:
                    self.filled += len(page)
                    self._hand_over(stream_id, epoch, page)
                if len(page) < _FILL_PAGE:
                    break

    def _reset(self, stream_id: str, epoch: str) -> None:
        log.warning(
            "the history of stream %s was lost (new epoch %s): its subscribers are told "
            "and go on from the new history's first message",
            stream_id,
            epoch,
        )
        self.resets += 1
        self.sequencer.reset(stream_id, epoch)
        if self._handler is None:
            return
        try:
            self._handler.on_reset(stream_id, epoch)
        except Exception:
            log.exception("bus handler failed on the reset of %s", stream_id)

    def _hand_over(self, stream_id: str, epoch: str, messages: list[Message]) -> None:
        self.sequencer.delivered(stream_id, epoch, messages)
        if self._handler is None:
            return
        try:
            self._handler.on_messages(stream_id, messages)
        except Exception:  # one handler bug must not stop the bus for every stream
            log.exception("bus handler failed on messages of %s", stream_id)
