"""Writing to a client at the pace it reads: the live loop's wait for a slow client,
and the replay, written a chunk at a time and held in memory only a few chunks ahead
(the rest is read again from history as the client takes it).

Everything queued for one connection counts against its backlog (SPEC §3): a client
that has more than that waiting and reads nothing for `stall` seconds is a slow
consumer, whether what waits is live messages or the rest of its replay."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from ..model import Message
from ..subscription import SlowConsumer, Subscription

# Bytes of replay written to a client before looking at its buffer again: the replay
# reaches the transport as the client takes it, never all at once.
REPLAY_CHUNK = 256 * 1024
# Bytes of a replay held in memory at most (beyond the message being written): the
# rest is read again from history when the client gets to it. A few chunks, so that a
# client that reads does not wait for each read; a large replay to many stalled
# clients is not held once per client.
REPLAY_HELD = 4 * REPLAY_CHUNK
STALL_SECONDS = 10.0

# The next messages of a channel after an id, at most `limit` (the hub's `page`).
ReadAfter = Callable[[str, int], Awaitable[list[Message]]]


class Paced(Protocol):
    """What pacing needs of a session's `Client`."""

    @property
    def writable(self) -> bool: ...

    async def drained(self) -> None: ...

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None: ...


async def drain(client: Paced, sub: Subscription, stall: float | None = None) -> None:
    """Wait for a client that is behind, but no longer than its subscription lasts: a
    client that stopped reading must be cut off when its backlog overflows, not when
    (if ever) its socket drains. With `stall`, a client that does not drain within
    that many seconds is a slow consumer too."""
    if client.writable:
        return
    drained = asyncio.ensure_future(client.drained())
    ended = sub.ended()
    try:
        done, _ = await asyncio.wait(
            (drained, ended), timeout=stall, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        drained.cancel()
    sub.check()
    if not done:
        sub.cut_off()
        raise SlowConsumer()


class _Replay:
    """The replay still to write: at most about `keep` bytes of it in memory, the rest
    read again, page by page, up to the last message of the snapshot."""

    def __init__(self, messages: list[Message], keep: int, read_after: ReadAfter) -> None:
        self.unsent = sum(m.size for m in messages)
        self._last_seq = messages[-1].seq if messages else 0
        self._page = max(1, keep * len(messages) // max(self.unsent, 1))  # messages a page
        self._keep = keep
        self._read_after = read_after
        self._queue: deque[Message] = deque()
        self._more = self._hold(messages)
        messages.clear()  # the caller's list: only what is held stays in memory

    def _hold(self, messages: list[Message]) -> bool:
        """Hold the first of `messages` up to `keep` bytes (and none past the snapshot);
        True while some of the replay is neither held nor written."""
        held = 0
        for message in messages:
            if message.seq > self._last_seq:
                return False
            if held and held + message.size > self._keep:
                return True
            held += message.size
            self._queue.append(message)
        return bool(messages) and messages[-1].seq < self._last_seq

    async def chunk(self, after: str | None) -> list[Message]:
        """The next messages to write (up to REPLAY_CHUNK bytes); [] at the end."""
        if not self._queue and self._more and after is not None:
            self._more = self._hold(await self._read_after(after, self._page))
        chunk: list[Message] = []
        size = 0
        while self._queue and (not chunk or size < REPLAY_CHUNK):
            message = self._queue.popleft()
            chunk.append(message)
            size += message.size
        self.unsent -= size
        return chunk


async def send_replay(
    client: Paced,
    sub: Subscription,
    messages: list[Message],
    read_after: ReadAfter,
    include_metadata: bool,
    stall: float,
) -> None:
    """Write the replay a chunk at a time, each when the client has room for it (the
    caller's `messages` list is emptied: written messages are let go of as they
    leave). What is still to be written counts against the connection's backlog with
    what the hub holds for it meanwhile."""
    replay = _Replay(messages, min(REPLAY_HELD, sub.max_bytes), read_after)
    last: str | None = None
    while chunk := await replay.chunk(last):
        last = chunk[-1].id
        await client.send_messages(chunk, True, include_metadata)
        over = replay.unsent + sub.queued_bytes > sub.max_bytes
        await drain(client, sub, stall if over else None)
