"""The replay -> live hand-over bookkeeping (SPEC §2 "The hand-over is exact") and the
bounded backlog (slow consumers)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bloomr.errors import BloomrError
from bloomr.model import Message
from bloomr.subscription import Delivery, SlowConsumer, Subscription, SubscriptionClosed

STREAM = "dwd23RWdwE"


def msg(seq: int, channel: str = "", data: object = None) -> Message:
    payload = orjson.dumps(seq if data is None else data)
    return Message(f"id-{seq:08d}", STREAM, channel, 1_700_000_000_000 + seq, seq, payload)


def sub(max_messages: int = 1_000_000, max_bytes: int = 1 << 40) -> Subscription:
    return Subscription(STREAM, "", "tok_1", max_messages=max_messages, max_bytes=max_bytes)


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


# -- the hand-over, as a property ---------------------------------------------------------


@st.composite
def handovers(draw: st.DrawFn) -> dict[str, object]:
    """A stream of `total` messages, some on the subscribed channel; the subscription is
    registered when the head is `registered`; the replay snapshot is read later, at
    head `head`, and covers the channel's messages after `start`; live offers (every
    channel message after `registered`, including those the snapshot also covers)
    arrive in order, `go_live(head)` comes after `live_at` of them, and the client
    drains its queue at arbitrary points."""
    total = draw(st.integers(min_value=0, max_value=60))
    ours = draw(st.lists(st.booleans(), min_size=total, max_size=total))
    channel = [seq for seq, mine in enumerate(ours, start=1) if mine]
    registered = draw(st.integers(min_value=0, max_value=total))
    head = draw(st.integers(min_value=registered, max_value=total))
    start = draw(st.integers(min_value=0, max_value=head))
    offered = [seq for seq in channel if seq > registered]
    live_at = draw(st.integers(min_value=0, max_value=len(offered)))
    takes = draw(st.lists(st.booleans(), min_size=len(offered) + 1, max_size=len(offered) + 1))
    return {
        "channel": channel,
        "head": head,
        "start": start,
        "offered": offered,
        "live_at": live_at,
        "takes": takes,
    }


@given(handovers())
def test_replay_then_live_is_contiguous_without_duplicates(case: dict[str, object]) -> None:
    channel: list[int] = case["channel"]  # type: ignore[assignment]
    offered: list[int] = case["offered"]  # type: ignore[assignment]
    takes: list[bool] = case["takes"]  # type: ignore[assignment]
    head, start, live_at = case["head"], case["start"], case["live_at"]
    assert isinstance(head, int) and isinstance(start, int) and isinstance(live_at, int)

    s = sub()
    replayed = [seq for seq in channel if start < seq <= head]  # what the snapshot holds
    delivered: list[int] = []
    for i, seq in enumerate(offered):
        if i == live_at:
            s.go_live(head)
        s.offer(msg(seq))
        if takes[i]:
            batch = s.take()
            assert s.live or batch == []  # nothing leaves before the replay is over
            delivered += seqs(batch)
    if len(offered) == live_at:
        s.go_live(head)
    delivered += seqs(s.take())

    assert replayed + delivered == [seq for seq in channel if seq > start]
    assert s.take() == []
    assert s.backlog == 0


def test_messages_held_during_replay_are_released_by_go_live() -> None:
    s = sub()
    for seq in (4, 5, 6, 7):
        s.offer(msg(seq))
    assert not s.live
    assert s.take() == []
    assert s.backlog == 4
    s.go_live(5)
    assert s.live
    assert seqs(s.take()) == [6, 7]
    s.offer(msg(7))  # a repeat of a delivered message is dropped
    s.offer(msg(8))
    assert seqs(s.take()) == [8]


def test_go_live_with_nothing_queued_then_live_messages() -> None:
    s = sub()
    s.go_live(10)
    assert s.take() == []
    s.offer(msg(3))  # covered by the replay
    s.offer(msg(11))
    s.offer(msg(12))
    assert seqs(s.take()) == [11, 12]


async def test_next_batch_waits_for_a_live_message() -> None:
    s = sub()
    s.go_live(0)
    waiter = asyncio.create_task(s.next_batch())
    await asyncio.sleep(0)
    assert not waiter.done()
    s.offer(msg(1))
    s.offer(msg(2))
    assert seqs(await asyncio.wait_for(waiter, 5)) == [1, 2]


async def test_next_batch_is_woken_by_go_live() -> None:
    s = sub()
    s.offer(msg(1))
    s.offer(msg(2))
    waiter = asyncio.create_task(s.next_batch())
    await asyncio.sleep(0)
    assert not waiter.done()
    s.go_live(1)
    assert seqs(await asyncio.wait_for(waiter, 5)) == [2]


# -- slow consumers -----------------------------------------------------------------------


def test_overflow_by_count_is_a_slow_consumer() -> None:
    s = sub(max_messages=3)
    s.go_live(0)
    for seq in (1, 2, 3):
        s.offer(msg(seq))
    assert seqs(s.take()) == [1, 2, 3]  # exactly at the limit is fine
    for seq in (4, 5, 6, 7):
        s.offer(msg(seq))
    with pytest.raises(SlowConsumer):
        s.take()
    s.offer(msg(8))  # ignored from now on
    with pytest.raises(SlowConsumer):
        s.take()
    assert s.backlog == 0  # the backlog is freed at once


def test_overflow_by_bytes_is_a_slow_consumer() -> None:
    big = msg(1, data="x" * 1000)
    s = sub(max_bytes=3 * big.size)
    s.go_live(0)
    for seq in (1, 2, 3):
        s.offer(msg(seq, data="x" * 1000))
    assert seqs(s.take()) == [1, 2, 3]
    for seq in (4, 5, 6, 7):
        s.offer(msg(seq, data="x" * 1000))
    with pytest.raises(SlowConsumer):
        s.take()


def test_overflow_while_the_replay_is_sent() -> None:
    s = sub(max_messages=2)
    for seq in (1, 2, 3):
        s.offer(msg(seq))
    s.go_live(0)
    with pytest.raises(SlowConsumer):
        s.take()


def test_messages_dropped_by_go_live_free_their_room() -> None:
    one = msg(1, data="x" * 1000).size
    s = sub(max_messages=3, max_bytes=3 * one)
    for seq in (1, 2, 3):
        s.offer(msg(seq, data="x" * 1000))
    s.go_live(3)  # all three were replayed
    for seq in (4, 5, 6):
        s.offer(msg(seq, data="x" * 1000))
    assert seqs(s.take()) == [4, 5, 6]


async def test_slow_consumer_wakes_a_waiter() -> None:
    s = sub(max_messages=1)
    s.go_live(0)
    waiter = asyncio.create_task(s.next_batch())
    await asyncio.sleep(0)
    s.offer(msg(1))
    s.offer(msg(2))  # the second overflows before the waiter runs
    with pytest.raises(SlowConsumer):
        await asyncio.wait_for(waiter, 5)


# -- closing -----------------------------------------------------------------------------


def test_close_raises_subscription_closed_with_that_error() -> None:
    s = sub()
    s.go_live(0)
    s.offer(msg(1))
    error = BloomrError("token_revoked", "the token was revoked")
    s.close(error)
    with pytest.raises(SubscriptionClosed) as caught:
        s.take()
    assert caught.value.error is error
    assert str(caught.value) == "the token was revoked"


def test_the_first_close_wins() -> None:
    s = sub()
    first = BloomrError("stream_deleted", "the stream was deleted")
    s.close(first)
    s.close(BloomrError("unavailable", "server is stopping"))
    with pytest.raises(SubscriptionClosed) as caught:
        s.take()
    assert caught.value.error is first


def test_close_wins_over_overflow() -> None:
    s = sub(max_messages=1)
    s.go_live(0)
    s.offer(msg(1))
    s.offer(msg(2))
    s.close(BloomrError("token_revoked", "the token was revoked"))
    with pytest.raises(SubscriptionClosed):
        s.take()


async def test_close_wakes_a_waiter() -> None:
    s = sub()
    s.go_live(0)
    waiter = asyncio.create_task(s.next_batch())
    await asyncio.sleep(0)
    s.close(BloomrError("stream_deleted", "the stream was deleted"))
    with pytest.raises(SubscriptionClosed) as caught:
        await asyncio.wait_for(waiter, 5)
    assert caught.value.error.code == "stream_deleted"


def test_offers_after_close_are_ignored() -> None:
    s = sub()
    s.close(BloomrError("stream_deleted", "the stream was deleted"))
    s.offer(msg(1))
    assert s.backlog == 0


# -- a history that was lost (history_reset) ----------------------------------------------


def drain(s: Subscription) -> list[object]:
    """Everything the consumer would send now: batches of seqs and warning codes."""
    out: list[object] = []
    while True:
        batch = s.take()
        warnings = [w["code"] for w in s.take_warnings()]
        if not batch and not warnings:
            return out
        out += warnings
        if batch:
            out.append(seqs(batch))


def test_a_live_subscriber_is_warned_and_gets_the_new_history_from_seq_1() -> None:
    s = sub()
    s.go_live(10)
    for seq in (11, 12):
        s.offer(msg(seq))
    s.reset("new")
    for seq in (1, 2, 3):
        s.offer(msg(seq))
    assert drain(s) == [[11, 12], "history_reset", [1, 2, 3]]
    s.offer(msg(3))  # a repeat is still dropped
    s.offer(msg(4))
    assert drain(s) == [[4]]


def test_a_reset_with_nothing_queued_warns_first() -> None:
    s = sub()
    s.go_live(50)
    assert drain(s) == []
    s.reset("new")
    s.offer(msg(1))
    assert drain(s) == ["history_reset", [1]]


class ListSink:
    def __init__(self) -> None:
        self.written: list[list[int]] = []
        self.writable = True

    def write(self, delivery: Delivery) -> None:
        self.written.append(seqs(delivery.messages))


def test_direct_writes_wait_for_the_warning() -> None:
    s, sink = sub(), ListSink()
    s.go_live(5)
    s.attach(sink)
    s.deliver(Delivery([msg(6)]))
    assert sink.written == [[6]]
    s.reset("new")
    s.deliver(Delivery([msg(1)]))  # queued behind the warning, not written
    assert sink.written == [[6]]
    assert drain(s) == ["history_reset", [1]]
    s.deliver(Delivery([msg(2)]))
    assert sink.written == [[6], [2]]


def test_a_replay_of_the_old_history_then_a_reset_loses_nothing() -> None:
    s = sub()
    # the replay read the old history, up to 20
    for seq in (19, 20, 21):
        s.offer(msg(seq))
    s.reset("new")
    for seq in (1, 2):
        s.offer(msg(seq))
    s.go_live(20, "old")
    assert drain(s) == [[21], "history_reset", [1, 2]]


def test_a_replay_of_the_new_history_drops_what_it_covered() -> None:
    s = sub()
    # read after the loss, up to seq 2 of the new history
    s.offer(msg(30))  # the old history's last, still in flight
    s.reset("new")
    for seq in (1, 2, 3):
        s.offer(msg(seq))
    s.go_live(2, "new")
    assert drain(s) == [[3]]
    s.reset("new")  # noticed again later (another path): warned, nothing repeated
    s.offer(msg(3))
    s.offer(msg(4))
    assert drain(s) == ["history_reset", [4]]


def test_a_snapshot_read_after_the_loss_but_before_this_node_noticed_it() -> None:
    s = sub()
    s.go_live(2, "new")  # replayed seqs 1 and 2 of the new history
    s.reset("new")  # this node notices now, then hands over 1, 2, 3
    for seq in (1, 2, 3):
        s.offer(msg(seq))
    assert drain(s) == ["history_reset", [3]]
