"""One subscriber's live queue and the replay -> live hand-over bookkeeping.

The hub registers a Subscription *before* it reads the replay from the store, so every
message committed after that read is certain to be offered here. Messages offered
while the replay is still being read and sent are held; `go_live(head_seq)` then drops
the ones the replay snapshot already covered (seq <= head_seq). From then on the
subscription only ever yields seqs above the last one it yielded: no gap, no
duplicate, in order. The queue is bounded: past its limits the subscriber is a slow
consumer and is cut off, so it can never hold back the others.

A history that was lost (`reset`) starts its seqs over: the queue keeps a mark where
the new history begins, the floor starts again below its first seq, and the consumer
is handed a `history_reset` warning at the mark, after the old history's messages and
before the new one's. A subscriber still in its replay phase keeps the marks until
`go_live`, where its snapshot's epoch tells which of the queued messages it covered."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .errors import BloomrError, warning
from .model import Message

HISTORY_RESET = warning(
    "history_reset",
    "the stream's history was lost on the server (its store restarted without its data): "
    "messages before this point cannot be replayed any more; new messages follow",
)


class Delivery:
    """Messages of one stream and channel handed to every subscriber of that channel at
    once, so an encoding (say, a websocket frame of the whole batch) is built once and
    shared by all of them."""

    __slots__ = ("messages", "_encoded")

    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages
        self._encoded: dict[object, bytes] = {}

    def encoded(self, key: object, encode: Callable[[list[Message]], bytes]) -> bytes:
        blob = self._encoded.get(key)
        if blob is None:
            blob = self._encoded[key] = encode(self.messages)
        return blob


class Sink(Protocol):
    """Where a live subscription may write directly, skipping its queue and its task,
    while the client keeps up."""

    @property
    def writable(self) -> bool: ...

    def write(self, delivery: Delivery) -> None: ...


class SlowConsumer(Exception):
    """The subscriber fell further behind than its backlog allows."""


class SubscriptionClosed(Exception):
    def __init__(self, error: BloomrError) -> None:
        super().__init__(error.message)
        self.error = error


class Subscription:
    def __init__(
        self,
        stream_id: str,
        channel: str,
        token_id: str | None,
        *,
        max_messages: int,
        max_bytes: int,
    ) -> None:
        self.stream_id = stream_id
        self.channel = channel
        self.token_id = token_id
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._pending: deque[Message] = deque()
        self._bytes = 0
        self._floor: int | None = None  # None: replay under way, hold everything
        self._error: BloomrError | None = None
        self._overflow = False
        self._wakeup = asyncio.Event()
        self._sink: Sink | None = None
        self._holding = False  # the consumer task holds a taken batch not yet written
        self.expiry: asyncio.TimerHandle | None = None  # ends it when its token expires
        self._ended: asyncio.Future[None] | None = None
        # history resets: [queue position, new epoch], oldest first; positions count
        # the messages queued before each mark
        self._marks: deque[list[Any]] = deque()
        self._warnings: list[dict[str, Any]] = []  # due now, for `take_warnings`
        self.epoch: str | None = None  # the epoch the floor counts in (None: unknown)

    @property
    def live(self) -> bool:
        return self._floor is not None

    @property
    def overflowed(self) -> bool:
        return self._overflow

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def queued_bytes(self) -> int:
        """Bytes of live messages held for the subscriber."""
        return self._bytes

    @property
    def max_bytes(self) -> int:
        """The most bytes held for it before it is a slow consumer."""
        return self._max_bytes

    def offer(self, message: Message) -> None:
        """Called by the hub's fan-out for every message of this stream and channel.
        Never blocks; never raises."""
        if self._overflow or self._error is not None:
            return
        if self._floor is not None and message.seq <= self._floor:
            return  # already replayed or already delivered
        self._pending.append(message)
        self._bytes += message.size
        if len(self._pending) > self._max_messages or self._bytes > self._max_bytes:
            self._overflow = True
            self._pending.clear()
            self._bytes = 0
            self._end()
        self._wakeup.set()

    def deliver(self, delivery: Delivery) -> None:
        """The hub's fan-out. Written straight to the sink when nothing is waiting to be
        written before it (order) and the client keeps up; queued otherwise."""
        messages = delivery.messages
        floor = self._floor
        if (
            self._sink is not None
            and floor is not None
            and not self._pending
            and not self._marks
            and not self._warnings
            and not self._holding
            and self._error is None
            and not self._overflow
            and self._sink.writable
        ):
            if messages[0].seq > floor:
                self._sink.write(delivery)
                self._floor = messages[-1].seq
                return
            fresh = [m for m in messages if m.seq > floor]
            if fresh:
                self.deliver(Delivery(fresh))
            return
        for message in messages:
            self.offer(message)

    def attach(self, sink: Sink) -> None:
        """Let live deliveries go straight to `sink` (call after go_live)."""
        self._sink = sink

    def go_live(self, head_seq: int, epoch: str | None = None) -> None:
        """The replay covered every message up to `head_seq` of the history's `epoch`
        (the snapshot's): drop those from the queue. With resets queued, the messages
        before the mark of the snapshot's epoch are older than the snapshot (dropped
        too), and those after a later mark are all newer (kept)."""
        covered = [i for i, mark in enumerate(self._marks) if epoch and mark[1] == epoch]
        if covered:
            last = covered[-1]
            self._drop_first(self._marks[last][0])
            for _ in range(last + 1):
                self._marks.popleft()
        end = self._marks[0][0] if self._marks else len(self._pending)
        dropped = 0
        while dropped < end and self._pending[0].seq <= head_seq:
            self._bytes -= self._pending.popleft().size
            dropped += 1
        self._shift_marks(dropped)
        # incoming messages are of the newest epoch: past a queued reset, from its start
        self._floor = 0 if self._marks else head_seq
        self.epoch = self._marks[-1][1] if self._marks else epoch
        if self._pending or self._marks:
            self._wakeup.set()

    def cut_off(self) -> None:
        """The subscriber is a slow consumer though its queue did not overflow (it read
        nothing of a replay larger than its backlog): end it as one."""
        if self._error is None and not self._overflow:
            self._overflow = True
            self._pending.clear()
            self._bytes = 0
            self._end()
            self._wakeup.set()

    def reset(self, epoch: str) -> None:
        """The stream's history was lost and began again in `epoch` (seqs start over):
        mark the queue where the new history starts, so the consumer is warned there,
        and let the new history's messages through from its first seq. A floor already
        counted in `epoch` (a snapshot read after the loss) stays."""
        if self._error is not None or self._overflow:
            return
        self._marks.append([len(self._pending), epoch])
        if self._floor is not None and self.epoch != epoch:
            self._floor = 0
        if self._floor is not None:
            self.epoch = epoch
        self._wakeup.set()

    def take_warnings(self) -> list[dict[str, Any]]:
        """Warnings due before the next batch (`history_reset`), in order; sending them
        is the consumer's job, as for messages."""
        warnings, self._warnings = self._warnings, []
        return warnings

    def _drop_first(self, count: int) -> None:
        for _ in range(count):
            self._bytes -= self._pending.popleft().size
        self._shift_marks(count)

    def _shift_marks(self, count: int) -> None:
        for mark in self._marks:
            mark[0] -= count

    def close(self, error: BloomrError) -> None:
        if self._error is None:
            self._error = error
        self._end()
        self._wakeup.set()

    def ended(self) -> asyncio.Future[None]:
        """Resolves when the subscription is closed or overflows: lets a consumer stop
        waiting for a stalled client as soon as it is cut off."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
            if self._error is not None or self._overflow:
                self._ended.set_result(None)
        return self._ended

    def check(self) -> None:
        """Raise if the subscription has ended (SubscriptionClosed or SlowConsumer)."""
        if self._error is not None:
            raise SubscriptionClosed(self._error)
        if self._overflow:
            raise SlowConsumer()

    def _end(self) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)

    def take(self) -> list[Message]:
        """Everything queued, in order; raises when the subscription has ended. The
        caller holds the batch until its next call: deliveries queue behind it."""
        self._holding = False
        self.check()
        if not self.live:
            return []
        if self._marks and self._marks[0][0] == 0:  # a reset is due before anything else
            self._marks.popleft()
            self._warnings.append(HISTORY_RESET)
            return []
        if not self._pending:
            return []
        if self._marks:  # the old history's messages, up to the next reset
            count = self._marks[0][0]
            batch = [self._pending.popleft() for _ in range(count)]
            self._bytes -= sum(m.size for m in batch)
            self._shift_marks(count)
        else:
            batch = list(self._pending)
            self._pending.clear()
            self._bytes = 0
            self._floor = batch[-1].seq  # the floor counts in the newest epoch only
        self._holding = True
        return batch

    async def next_batch(self) -> list[Message]:
        """Wait for live messages (call go_live first)."""
        while True:
            batch = self.take()
            if batch or self._warnings:  # see take_warnings
                return batch
            self._wakeup.clear()
            await self._wakeup.wait()
