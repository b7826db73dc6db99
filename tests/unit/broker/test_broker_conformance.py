"""The broker contract (`bloomr.broker.base.Broker`), run against every broker: order,
atomic and contiguous batches, delivery once per node, gap filling after a lost
connection, replay and the hand-over to live delivery, idempotency keys (a request
stored and delivered once, whichever node its repeats reach)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from backends import BrokerNode, EmbeddedBrokerBackend, RedisBrokerBackend
from bloomr.errors import BloomrError
from bloomr.idempotency import Repeat, fingerprint
from bloomr.model import Draft, Message, Stream
from bloomr.replay import AfterSeq, ReplayRequest
from bloomr.replay_plan import RecoveryFailed, ReplayPlan, plan_replay, plan_resume
from bloomr.store.base import AppendBatch, Appended, HistoryGap
from queries import paging, replaying

BACKENDS = {"sqlite": EmbeddedBrokerBackend, "redis": RedisBrokerBackend}
S1, S2 = "brokerAAAA", "brokerBBBB"
STREAM = Stream(S1, "paged")

Nodes = Callable[[], Awaitable[list[BrokerNode]]]


@pytest.fixture
async def nodes(backend: Any) -> AsyncIterator[Nodes]:
    """All the nodes the broker can have (one for the embedded one)."""
    opened: list[BrokerNode] = []

    async def make() -> list[BrokerNode]:
        for _ in range(backend.nodes):
            opened.append(await backend.open())
        return opened

    try:
        yield make
    finally:
        for node in opened:
            await node.close()


def batch(stream: str, *data: Any, channel: str = "", keep: bool = True) -> AppendBatch:
    return AppendBatch(stream, [Draft(channel, orjson.dumps(d)) for d in data], keep)


def stored(result: Appended) -> list[Message]:
    assert isinstance(result, list), result
    return result


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


async def test_batches_are_contiguous_and_every_node_gets_each_message_once_in_order(
    nodes: Nodes,
) -> None:
    every = await nodes()
    writers = [
        every[i % len(every)].broker.publish([batch(S1, *[f"{i}.{j}" for j in range(i % 4 + 1)])])
        for i in range(30)
    ]
    results = [stored(r) for [r] in await asyncio.gather(*writers)]
    for result in results:  # each batch: consecutive seqs, one millisecond-ordered run
        assert seqs(result) == list(range(result[0].seq, result[0].seq + len(result)))
    published = sorted((m for r in results for m in r), key=lambda m: m.seq)
    assert seqs(published) == list(range(1, len(published) + 1))  # no seq lost or reused
    assert [m.id for m in published] == sorted(m.id for m in published)
    for node in every:
        got = await node.until(S1, len(published))
        assert got == published  # once, in order, as returned


async def test_a_group_mixes_streams_channels_and_streams_without_history(
    nodes: Nodes,
) -> None:
    [node, *_] = await nodes()
    a, b, c = await node.broker.publish(
        [batch(S1, 1, 2), batch(S2, "x", channel="progress", keep=False), batch(S1, 3)]
    )
    assert seqs(stored(a)) == [1, 2] and seqs(stored(c)) == [3] and seqs(stored(b)) == [1]
    assert await node.until(S1, 3) == stored(a) + stored(c)
    assert await node.until(S2, 1) == stored(b)
    replayed = await node.broker.replay(replaying(S2, "progress", None, 10, None))
    assert replayed.messages == [] and replayed.head_seq == 1  # ordered, never stored


async def test_replay_reads_one_snapshot_and_live_delivery_takes_over_after_its_head(
    nodes: Nodes,
) -> None:
    [node, *_] = await nodes()
    for i in range(5):
        await node.broker.publish([batch(S1, i, channel="" if i % 2 else "other")])
    found = await node.broker.replay(replaying(S1, "", None, 10, None))
    assert [m.data for m in found.messages] == [1, 3] and found.head_seq == 5
    later = stored((await node.broker.publish([batch(S1, 5)]))[0])
    delivered = await node.until(S1, later[0].seq)
    assert [m for m in delivered if m.seq > found.head_seq] == later


async def test_publish_now_is_offered_exactly_when_declared(nodes: Nodes) -> None:
    [node, *_] = await nodes()
    done = node.broker.publish_now([batch(S1, 1)])
    if not node.broker.capabilities.publishes_on_the_spot:
        assert done is None
        assert (await node.broker.replay(replaying(S1, "", None, 10, None))).messages == []
        return
    assert done is not None and seqs(stored(done[0])) == [1]
    assert seqs(node.delivered[S1]) == [1]  # delivered before it returned


async def test_what_a_node_missed_while_cut_off_is_filled_in_order(
    backend: Any, nodes: Nodes
) -> None:
    every = await nodes()
    writer, reader = every[0], every[-1]
    await writer.broker.publish([batch(S1, 1)])
    await reader.until(S1, 1)
    if not await backend.cut(reader):
        pytest.skip("this broker has no connection to lose")
    await writer.broker.publish([batch(S1, 2, 3)])
    await writer.broker.publish([batch(S1, 4)])
    assert seqs(await reader.until(S1, 4)) == [1, 2, 3, 4]


async def test_trim_and_drop(nodes: Nodes) -> None:
    [node, *_] = await nodes()
    await node.broker.publish([batch(S1, *range(10))])
    assert await node.broker.trim(S1, 0, 4) == 6
    assert [m.data for m in await node.broker.page(paging(S1, "", None, None, 100))] == [6, 7, 8, 9]
    await node.broker.drop(S1)
    assert await node.broker.page(paging(S1, "", None, None, 100)) == []
    again = stored((await node.broker.publish([batch(S1, "new")]))[0])
    assert seqs(again) == [1]  # a dropped stream's sequence starts over


async def test_a_resume_point_replays_what_followed_it_in_its_epoch_only(nodes: Nodes) -> None:
    [node, *_] = await nodes()
    before = await node.broker.replay(replaying(S1, "", None, 10, None))
    assert before.head_seq == 0 and before.epoch == ""
    first = stored((await node.broker.publish([batch(S1, 1, 2)]))[0])
    live = await node.broker.replay(replaying(S1, "", None, 10, None))
    assert live.epoch != "" and live.head_seq == 2
    later = stored((await node.broker.publish([batch(S1, 3), batch(S1, 4, channel="x")]))[0])

    from_empty = await node.broker.replay(replaying(S1, "", AfterSeq(0, ""), 100, None))
    assert from_empty.messages == first + later and not from_empty.unknown_id
    resumed = await node.broker.replay(replaying(S1, "", AfterSeq(2, live.epoch), 100, None))
    assert resumed.messages == later and not resumed.unknown_id
    caught_up = await node.broker.replay(replaying(S1, "", AfterSeq(4, live.epoch), 100, None))
    assert caught_up.messages == [] and not caught_up.unknown_id

    elsewhere = await node.broker.replay(
        replaying(S1, "", AfterSeq(2, "0123456789abcdef"), 100, None)
    )
    assert elsewhere.unknown_id  # another history's place means nothing here
    await node.broker.trim(S1, 0, 1)  # only seq 4 is left: 3 is gone
    trimmed = await node.broker.replay(replaying(S1, "", AfterSeq(2, live.epoch), 100, None))
    assert trimmed.unknown_id


async def test_the_head_is_where_later_publishes_start(nodes: Nodes) -> None:
    [node, *_] = await nodes()
    assert await node.broker.head(S1) == (0, "")
    await node.broker.publish([batch(S1, 1, 2)])
    seq, epoch = await node.broker.head(S1)
    snapshot = await node.broker.replay(replaying(S1, "", None, 10, None))
    assert (seq, epoch) == (2, snapshot.epoch) and epoch != ""


def keyed(stream: str, key: str, *data: Any) -> AppendBatch:
    drafts = [Draft("", orjson.dumps(d)) for d in data]
    return AppendBatch(stream, drafts, True, key, fingerprint(drafts))


async def test_a_key_is_stored_and_delivered_once_whichever_node_gets_it(nodes: Nodes) -> None:
    every = await nodes()
    first = stored((await every[0].broker.publish([keyed(S1, "k", 1, 2)]))[0])
    [repeat] = await every[-1].broker.publish([keyed(S1, "k", 1, 2)])
    assert repeat == Repeat([m.id for m in first])
    assert isinstance(repeat, Repeat)
    # a history apart from the outboxes (Redis) rebuilds the first request's messages
    embedded = every[0].broker.capabilities.publishes_on_the_spot  # outbox in its store
    assert repeat.messages == ([] if embedded else first)
    [reused] = await every[-1].broker.publish([keyed(S1, "k", 3)])
    assert isinstance(reused, BloomrError) and reused.code == "idempotency_key_reused"
    after = stored((await every[0].broker.publish([batch(S1, "after")]))[0])
    assert seqs(after) == [3]  # neither the repeat nor the refused batch took a seq
    for node in every:
        assert await node.until(S1, 3) == first + after  # the repeat was not delivered


async def test_concurrent_duplicates_on_every_node_store_once(nodes: Nodes) -> None:
    every = await nodes()
    writers = [node.broker.publish([keyed(S1, "dup", "x", "y")]) for node in every for _ in "ab"]
    outcomes = [r for [r] in await asyncio.gather(*writers)]
    [first] = [r for r in outcomes if isinstance(r, list)]
    assert all(r == Repeat([m.id for m in first]) for r in outcomes if r is not first)
    later = stored((await every[0].broker.publish([batch(S1, "z")]))[0])
    for node in every:
        assert await node.until(S1, later[0].seq) == first + later


# -- a replay read page by page (replay_plan: planned from one snapshot, each page after
# the last one read, up to the snapshot's head) --------------------------------------

SIZE = Message("", "", "", 0, 0, orjson.dumps(0)).size  # a one-digit message's size


async def read_paged(
    broker: Any, plan: ReplayPlan, between: Callable[[], Awaitable[None]] | None = None
) -> list[Message]:
    """Every page of a planned replay, as a session reads them (`between` runs after
    each page, the time a client takes to read it)."""
    got, page = [], list(plan.messages)
    while page:
        got += page
        if between is not None:
            await between()
        page = await broker.page(plan.next_page(got[-1]))
    return got


async def test_a_replay_larger_than_a_page_is_read_page_by_page_up_to_its_head(
    nodes: Nodes,
) -> None:
    [node, *_] = await nodes()
    # batches of 7 (SQLite keeps each as one run): pages of 3 messages cut inside runs
    written = [m for i in range(6) for m in stored((await publish(node, S1, 7, i))[0])]
    plan = await plan_replay(node.broker, STREAM, "", ReplayRequest(None, 40, 40), 3 * SIZE)
    assert plan.messages == written[2:5] and plan.count == 40 and plan.head_seq == 42
    later: list[Message] = []

    async def publish_more() -> None:  # after the snapshot: live, never a page
        later.extend(stored((await publish(node, S1, 2, 9))[0]))

    assert await read_paged(node.broker, plan, publish_more) == written[2:]
    delivered = await node.until(S1, later[-1].seq)
    assert [m for m in delivered if m.seq > plan.head_seq] == later


async def test_a_paged_replay_reads_its_channel_only(nodes: Nodes) -> None:
    [node, *_] = await nodes()
    for i in range(10):
        await node.broker.publish([batch(S1, *[i] * 3, channel="" if i % 3 else "other")])
    ours = [m for m in await node.broker.page(paging(S1, "", None, None, 100))]
    request = ReplayRequest(AfterSeq(0, ""), 10_000, None)
    plan = await plan_replay(node.broker, STREAM, "", request, 2 * SIZE)
    assert len(plan.messages) == 2 and plan.count == len(ours) == 18
    assert await read_paged(node.broker, plan) == ours


async def test_a_resume_is_read_page_by_page_whatever_its_size(nodes: Nodes) -> None:
    [node, *_] = await nodes()
    written = stored((await publish(node, S1, 30, 1))[0])
    plan = await plan_resume(
        node.broker, STREAM, "", AfterSeq(4, (await node.broker.head(S1))[1]), SIZE
    )
    assert not isinstance(plan, RecoveryFailed)
    assert len(plan.messages) == 1 and plan.count == 26
    assert await read_paged(node.broker, plan) == written[4:]


async def test_a_paged_replay_trimmed_between_pages_goes_on_with_what_is_left(
    nodes: Nodes,
) -> None:
    """Retention trims the oldest messages: a page after them starts at the oldest that
    is left; the hand-over to live delivery stays exact."""
    [node, *_] = await nodes()
    written = [m for i in range(4) for m in stored((await publish(node, S1, 5, i))[0])]
    plan = await plan_replay(node.broker, STREAM, "", ReplayRequest(None, 20, 20), 4 * SIZE)
    trimmed = False

    async def trim() -> None:
        nonlocal trimmed
        if not trimmed:  # after the first page (seqs 1-4), keep only the newest 9
            trimmed = True
            assert await node.broker.trim(S1, 0, 9) == 11

    assert await read_paged(node.broker, plan, trim) == written[:4] + written[11:]


async def test_a_resume_trimmed_between_pages_stops_rather_than_skip(nodes: Nodes) -> None:
    """A resume promised everything after its start: retention trimming what it was
    still to read is HistoryGap at the next page (the session then drops the client,
    which comes back and is told), never a page that skips; a trim that took only what
    was read already goes unnoticed."""
    [node, *_] = await nodes()
    written = [m for i in range(4) for m in stored((await publish(node, S1, 5, i))[0])]
    epoch = (await node.broker.head(S1))[1]
    plan = await plan_resume(node.broker, STREAM, "", AfterSeq(0, epoch), 4 * SIZE)
    assert not isinstance(plan, RecoveryFailed) and plan.messages == written[:4]
    assert await node.broker.trim(S1, 0, 16) == 4  # seqs 1-4: what the first page read
    page = await node.broker.page(plan.next_page(written[3]))
    assert page == written[4:8]
    assert await node.broker.trim(S1, 0, 9) == 7  # seqs 5-11: 9, 10 and 11 not read yet
    with pytest.raises(HistoryGap):
        await node.broker.page(plan.next_page(written[7]))


async def publish(node: BrokerNode, stream: str, n: int, value: int) -> list[Appended]:
    return await node.broker.publish([batch(stream, *[value] * n)])
