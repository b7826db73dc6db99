"""Writing to a client at the pace it reads: the live loop's wait for a slow client,
and the replay, written a chunk at a time and read from history a page at a time, the
next page only once the client has taken the one before.

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
STALL_SECONDS = 10.0

# The page of a replay after a message of it (the last one written): [] at its end.
ReadNext = Callable[[Message], Awaitable[list[Message]]]


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
    """The replay still to write: one page of it in memory, the next read (`read_next`)
    only once the client has taken that one, so a connection holds about a page of its
    replay however large the replay is."""

    def __init__(self, page: list[Message], count: int, read_next: ReadNext) -> None:
        self._queue = deque(page)
        page.clear()  # the caller's list: only what is held stays in memory
        self._held = sum(m.size for m in self._queue)
        self._mean = self._held // max(len(self._queue), 1)  # a message's size, roughly
        self._left = count  # messages not written yet (fewer, if retention trims some)
        self._read_next = read_next
        self._last: Message | None = None

    @property
    def unsent(self) -> int:
        """Bytes of the replay still to write: those held, and an estimate of the rest."""
        return self._held + max(self._left - len(self._queue), 0) * self._mean

    async def chunk(self) -> list[Message]:
        """The next messages to write (up to REPLAY_CHUNK bytes); [] at the end."""
        if not self._queue and self._left > 0 and self._last is not None:
            page = await self._read_next(self._last)
            self._queue.extend(page)
            self._held = sum(m.size for m in page)
            self._mean = self._held // max(len(page), 1)
            self._left = self._left if page else 0  # what is left was trimmed meanwhile
        chunk: list[Message] = []
        size = 0
        while self._queue and (not chunk or size < REPLAY_CHUNK):
            message = self._queue.popleft()
            chunk.append(message)
            size += message.size
        if chunk:
            self._held -= size
            self._left -= len(chunk)
            self._last = chunk[-1]
        return chunk


async def send_replay(
    client: Paced,
    sub: Subscription,
    page: list[Message],
    count: int,
    read_next: ReadNext,
    include_metadata: bool,
    stall: float,
) -> tuple[int, str | None]:
    """Write a replay of `count` messages, its first `page` given and each next one read
    when the client has taken the one before, a chunk at a time, each when the client
    has room for it (the caller's `page` list is emptied: written messages are let go
    of as they leave). What is still to be written counts against the connection's
    backlog with what the hub holds for it meanwhile. Returns how many were written,
    and the last one's id."""
    replay = _Replay(page, count, read_next)
    written, last = 0, None
    while chunk := await replay.chunk():
        written, last = written + len(chunk), chunk[-1].id
        await client.send_messages(chunk, True, include_metadata)
        over = replay.unsent + sub.queued_bytes > sub.max_bytes
        await drain(client, sub, stall if over else None)
    return written, last
