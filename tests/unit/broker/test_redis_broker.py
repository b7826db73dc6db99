"""The Redis broker with a real Redis: several "nodes" (a RedisBroker each, on one key
prefix) must each hand their handler every stream's messages exactly once,
in seq order, whoever appended them and whatever happened to the connection."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from backends import REDIS_URL, delete_redis_prefix, unique_prefix
from bloomr.broker.redis import RedisBroker, Sequencer
from bloomr.control import Control, ControlEvent
from bloomr.control.local import LocalControl
from bloomr.control.redis import RedisControl, control_channel
from bloomr.hub import Hub
from bloomr.model import Draft, Message, Stream
from bloomr.replay import ReplayRequest
from bloomr.store.base import AppendBatch
from bloomr.store.redis_history import _SCRIPTS, RedisHistory, _Script
from bloomr.store.redis_layout import bus_channel
from bloomr.store.sqlite import SQLiteStore

S1, S2 = "streamAAAA", "streamBBBB"
TIMEOUT = 10.0


@dataclass
class Recorder:
    """A BusHandler that records what it is given and lets a test await a condition."""

    messages: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    controls: list[ControlEvent] = field(default_factory=list)
    resets: list[tuple[str, str, int]] = field(default_factory=list)  # (stream, epoch, at)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_messages(self, stream_id: str, messages: list[Message]) -> None:
        assert all(m.stream == stream_id for m in messages)
        self.messages[stream_id] += messages
        self.changed.set()

    def on_reset(self, stream_id: str, epoch: str) -> None:
        self.resets.append((stream_id, epoch, len(self.messages[stream_id])))
        self.changed.set()

    def on_control(self, event: ControlEvent) -> None:
        self.controls.append(event)
        self.changed.set()

    def seqs(self, stream_id: str) -> list[int]:
        return [m.seq for m in self.messages[stream_id]]

    async def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    async def has_seqs(self, stream_id: str, last: int) -> None:
        await self.until(
            lambda: bool(self.messages[stream_id]) and self.seqs(stream_id)[-1] >= last
        )

    async def has_controls(self, count: int) -> None:
        await self.until(lambda: len(self.controls) >= count)


@dataclass
class Node:
    history: RedisHistory
    bus: RedisBroker
    control: RedisControl
    seen: Recorder

    async def append(self, stream_id: str, *data: Any, keep: bool = True) -> list[Message]:
        drafts = [Draft("" if i % 3 else "progress", orjson.dumps(d)) for i, d in enumerate(data)]
        [result] = await self.history.append([AppendBatch(stream_id, drafts, keep)])
        assert isinstance(result, list), result
        return result


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    unique = unique_prefix()
    yield unique  # pytest resumes here after the test, whatever its outcome
    await delete_redis_prefix(unique)


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_node(prefix: str) -> AsyncIterator[MakeNode]:
    made: list[Node] = []

    async def make(**bus_options: Any) -> Node:
        bus = RedisBroker(REDIS_URL, prefix, **bus_options)
        history = bus.history
        await history.open()
        node = Node(history, bus, RedisControl(REDIS_URL, prefix), Recorder())
        made.append(node)
        await node.bus.start(node.seen)
        await node.control.start(node.seen)
        return node

    try:
        yield make
    finally:
        for node in made:
            await node.control.stop()
            await node.bus.stop()
            await node.history.close()


def fields(messages: list[Message]) -> list[tuple[str, str, str, int, int, bytes]]:
    return [(m.id, m.stream, m.channel, m.ts_ms, m.seq, m.data_json) for m in messages]


async def kill_bus_connections(client: aioredis.Redis, bus: RedisBroker) -> int:
    """Cut this prefix's bus subscriptions (only those: Redis may be shared)."""
    killed = 0
    for info in await client.client_list(_type="pubsub"):
        if info.get("name") == bus.client_name:
            killed += await client.client_kill_filter(_id=info["id"])
    return killed


# -- fan-out ------------------------------------------------------------------------------


