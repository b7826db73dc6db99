"""A replay written at the client's pace (`transports/pacing.py`): a page in memory, the
next read from history only once the client has taken the one before, the end where
the history has no more of it."""

from __future__ import annotations

import asyncio

import pytest

from bloomr.model import Message
from bloomr.subscription import SlowConsumer, Subscription
from bloomr.transports.pacing import send_replay

STREAM = "dwd23RWdwE"
KIB = 1024


def msg(seq: int, size: int = 100 * KIB) -> Message:
    return Message(f"id-{seq:08d}", STREAM, "", 1_700_000_000_000 + seq, seq, b"1" * size)


def sub(max_bytes: int = 1 << 40) -> Subscription:
    return Subscription(STREAM, "", "tok_1", max_messages=1_000_000, max_bytes=max_bytes)


class Client:
    """Writes down what it is sent; stops being writable after each write until the test
    lets it drain (`stalled`), or never does (`stuck`)."""

    def __init__(self, log: list[str], stalled: bool = False, stuck: bool = False) -> None:
        self.log, self.stalled, self.stuck = log, stalled, stuck
        self.writable = True
        self.waiting = asyncio.Event()  # it is waited on
        self.go = asyncio.Event()

    async def drained(self) -> None:
        self.waiting.set()
        if self.stuck:
            await asyncio.Future()
        await self.go.wait()
        self.go.clear()
        self.writable = True

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None:
        assert replayed
        self.log.append(f"sent {messages[0].seq}-{messages[-1].seq}")
        self.writable = not self.stalled


class History:
    """The pages after the first, 3 messages each, as `page` reads them."""

    def __init__(self, messages: list[Message], log: list[str], left: int | None = None):
        self.messages, self.log = messages, log
        self.left = len(messages) if left is None else left  # fewer: trimmed meanwhile

    async def read_next(self, last: Message) -> list[Message]:
        self.log.append(f"read after {last.seq}")
        page = [m for m in self.messages[: self.left] if m.seq > last.seq][:3]
        return page


@pytest.mark.timeout(10)
async def test_each_page_is_read_after_the_one_before_was_written() -> None:
    log: list[str] = []
    messages = [msg(seq) for seq in range(1, 10)]
    history = History(messages, log)
    written = await send_replay(Client(log), sub(), messages[:3], 9, history.read_next, False, 1)
    assert written == (9, messages[-1].id)
    # 100 KiB each: a 256 KiB chunk is 3 of them, here a page
    assert log == ["sent 1-3", "read after 3", "sent 4-6", "read after 6", "sent 7-9"]


@pytest.mark.timeout(10)
async def test_no_page_is_read_while_the_client_has_not_taken_the_last() -> None:
    log: list[str] = []
    messages = [msg(seq) for seq in range(1, 7)]
    client = Client(log, stalled=True)
    history = History(messages, log)
    task = asyncio.create_task(
        send_replay(client, sub(), messages[:3], 6, history.read_next, False, 1)
    )
    await client.waiting.wait()
    assert log == ["sent 1-3"]  # stalled: nothing more is read
    client.waiting.clear()
    client.go.set()
    await client.waiting.wait()
    assert log == ["sent 1-3", "read after 3", "sent 4-6"]
    client.go.set()
    assert await task == (6, messages[-1].id)


@pytest.mark.timeout(10)
async def test_a_replay_trimmed_meanwhile_ends_with_what_the_history_still_held() -> None:
    log: list[str] = []
    messages = [msg(seq) for seq in range(1, 10)]
    history = History(messages, log, left=5)
    written = await send_replay(Client(log), sub(), messages[:3], 9, history.read_next, False, 1)
    assert written == (5, messages[4].id)
    assert log == ["sent 1-3", "read after 3", "sent 4-5", "read after 5"]


@pytest.mark.timeout(10)
async def test_the_replay_still_to_come_counts_against_the_backlog() -> None:
    """A client that reads nothing of a replay larger than its bound is a slow consumer
    after `stall` seconds, although only a page of the replay was ever held."""
    log: list[str] = []
    big = [msg(seq, 1024 * KIB) for seq in range(1, 3)]
    client = Client(log, stalled=True, stuck=True)
    history = History(big, log)
    with pytest.raises(SlowConsumer):
        await send_replay(client, sub(16 * 1024 * KIB), big[:1], 48, history.read_next, False, 0.1)
    assert log == ["sent 1-1"]
