"""The broker contract: a stream's messages are ordered, stored and fanned out to every
node as one atomic step, and read back for replays and pages.

Like Centrifugo's `Broker`, one contract carries both halves, because they are one
thing: the order the history holds is the order every subscriber sees. The hub calls
`publish` and the reads; the broker calls the hub back (`BrokerHandler`) with what to
deliver on this node. Optional abilities are declared in `Capabilities`, never found
out by looking at a class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..idempotency import Repeat
from ..model import Message
from ..store.base import AppendBatch, Appended, HistoryGap, HistoryQuery, ReplaySlice

__all__ = [
    "AppendBatch",
    "Broker",
    "BrokerHandler",
    "Capabilities",
    "HistoryGap",
    "HistoryQuery",
    "Published",
    "Repeat",
    "ReplaySlice",
]

Published = Appended  # one batch's outcome: its messages, a Repeat, or a BloomrError


@dataclass(frozen=True, slots=True)
class Capabilities:
    # `publish_now` can store and deliver a publish before returning, on the event
    # loop's thread: one node, a store that commits on the spot
    publishes_on_the_spot: bool


class BrokerHandler(Protocol):
    """What a broker delivers to on this node (the hub)."""

    def on_messages(self, stream_id: str, messages: list[Message]) -> None:
        """A contiguous run of one stream's messages, every channel, in seq order: each
        message of the stream is handed over once per node, in order, after every
        message before it (a gap is filled before what follows it is handed over).
        Called from one task (or, for `publish_now`, from the caller); must not block."""
        ...

    def on_reset(self, stream_id: str, epoch: str) -> None:
        """The stream's history was lost (a Redis restarted without persistence, flushed
        or evicting) and began again in `epoch`: its seqs start over. Called, from the
        same task as `on_messages`, after every message of the lost history this node
        was handed and before the first one of `epoch`; from then on `on_messages`
        hands over every message of `epoch`, from its seq 1 (those still stored, when
        the loss was noticed late), in order. Never called by a broker whose history
        cannot be lost behind its back (the embedded one). Must not block."""
        ...


class Broker(Protocol):
    capabilities: Capabilities

    async def start(self, handler: BrokerHandler) -> None:
        """Returns once listening: everything published from then on, by any node,
        reaches `handler`. Raises if the backend cannot be reached now."""
        ...

    async def stop(self) -> None: ...

    async def publish(self, batches: Sequence[AppendBatch]) -> list[Published]:
        """Order, store and fan out, in the given order. Each batch gets the next seqs
        of its stream, contiguous and atomic (all stored and delivered, or none), a
        UUIDv7 id each, and a timestamp never below the stream's previous one. Saving to
        history and fanning out are atomic per stream: no node can see a message that is
        not stored, nor miss one that is. Returns once the batches are durable (as far
        as the backend is); a batch that cannot be taken gets a BloomrError in its slot
        and the others are unaffected. A batch of a stream without history (`keep`
        False) is ordered and fanned out, never stored. A batch with an idempotency
        key is looked up and recorded in the same atomic step as its append (see
        `AppendBatch`), so across nodes one request with a key is stored once: a repeat
        gets `Repeat` with the first one's ids and is neither stored nor fanned out."""
        ...

    def publish_now(self, batches: Sequence[AppendBatch]) -> list[Published] | None:
        """`publish`, done before returning and delivered to this node's handler before
        returning, when the broker can (see `Capabilities`; nothing else may be under
        way); None when it cannot, and then nothing was stored."""
        ...

    async def replay(self, query: HistoryQuery) -> ReplaySlice:
        """`HistoryStore.replay`: planned from one snapshot whose head seq is where the
        hand-over happens: every message with a higher seq reaches the handler after
        this snapshot was taken."""
        ...

    async def head(self, stream_id: str) -> tuple[int, str]:
        """The stream's last seq and its history's epoch now (`(0, "")` before its first
        publish): every message published after this read has a higher seq in that
        epoch, or another epoch."""
        ...

    async def page(self, query: HistoryQuery) -> list[Message]:
        """`HistoryStore.page`: a page of a channel's history, oldest first."""
        ...

    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        """Delete messages older than `min_ts_ms` or beyond the newest `max_messages`;
        how many went. Seqs are never reused."""
        ...

    async def drop(self, stream_id: str) -> None:
        """Forget a stream: its history, its sequence, and what was delivered of it."""
        ...