async def test_appends_from_two_nodes_reach_both_in_seq_order_once(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    rng = random.Random(7)

    async def writer(node: Node, name: str) -> list[Message]:
        written: list[Message] = []
        for i in range(40):
            stream = S1 if i % 2 else S2
            written += await node.append(
                stream, *[f"{name}{i}.{j}" for j in range(rng.randint(1, 5))]
            )
        return written

    both = await asyncio.gather(writer(a, "a"), writer(a, "a2"), writer(b, "b"), writer(b, "b2"))
    returned = sorted((m for w in both for m in w), key=lambda m: (m.stream, m.seq))
    for stream in (S1, S2):
        ours = [m for m in returned if m.stream == stream]
        assert [m.seq for m in ours] == list(range(1, len(ours) + 1))  # none reused
        for node in (a, b):
            await node.seen.has_seqs(stream, len(ours))
            got = node.seen.messages[stream]
            assert fields(got) == fields(ours)  # once each, in order, as returned
            assert [m.id for m in got] == sorted(m.id for m in got)
            assert [m.ts_ms for m in got] == sorted(m.ts_ms for m in got)
        _, stored = await a.history.since_seq(stream, 0, 10_000)
        assert fields(stored) == fields(ours)  # and exactly as stored


async def test_messages_without_history_are_fanned_out(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    written = await a.append(S1, 1, 2, keep=False)
    await b.seen.has_seqs(S1, 2)
    assert fields(b.seen.messages[S1]) == fields(written)
    assert (await a.history.since_seq(S1, 0, 10))[1] == []


async def test_control_events_reach_every_node(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    events = [ControlEvent("token_revoked", "tok_1"), ControlEvent("stream_updated", S1)]
    for event in events:
        await a.control.send(event)
    for node in (a, b):
        await node.seen.has_controls(2)
        assert node.seen.controls == events


# -- gaps and repeats ---------------------------------------------------------------------


async def test_what_a_lost_connection_missed_is_filled_after_reconnect(
    make_node: MakeNode, redis_client: aioredis.Redis
) -> None:
    a = await make_node()
    b = await make_node(reconnect_delay=0.3)  # slow to come back: appends land meanwhile
    await a.append(S1, 1, 2)
    await a.append(S2, "x")
    await b.seen.has_seqs(S1, 2)
    await b.seen.has_seqs(S2, 1)

    assert await kill_bus_connections(redis_client, b.bus) >= 1
    missed = await a.append(S1, 3, 4, 5)  # nobody subscribed hears these
    missed += await a.append(S2, "y")
    await b.seen.until(lambda: b.bus.reconnects >= 1)
    await b.seen.has_seqs(S1, 5)
    await b.seen.has_seqs(S2, 2)
    assert b.bus.filled >= len(missed)

    await a.append(S1, 6)  # and live again afterwards
    await b.seen.has_seqs(S1, 6)
    assert b.seen.seqs(S1) == [1, 2, 3, 4, 5, 6]
    assert b.seen.seqs(S2) == [1, 2]
    assert fields(b.seen.messages[S1][2:5]) == fields(missed[:3])


async def test_a_gap_in_live_messages_is_filled_from_history(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await a.append(S1, 1)
    await b.seen.has_seqs(S1, 1)
    await b.bus.stop()  # b hears nothing of the next ones
    await a.append(S1, 2, 3)
    await a.append(S1, 4, keep=False)  # never stored: cannot be filled
    await b.bus.start(b.seen)
    await a.append(S1, 5)  # arrives live after a hole of 2..4
    await b.seen.has_seqs(S1, 5)
    assert b.seen.seqs(S1) == [1, 2, 3, 5]
    assert b.bus.filled == 2


async def test_repeated_seqs_are_delivered_once(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str
) -> None:
    a = await make_node()
    spy = redis_client.pubsub()
    await spy.subscribe(bus_channel(prefix, S1))
    await spy.get_message(timeout=TIMEOUT)  # the subscription's confirmation
    await a.append(S1, 1, 2, 3)
    await a.append(S1, 4)
    payloads: list[bytes] = []
    async with asyncio.timeout(TIMEOUT):
        while len(payloads) < 2:
            message = await spy.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                payloads.append(message["data"])
    await spy.aclose()  # type: ignore[no-untyped-call]
    await a.seen.has_seqs(S1, 4)

    for payload in (payloads[0], payloads[1], payloads[0]):  # the same seqs again
        await redis_client.publish(bus_channel(prefix, S1), payload)
    await a.append(S1, 5)
    await a.seen.has_seqs(S1, 5)
    assert a.seen.seqs(S1) == [1, 2, 3, 4, 5]


async def test_garbage_on_the_channels_is_ignored(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str
) -> None:
    a = await make_node()
    await redis_client.publish(bus_channel(prefix, S1), b"\x05nope")
    await redis_client.publish(control_channel(prefix), b'{"kind": "reboot", "target": "x"}')
    await redis_client.publish(control_channel(prefix), b"not json")
    await a.append(S1, 1)
    await a.control.send(ControlEvent("stream_updated", S1))
    await a.seen.has_seqs(S1, 1)
    await a.seen.has_controls(1)
    assert a.seen.controls == [ControlEvent("stream_updated", S1)]


async def test_a_deleted_stream_starts_again_at_1(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    await a.append(S1, 1, 2)
    await b.seen.has_seqs(S1, 2)
    await a.bus.drop(S1)
    b.bus.sequencer.forget(S1)  # (another node forgets a deleted stream it never hears of)
    await a.append(S1, "again")
    await b.seen.until(lambda: len(b.seen.messages[S1]) == 3)
    assert b.seen.seqs(S1) == [1, 2, 1]


async def test_start_fails_when_redis_cannot_be_reached(prefix: str) -> None:
    bus = RedisBroker("redis://127.0.0.1:1/0", prefix)
    with pytest.raises(RedisConnectionError):
        await bus.start(Recorder())
    await bus.stop()  # harmless after a failed start


# -- the hub on top: replay -> live across nodes -------------------------------------------


@pytest.fixture
async def two_hubs(prefix: str, tmp_path: Path) -> AsyncIterator[tuple[Hub, Hub, Stream]]:
    """Two nodes' hubs, each with its own metadata (the same stream in both) and the
    Redis history and bus."""
    stream = Stream(id=S1, name="cluster")
    made: list[tuple[Hub, SQLiteStore, RedisHistory]] = []
    for name in ("a", "b"):
        meta = SQLiteStore(tmp_path / name / "bloomr.db")
        await meta.open()
        await meta.create_stream(stream)
        broker = RedisBroker(REDIS_URL, prefix)
        history = broker.history
        await history.open()
        hub = Hub(broker, Control(LocalControl()))
        await hub.start()
        made.append((hub, meta, history))
    try:
        yield made[0][0], made[1][0], stream
    finally:
        for hub, meta, history in made:
            await hub.stop()
            await history.close()
            await meta.close()


async def test_a_subscriber_on_another_node_gets_replay_then_live_exactly(
    two_hubs: tuple[Hub, Hub, Stream],
) -> None:
    a, b, stream = two_hubs
    total = 300

    async def publisher() -> None:
        for i in range(0, total, 3):
            await a.publish(stream, [Draft("", orjson.dumps(n)) for n in range(i, i + 3)])

    for n in range(-30, 0):  # some history before anyone subscribes
        await a.publish(stream, [Draft("", orjson.dumps(n))])
    publishing = asyncio.create_task(publisher())
    await asyncio.sleep(0)  # let it start: the replay then races the publishes
    sub = b.subscribe(stream.id, "", None)
    plan = await b.plan_replay(sub, stream, ReplayRequest(None, 10_000, 10_000))
    sub.go_live(plan.head_seq)
    got = [m.data for m in plan.messages]
    async with asyncio.timeout(TIMEOUT):
        while not got or got[-1] != total - 1:
            got += [m.data for m in await sub.next_batch()]
    await publishing
    assert got == list(range(-30, total))


# -- scripts ------------------------------------------------------------------------------


async def test_a_script_redis_does_not_hold_is_loaded_again(prefix: str) -> None:
    """NOSCRIPT (Redis restarted, or SCRIPT FLUSH) loads the script and runs it."""
    history = RedisHistory(REDIS_URL, prefix)
    await history.open()
    try:
        token = uuid.uuid4().hex
        fresh = _Script(f"return '{token}'")  # never loaded anywhere
        assert fresh.sha not in {script.sha for script in _SCRIPTS.values()}
        assert await fresh(history.client, [], []) == token.encode()
    finally:
        await history.close()


# -- the bookkeeping alone --------------------------------------------------------------


def msgs(*seqs: int) -> list[Message]:
    return [Message(f"id{s}", S1, "", 0, s, b"0") for s in seqs]


def test_sequencer_drops_what_was_delivered_and_sees_gaps() -> None:
    seq = Sequencer()
    assert seq.gap(S1, 57) is None  # a stream seen first mid-way: nothing to fill
    seq.delivered(S1, "e1", msgs(57, 58))
    assert [m.seq for m in seq.fresh(S1, msgs(57, 58, 59))] == [59]
    assert seq.fresh(S1, msgs(50, 51)) == []
    assert seq.gap(S1, 59) is None
    assert seq.gap(S1, 61) == 58
    seq.forget(S1)
    assert [m.seq for m in seq.fresh(S1, msgs(1))] == [1]


def test_sequencer_sees_a_new_epoch_as_a_reset() -> None:
    seq = Sequencer()
    assert not seq.is_reset(S1, "e1")  # a stream seen for the first time
    seq.delivered(S1, "e1", msgs(1, 2, 3))
    assert not seq.is_reset(S1, "e1")
    assert not seq.is_reset(S1, "")  # a history without a head yet tells nothing
    assert seq.is_reset(S1, "e2")
    seq.reset(S1, "e2")
    assert [m.seq for m in seq.fresh(S1, msgs(1, 2))] == [1, 2]  # not taken for repeats
    assert seq.gap(S1, 3) == 0  # fill the new epoch from its start
    assert seq.is_retired(S1, "e1") and not seq.is_retired(S1, "e2")  # e1 is no reset


# -- a history lost behind bloomr's back -------------------------------------------------------


async def lose_history(client: aioredis.Redis, prefix: str, stream_id: str) -> None:
    """What a flush or a restart without persistence does to one stream (only its keys:
    this Redis is shared)."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:{{{stream_id}}}:*")]
    assert keys
    await client.delete(*keys)


async def test_a_lost_history_is_noticed_and_every_new_message_delivered(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str
) -> None:
    a, b = await make_node(), await make_node()
    await a.append(S1, 1, 2, 3, 4, 5)
    await b.seen.has_seqs(S1, 5)
    await lose_history(redis_client, prefix, S1)
    again = await a.append(S1, "x", "y", "z")
    assert [m.seq for m in again] == [1, 2, 3]
    for node in (a, b):
        await node.seen.until(lambda n=node: len(n.seen.messages[S1]) == 8)  # type: ignore[misc]
        assert node.seen.seqs(S1) == [1, 2, 3, 4, 5, 1, 2, 3]
        assert [(s, at) for s, _, at in node.seen.resets] == [(S1, 5)]  # told before them
    await a.append(S1, "w")
    await b.seen.until(lambda: len(b.seen.messages[S1]) == 9)
    assert b.seen.seqs(S1)[-1] == 4 and len(b.seen.resets) == 1


async def test_a_loss_noticed_late_fills_the_new_history_from_its_start(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str
) -> None:
    a, b = await make_node(), await make_node()
    await a.append(S1, 1, 2, 3)
    await b.seen.has_seqs(S1, 3)
    await b.bus.stop()  # b hears nothing of the loss nor of the first new messages
    await lose_history(redis_client, prefix, S1)
    await a.append(S1, "x", "y")
    await b.bus.start(b.seen)
    await a.append(S1, "z")
    await b.seen.until(lambda: len(b.seen.messages[S1]) == 6)
    assert b.seen.seqs(S1) == [1, 2, 3, 1, 2, 3]
    assert [(s, at) for s, _, at in b.seen.resets] == [(S1, 3)]


async def test_a_loss_found_on_reconnect_is_caught_up_from_the_new_start(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str
) -> None:
    a = await make_node()
    b = await make_node(reconnect_delay=0.3)
    await a.append(S1, 1, 2, 3, 4)
    await b.seen.has_seqs(S1, 4)
    assert await kill_bus_connections(redis_client, b.bus) >= 1
    await lose_history(redis_client, prefix, S1)
    await a.append(S1, "x", "y")  # published while b is away
    await b.seen.until(lambda: len(b.seen.messages[S1]) == 6)
    assert b.seen.seqs(S1) == [1, 2, 3, 4, 1, 2]
    assert [(s, at) for s, _, at in b.seen.resets] == [(S1, 4)]


async def snapshot_of(client: aioredis.Redis, prefix: str, stream_id: str) -> dict[bytes, bytes]:
    """The stream's keys as a snapshot would keep them (DUMP: restorable as they were)."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:{{{stream_id}}}:*")]
    return {key: await client.dump(key) for key in keys}


async def restore(client: aioredis.Redis, prefix: str, stream_id: str, saved: dict) -> None:
    """What a Redis restarted from that older snapshot holds: the stream's keys as they
    were then (its epoch too), those made since gone."""
    await lose_history(client, prefix, stream_id)
    for key, value in saved.items():
        await client.restore(key, 0, value, replace=True)


@pytest.mark.parametrize("written_meanwhile", [1, 4], ids=["behind", "past_the_head"])
async def test_a_history_restored_from_an_older_snapshot_gets_a_new_epoch(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str, written_meanwhile: int
) -> None:
    """Same epoch, seqs gone back: what nodes had delivered is not taken for the new
    messages. Written meanwhile, before the nodes are back: fewer messages than were
    lost (the head is behind what was delivered) or more (it passed it; their newer
    timestamps tell)."""
    a = await make_node(reconnect_delay=0.3)
    b = await make_node(reconnect_delay=0.3)
    await a.append(S1, 1, 2, 3)
    saved = await snapshot_of(redis_client, prefix, S1)
    await a.append(S1, 4, 5)  # acknowledged, then lost with the restart
    for node in (a, b):
        await node.seen.has_seqs(S1, 5)
    # Redis restarts: every bus connection is cut (the nodes' share one client name)
    assert await kill_bus_connections(redis_client, a.bus) >= 2
    await restore(redis_client, prefix, S1, saved)
    await asyncio.sleep(0.002)  # Redis's clock moves on past the lost messages' stamps
    new = await a.append(S1, *[f"n{i}" for i in range(written_meanwhile)])
    assert new[0].seq == 4  # the rolled-back sequence, as Redis has it
    for node in (a, b):
        await node.seen.until(lambda n=node: len(n.seen.messages[S1]) == 5 + written_meanwhile)  # type: ignore[misc]
        got = node.seen.messages[S1]
        assert [m.data_json for m in got[5:]] == [m.data_json for m in new]  # none lost
        assert [(s, at) for s, _, at in node.seen.resets] == [(S1, 5)]  # told, once
    later = await a.append(S1, "later")
    for node in (a, b):
        await node.seen.until(lambda n=node: len(n.seen.messages[S1]) == 6 + written_meanwhile)  # type: ignore[misc]
        assert node.seen.messages[S1][-1].id == later[0].id
        assert len(node.seen.resets) == 1
    epochs = {epoch for node in (a, b) for _, epoch, _ in node.seen.resets}
    assert len(epochs) == 1  # both nodes went on in one new epoch
    stored_in, stored = await a.history.since_seq(S1, 0, 100)
    assert stored_in in epochs
    assert [m.seq for m in stored] == [m.seq for m in [*new, *later]]  # after its base


async def test_a_publish_through_a_node_notices_an_older_snapshot_before_appending(
    make_node: MakeNode, redis_client: aioredis.Redis, prefix: str
) -> None:
    """A node that has not reconnected yet (or never will: the test keeps the bus
    connections) publishes into a new epoch: its append compares the head with what it
    delivered, so the new messages neither reuse seqs under the old epoch nor wait for
    a catch-up."""
    a, b = await make_node(), await make_node()
    await a.append(S1, 1, 2, 3)
    saved = await snapshot_of(redis_client, prefix, S1)
    await a.append(S1, 4, 5)
    for node in (a, b):
        await node.seen.has_seqs(S1, 5)
    await restore(redis_client, prefix, S1, saved)
    old_epoch = a.bus.sequencer.epoch(S1)
    [new] = await a.bus.publish([AppendBatch(S1, [Draft("", b'"x"')], True)])
    assert isinstance(new, list) and [m.seq for m in new] == [4]
    for node in (a, b):
        await node.seen.until(lambda n=node: len(n.seen.messages[S1]) == 6)  # type: ignore[misc]
        assert node.seen.messages[S1][-1].id == new[0].id
        [(_, epoch, at)] = node.seen.resets
        assert at == 5 and epoch != old_epoch
