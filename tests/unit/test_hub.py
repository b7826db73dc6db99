"""The hub's publish pipeline on one node (real SQLite store, the local bus): publishes
that queue up while the pipeline is busy are stored as one group and reach each
subscriber as one delivery per channel, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from bloomr.broker.embedded import EmbeddedBroker
from bloomr.control import Control
from bloomr.control.local import LocalControl
from bloomr.errors import BloomrError
from bloomr.hub import Hub
from bloomr.model import Draft, Message, Stream
from bloomr.store.sqlite import SQLiteStore
from bloomr.subscription import Delivery, Subscription
from queries import paging

TIMEOUT = 10


class RecordingSink:
    """What a websocket client that keeps up would be written, delivery by delivery."""

    def __init__(self) -> None:
        self.writes: list[list[int]] = []

    @property
    def writable(self) -> bool:
        return True

    def write(self, delivery: Delivery) -> None:
        self.writes.append([orjson.loads(m.data_json) for m in delivery.messages])


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    store = SQLiteStore(tmp_path / "bloomr.db")
    await store.open()
    made = Hub(EmbeddedBroker(store), Control(LocalControl()))
    await made.start()
    try:
        yield made
    finally:
        await made.stop()
        await store.close()


async def live(hub: Hub, stream: Stream, channel: str) -> tuple[Subscription, RecordingSink]:
    sub = hub.subscribe(stream.id, channel, None)
    sub.go_live(0)
    sink = RecordingSink()
    sub.attach(sink)
    return sub, sink


def drafts(channel: str, *values: int) -> list[Draft]:
    return [Draft(channel, orjson.dumps(v)) for v in values]


async def test_publishes_that_queue_up_reach_a_subscriber_in_one_write(hub: Hub) -> None:
    stream = Stream(id="hubtest001", name="t")
    _, sink = await live(hub, stream, "")
    # four publishes queued before the pipeline runs: one group commit
    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(
            *(hub.publish(stream, drafts("", 2 * i, 2 * i + 1)) for i in range(4))
        )
    assert [[m.seq for m in r] for r in results] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert sink.writes == [list(range(8))]


async def test_a_group_is_split_by_channel_and_by_stream_keeping_each_order(hub: Hub) -> None:
    one, two = Stream(id="hubtest002", name="a"), Stream(id="hubtest003", name="b")
    _, default = await live(hub, one, "")
    _, errors = await live(hub, one, "errors")
    _, other = await live(hub, two, "")
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(
            hub.publish(one, [*drafts("", 1), *drafts("errors", 2), *drafts("", 3)]),
            hub.publish(two, drafts("", 10)),
            hub.publish(one, [*drafts("errors", 4), *drafts("", 5)]),
            hub.publish(two, drafts("", 11)),
        )
    assert default.writes == [[1, 3, 5]]
    assert errors.writes == [[2, 4]]
    assert other.writes == [[10, 11]]


class OrderSink(RecordingSink):
    """Notes, in a list that every subscriber shares, which one was written when."""

    def __init__(self, name: int, order: list[int]) -> None:
        super().__init__()
        self.name, self.order = name, order

    def write(self, delivery: Delivery) -> None:
        self.order.append(self.name)


async def test_the_fan_out_writes_to_subscribers_in_the_order_they_subscribed(
    hub: Hub,
) -> None:
    """The earliest subscriber is written first, and a subscriber that leaves and comes
    back goes to the end (as Node's socket.io fans out); not the order of their hashes."""
    stream = Stream(id="hubtest006", name="t")
    order: list[int] = []
    subs = []
    for name in range(50):
        sub = hub.subscribe(stream.id, "", None)
        sub.go_live(0)
        sub.attach(OrderSink(name, order))
        subs.append(sub)
    hub.unsubscribe(subs[3])
    again = hub.subscribe(stream.id, "", None)
    again.go_live(0)
    again.attach(OrderSink(3, order))
    async with asyncio.timeout(TIMEOUT):
        await hub.publish(stream, drafts("", 1))
    assert order == [*range(3), *range(4, 50), 3]


async def test_a_failed_publish_in_a_group_fails_alone(hub: Hub) -> None:
    stream = Stream(id="hubtest004", name="t")
    _, sink = await live(hub, stream, "")
    missing = Stream(id="hubtest005", name="deleted")
    await hub.drop_stream(missing.id)
    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(
            hub.publish(stream, drafts("", 1)),
            hub.publish(missing, drafts("", 2)),
            hub.publish(stream, drafts("", 3)),
            return_exceptions=True,
        )
    assert isinstance(results[1], BloomrError)
    assert results[1].code == "not_found"
    assert sink.writes == [[1, 3]]


async def test_a_publish_is_stored_and_fanned_out_on_the_spot_when_nothing_is_ahead(
    hub: Hub,
) -> None:
    stream = Stream(id="hubtest006", name="t")
    _, sink = await live(hub, stream, "")
    done = hub.try_publish_now(stream, drafts("", 1, 2))
    assert done is not None and [m.seq for m in done] == [1, 2]
    assert sink.writes == [[1, 2]]  # before any await


async def test_nothing_is_published_on_the_spot_behind_a_publish_under_way(hub: Hub) -> None:
    stream = Stream(id="hubtest007", name="t")
    _, sink = await live(hub, stream, "")
    big = asyncio.create_task(hub.publish(stream, drafts("", *range(500))))
    await asyncio.sleep(0)  # queued; then committing on the store's thread
    async with asyncio.timeout(TIMEOUT):
        while not sink.writes:  # until the big one is fanned out
            assert hub.try_publish_now(stream, drafts("", 1000)) is None
            await asyncio.sleep(0)
    assert [m.seq for m in await big] == list(range(1, 501))
    done = hub.try_publish_now(stream, drafts("", 1000))
    assert done is not None and done[0].seq == 501
    assert sink.writes == [list(range(500)), [1000]]


class Gate:
    """A Backpressure source: pushes back until opened."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    def pushing_back(self) -> bool:
        return not self.open.is_set()

    async def room(self) -> None:
        await self.open.wait()


async def test_no_publish_is_stored_while_a_part_pushes_back(hub: Hub) -> None:
    stream = Stream(id="hubtest009", name="p")
    gate = Gate()
    hub.add_backpressure(gate)
    assert hub.try_publish_now(stream, drafts("", 1)) is None  # not on the spot either
    pending = asyncio.create_task(hub.publish(stream, drafts("", 1)))
    await asyncio.sleep(0.2)
    assert not pending.done()
    gate.open.set()
    async with asyncio.timeout(TIMEOUT):
        assert [m.seq for m in await pending] == [1]
    stored = hub.try_publish_now(stream, drafts("", 2))
    assert stored is not None and [m.seq for m in stored] == [2]


class Told:
    """A hub listener: what it was told was published."""

    def __init__(self) -> None:
        self.published: list[int] = []

    def on_published(self, stream_id: str, epoch: str, messages: list[Message]) -> None:
        self.published += [orjson.loads(m.data_json) for m in messages]

    def on_stream_deleted(self, stream_id: str) -> None:
        pass


async def test_duplicates_under_one_key_are_published_once_and_all_answered_alike(
    hub: Hub,
) -> None:
    stream = Stream(id="hubtest019", name="k")
    _, sink = await live(hub, stream, "")
    told = Told()
    hub.add_listener(told)
    async with asyncio.timeout(TIMEOUT):
        # queued together: the first is in progress while the others arrive
        answers = await asyncio.gather(
            *(hub.publish_once(stream, drafts("", 1, 2), "key") for _ in range(5))
        )
        later = await hub.publish(stream, drafts("", 3))
    assert len({tuple(a) for a in answers}) == 1 and len(answers[0]) == 2
    assert later[0].seq == 3
    assert [v for write in sink.writes for v in write] == [1, 2, 3]
    assert told.published == [1, 2, 3]


async def test_another_body_under_a_key_in_progress_is_refused_once_it_is_stored(
    hub: Hub,
) -> None:
    stream = Stream(id="hubtest020", name="k")
    async with asyncio.timeout(TIMEOUT):
        first, second = await asyncio.gather(
            hub.publish_once(stream, drafts("", 1), "key"),
            hub.publish_once(stream, drafts("", 2), "key"),
            return_exceptions=True,
        )
    assert isinstance(first, list) and len(first) == 1
    assert isinstance(second, BloomrError) and second.code == "idempotency_key_reused"


async def test_a_cancelled_keyed_publish_stays_in_progress_until_stored(hub: Hub) -> None:
    stream = Stream(id="hubtest021", name="k")
    async with asyncio.timeout(TIMEOUT):
        gone = asyncio.ensure_future(hub.publish_once(stream, drafts("", 1), "key"))
        await asyncio.sleep(0)  # queued
        gone.cancel()  # its client went away: the publish goes on
        retry = await hub.publish_once(stream, drafts("", 1), "key")
    [stored] = await hub.page(paging(stream.id, "", None, None, 10))
    assert retry == [stored.id]


async def test_keyed_publishes_waiting_when_the_hub_stops_are_answered(hub: Hub) -> None:
    stream = Stream(id="hubtest022", name="k")
    hub.add_backpressure(Gate())  # nothing gets stored: both stay in progress
    first = asyncio.ensure_future(hub.publish_once(stream, drafts("", 1), "key"))
    second = asyncio.ensure_future(hub.publish_once(stream, drafts("", 1), "key"))
    await asyncio.sleep(0)  # the first queued, the second waiting behind it
    await hub.stop()
    async with asyncio.timeout(TIMEOUT):
        for waiting in (first, second):
            with pytest.raises(BloomrError) as stopped:
                await waiting
            assert stopped.value.code == "unavailable"


class Landing:
    """A hub listener like a cluster's webhook outbox writer: each publish of `stream`
    must land (its future resolved by the test) before it is answered."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.futures: list[asyncio.Future[None]] = []

    def on_published(
        self, stream_id: str, epoch: str, messages: list[Message]
    ) -> asyncio.Future[None] | None:
        if stream_id != self.stream_id:
            return None
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def on_stream_deleted(self, stream_id: str) -> None:
        pass


async def test_a_publish_is_answered_once_what_a_listener_needs_has_landed(hub: Hub) -> None:
    """Issue 12: a publish to a stream with webhooks is acknowledged only once its outbox
    items are written; the pipeline goes on meanwhile (other streams are answered at
    once), and a write that cannot land answers `unavailable`."""
    hooked, other = Stream(id="hubtest020", name="h"), Stream(id="hubtest021", name="o")
    landing = Landing(hooked.id)
    hub.add_listener(landing)
    async with asyncio.timeout(TIMEOUT):
        waiting = asyncio.create_task(hub.publish(hooked, drafts("", 1, 2)))
        while not landing.futures:
            await asyncio.sleep(0)
        assert [m.seq for m in await hub.publish(other, drafts("", 1))] == [1]
        assert not waiting.done()
        landing.futures[0].set_result(None)
        assert [m.seq for m in await waiting] == [1, 2]
        failing = asyncio.create_task(hub.publish(hooked, drafts("", 1)))
        while len(landing.futures) < 2:
            await asyncio.sleep(0)
        landing.futures[1].cancel()  # the writer stopped before it landed
        with pytest.raises(BloomrError) as raised:
            await failing
        assert raised.value.code == "unavailable"
