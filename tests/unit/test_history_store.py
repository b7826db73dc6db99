"""Conformance suite for the HistoryStore contract of store/base.py. Every backend
must pass it: add one to BACKENDS (a name and a class that opens a fresh, isolated
store, can reopen the same data and drops it after the test: see tests/backends.py) and
the whole suite runs against it."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import orjson
import pytest

from backends import Backend, RedisBackend, SQLiteBackend
from bloomr.errors import BloomrError
from bloomr.model import Draft, Message, now_ms
from bloomr.replay import AfterId, Since
from bloomr.store.base import AppendBatch, HistoryStore
from queries import paging, replaying


class Store(HistoryStore, Protocol):
    async def close(self) -> None: ...


# no postgres: PostgresStore keeps no history (in a cluster, Redis does)
BACKENDS: dict[str, Any] = {"sqlite": SQLiteBackend, "redis": RedisBackend}


S1, S2 = "streamAAAA", "streamBBBB"
UNKNOWN_ID = str(uuid.UUID(int=(1 << 76) * 7 | 1 << 63 | 12345))  # a v7 id nobody holds


def drafts(*items: tuple[str, Any]) -> list[Draft]:
    return [Draft(channel, orjson.dumps(data)) for channel, data in items]


def on(channel: str, *data: Any) -> list[Draft]:
    return drafts(*((channel, d) for d in data))


async def append(store: Store, stream: str, items: list[Draft], keep: bool = True) -> list[Message]:
    [result] = await store.append([AppendBatch(stream, items, keep)])
    assert isinstance(result, list), result
    return result


async def everything(store: Store, stream: str, channel: str = "") -> list[Message]:
    return await store.page(paging(stream, channel, None, None, 100_000))


def data(messages: list[Message]) -> list[Any]:
    return [m.data for m in messages]


def ids(messages: list[Message]) -> list[str]:
    return [m.id for m in messages]


# -- append ------------------------------------------------------------------------------


async def test_append_orders_a_stream_1_2_3(store: Store) -> None:
    first = await append(store, S1, on("", "a", "b"))
    second = await append(store, S1, on("", "c"))
    assert [m.seq for m in first + second] == [1, 2, 3]
    assert data(first + second) == ["a", "b", "c"]
    for m in first + second:
        assert m.stream == S1 and m.channel == ""
        assert uuid.UUID(m.id).version == 7


async def test_ids_and_timestamps_follow_the_order(store: Store) -> None:
    messages: list[Message] = []
    for i in range(20):
        messages += await append(store, S1, on("", *range(i * 10, i * 10 + 10)))
    assert ids(messages) == sorted(ids(messages))
    assert len(set(ids(messages))) == 200
    stamps = [m.ts_ms for m in messages]
    assert stamps == sorted(stamps)
    assert abs(stamps[-1] - now_ms()) < 60_000


async def test_stored_messages_read_back_exactly(store: Store) -> None:
    payloads = ["line", "", 0, -1.5, None, True, [1, [2]], {"nested": {"é": "ü"}}]
    written = await append(store, S1, on("", *payloads))
    read = await everything(store, S1)
    assert data(read) == payloads
    assert [(m.id, m.seq, m.ts_ms, m.channel, m.stream) for m in read] == [
        (m.id, m.seq, m.ts_ms, m.channel, m.stream) for m in written
    ]


async def test_one_call_many_batches_each_contiguous_in_the_given_order(store: Store) -> None:
    results = await store.append(
        [
            AppendBatch(S1, on("", 1, 2), True),
            AppendBatch(S2, on("", "x"), True),
            AppendBatch(S1, on("progress", 3, 4, 5), True),
            AppendBatch(S2, on("", "y", "z"), True),
            AppendBatch(S1, [], True),
            AppendBatch(S1, on("", 6), True),
        ]
    )
    assert all(isinstance(r, list) for r in results)
    got = [[m.seq for m in r] for r in results if isinstance(r, list)]
    assert got == [[1, 2], [1], [3, 4, 5], [2, 3], [], [6]]
    s1 = [m for r in results if isinstance(r, list) for m in r if m.stream == S1]
    assert ids(s1) == sorted(ids(s1))


async def test_streams_have_independent_orders(store: Store) -> None:
    await append(store, S1, on("", 1, 2, 3))
    [m] = await append(store, S2, on("", "first"))
    assert m.seq == 1
    assert data(await everything(store, S2)) == ["first"]
    assert data(await everything(store, S1)) == [1, 2, 3]


async def test_channels_share_the_stream_order(store: Store) -> None:
    written = await append(
        store, S1, drafts(("", 1), ("errors", "boom"), ("progress", 50), ("", 2))
    )
    assert [m.seq for m in written] == [1, 2, 3, 4]
    assert data(await everything(store, S1, "")) == [1, 2]
    assert data(await everything(store, S1, "errors")) == ["boom"]
    assert data(await everything(store, S1, "progress")) == [50]
    assert await everything(store, S1, "other") == []


async def test_keep_false_orders_without_storing(store: Store) -> None:
    await append(store, S1, on("", 1))
    skipped = await append(store, S1, on("", 2, 3), keep=False)
    assert [m.seq for m in skipped] == [2, 3]
    assert all(m.id for m in skipped)
    [after] = await append(store, S1, on("", 4))
    assert after.seq == 4
    assert data(await everything(store, S1)) == [1, 4]
    found = await store.replay(replaying(S1, "", None, 10, None))
    assert found.head_seq == 4


async def test_a_failed_batch_stores_nothing_and_uses_no_seq(store: Store) -> None:
    await append(store, S1, on("", 1))
    poisoned = [Draft("", b"2"), Draft("", None)]  # type: ignore[arg-type]
    [result] = await store.append([AppendBatch(S1, poisoned, True)])
    assert isinstance(result, BloomrError)
    [next_one] = await append(store, S1, on("", 3))
    assert next_one.seq == 2
    assert data(await everything(store, S1)) == [1, 3]


async def test_seq_survives_reopen(backend: Backend[Store]) -> None:
    store = await backend.open()
    written = await append(store, S1, on("", 1, 2, 3))
    await append(store, S1, on("", 4), keep=False)
    await store.close()

    store = await backend.open()
    try:
        [m] = await append(store, S1, on("", 5))
        assert m.seq == 5
        assert m.id > written[-1].id
        assert data(await everything(store, S1)) == [1, 2, 3, 5]
        assert (await store.replay(replaying(S1, "", None, 10, None))).head_seq == 5
    finally:
        await store.close()


async def test_seq_survives_trimming_everything(store: Store) -> None:
    await append(store, S1, on("", 1, 2, 3))
    await store.trim(S1, now_ms() + 60_000, 1_000_000)
    assert await everything(store, S1) == []
    [m] = await append(store, S1, on("", 4))
    assert m.seq == 4


# -- replay ------------------------------------------------------------------------------


async def test_replay_everything(store: Store) -> None:
    written = await append(store, S1, on("", *range(5)))
    found = await store.replay(replaying(S1, "", None, 10, None))
    assert ids(found.messages) == ids(written)
    assert found.matched == 5
    assert found.head_seq == 5
    assert not found.unknown_id


async def test_replay_gives_the_newest_limit(store: Store) -> None:
    written = await append(store, S1, on("", *range(10)))
    found = await store.replay(replaying(S1, "", None, 3, None))
    assert ids(found.messages) == ids(written[-3:])
    assert found.matched == 10
    assert found.backfill_after_id is None  # the omitted ones start at the beginning


async def test_replay_window_is_the_newest_n(store: Store) -> None:
    written = await append(store, S1, on("", *range(10)))
    found = await store.replay(replaying(S1, "", None, 4, 4))
    assert ids(found.messages) == ids(written[-4:])
    assert found.matched == 4
    assert found.head_seq == 10


async def test_replay_capped_window(store: Store) -> None:
    """A window of 7 with a limit of 5: the newest 5 are sent, 2 omitted after written[2]."""
    written = await append(store, S1, on("", *range(10)))
    found = await store.replay(replaying(S1, "", None, 5, 7))
    assert ids(found.messages) == ids(written[-5:])
    assert found.matched == 7
    assert found.backfill_after_id == written[2].id


async def test_replay_window_larger_than_history(store: Store) -> None:
    written = await append(store, S1, on("", 1, 2))
    found = await store.replay(replaying(S1, "", None, 10, 10))
    assert ids(found.messages) == ids(written)
    assert found.matched == 2
    assert found.backfill_after_id is None


async def test_replay_after_id_is_exclusive(store: Store) -> None:
    written = await append(store, S1, on("", *range(10)))
    found = await store.replay(replaying(S1, "", AfterId(written[3].id), 100, None))
    assert ids(found.messages) == ids(written[4:])
    assert found.matched == 6
    assert not found.unknown_id


async def test_replay_after_id_truncated(store: Store) -> None:
    written = await append(store, S1, on("", *range(10)))
    found = await store.replay(replaying(S1, "", AfterId(written[1].id), 3, None))
    assert ids(found.messages) == ids(written[-3:])
    assert found.matched == 8
    assert found.backfill_after_id == written[1].id


async def test_replay_after_the_last_id_is_empty(store: Store) -> None:
    written = await append(store, S1, on("", 1, 2))
    found = await store.replay(replaying(S1, "", AfterId(written[-1].id), 10, None))
    assert found.messages == [] and found.matched == 0
    assert found.head_seq == 2


async def test_replay_after_an_id_of_another_channel(store: Store) -> None:
    written = await append(store, S1, drafts(("", 1), ("progress", 2), ("", 3), ("", 4)))
    found = await store.replay(replaying(S1, "", AfterId(written[1].id), 10, None))
    assert data(found.messages) == [3, 4]


@pytest.mark.parametrize("where", ["nowhere", "other stream"])
async def test_replay_unknown_id_replays_the_newest(store: Store, where: str) -> None:
    other = await append(store, S2, on("", "elsewhere"))
    written = await append(store, S1, on("", *range(10)))
    unknown = UNKNOWN_ID if where == "nowhere" else other[0].id
    found = await store.replay(replaying(S1, "", AfterId(unknown), 4, None))
    assert found.unknown_id
    assert ids(found.messages) == ids(written[-4:])
    assert found.head_seq == 10


async def test_replay_since_a_timestamp(store: Store) -> None:
    written: list[Message] = []
    for i in range(30):  # several batches, so several milliseconds
        written += await append(store, S1, on("", i))
    pivot = written[17].ts_ms
    found = await store.replay(replaying(S1, "", Since(pivot), 1000, None))
    expected = [m for m in written if m.ts_ms >= pivot]
    assert ids(found.messages) == ids(expected)
    assert found.matched == len(expected)
    assert written[17].id in ids(found.messages)  # at or after: inclusive


async def test_replay_since_truncated_gives_the_backfill_boundary(store: Store) -> None:
    written = await append(store, S1, on("", *range(10)))
    written += await append(store, S1, drafts(("other", "x"), ("", 10), ("", 11)))
    ours = [m for m in written if m.channel == ""]
    found = await store.replay(replaying(S1, "", Since(0), 2, None))
    assert ids(found.messages) == ids(ours[-2:])
    assert found.matched == len(ours)
    assert found.backfill_after_id is None  # everything matched: starts at the beginning

    pivot = ours[4].ts_ms
    matching = [m for m in ours if m.ts_ms >= pivot]
    before = [m for m in ours if m.ts_ms < pivot]
    found = await store.replay(replaying(S1, "", Since(pivot), 2, None))
    assert ids(found.messages) == ids(matching[-2:])
    assert found.matched == len(matching)
    assert found.backfill_after_id == (before[-1].id if before else None)


async def test_replay_since_the_future_is_empty(store: Store) -> None:
    await append(store, S1, on("", 1, 2))
    found = await store.replay(replaying(S1, "", Since(now_ms() + 3_600_000), 10, None))
    assert found.messages == [] and found.matched == 0
    assert found.head_seq == 2


async def test_replay_a_far_past_since_is_everything(store: Store) -> None:
    written = await append(store, S1, on("", 1, 2))
    found = await store.replay(replaying(S1, "", Since(-(2**62)), 10, None))
    assert ids(found.messages) == ids(written)


async def test_replay_of_one_channel_counts_only_it(store: Store) -> None:
    await append(store, S1, drafts(*[("" if i % 3 else "progress", i) for i in range(30)]))
    found = await store.replay(replaying(S1, "progress", None, 4, None))
    assert data(found.messages) == [18, 21, 24, 27]
    assert found.matched == 10
    assert found.head_seq == 30  # the head counts every channel


async def test_replay_of_an_empty_stream(store: Store) -> None:
    found = await store.replay(replaying("nothing00", "", None, 10, 10))
    assert found.messages == [] and found.matched == 0 and found.head_seq == 0


async def test_replay_head_matches_the_snapshot(store: Store) -> None:
    await append(store, S1, on("", 1, 2, 3))
    await append(store, S1, on("x", 4))
    found = await store.replay(replaying(S1, "", None, 10, None))
    assert found.head_seq == 4
    assert max(m.seq for m in found.messages) <= found.head_seq


# -- page -------------------------------------------------------------------------------


async def test_page_forward_in_order(store: Store) -> None:
    written = await append(store, S1, on("", *range(25)))
    pages: list[Message] = []
    after: str | None = None
    while True:
        page = await store.page(paging(S1, "", after, None, 10))
        if not page:
            break
        assert len(page) <= 10
        pages += page
        after = page[-1].id
    assert ids(pages) == ids(written)


async def test_page_after_is_exclusive(store: Store) -> None:
    written = await append(store, S1, on("", *range(5)))
    assert ids(await store.page(paging(S1, "", written[1].id, None, 100))) == ids(written[2:])
    assert await store.page(paging(S1, "", written[-1].id, None, 100)) == []


async def test_page_since_and_after_both_apply(store: Store) -> None:
    written: list[Message] = []
    for i in range(20):
        written += await append(store, S1, on("", i))
    pivot = written[10].ts_ms
    since = [m for m in written if m.ts_ms >= pivot]
    assert ids(await store.page(paging(S1, "", None, pivot, 100))) == ids(since)
    later = written[15]
    both = [m for m in since if m.seq > later.seq]
    assert ids(await store.page(paging(S1, "", later.id, pivot, 100))) == ids(both)
    earlier = written[2]  # may share the pivot's millisecond: appends are fast
    after_earlier = [m for m in since if m.seq > earlier.seq]
    assert ids(await store.page(paging(S1, "", earlier.id, pivot, 100))) == ids(after_earlier)


async def test_page_of_a_channel(store: Store) -> None:
    written = await append(store, S1, drafts(*[("a" if i % 2 else "b", i) for i in range(10)]))
    assert data(await store.page(paging(S1, "a", None, None, 3))) == [1, 3, 5]
    assert data(await store.page(paging(S1, "a", written[5].id, None, 100))) == [7, 9]
    assert data(await store.page(paging(S1, "a", written[4].id, None, 100))) == [5, 7, 9]


@pytest.mark.parametrize("where", ["nowhere", "other stream"])
async def test_page_after_an_unknown_id(store: Store, where: str) -> None:
    other = await append(store, S2, on("", 1))
    await append(store, S1, on("", 1))
    unknown = UNKNOWN_ID if where == "nowhere" else other[0].id
    with pytest.raises(BloomrError) as caught:
        await store.page(paging(S1, "", unknown, None, 10))
    assert caught.value.code == "unknown_message_id"


async def test_page_after_a_trimmed_id(store: Store) -> None:
    written = await append(store, S1, on("", 1, 2, 3))
    await store.trim(S1, 0, 1)
    with pytest.raises(BloomrError) as caught:
        await store.page(paging(S1, "", written[0].id, None, 10))
    assert caught.value.code == "unknown_message_id"


# -- drop and trim ------------------------------------------------------------------------


async def test_drop_forgets_history_and_sequence(store: Store) -> None:
    written = await append(store, S1, on("", 1, 2, 3))
    await append(store, S2, on("", "kept"))
    await store.drop(S1)
    assert await everything(store, S1) == []
    found = await store.replay(replaying(S1, "", None, 10, None))
    assert found.messages == [] and found.head_seq == 0
    with pytest.raises(BloomrError):
        await store.page(paging(S1, "", written[0].id, None, 10))
    [m] = await append(store, S1, on("", "again"))
    assert m.seq == 1
    assert data(await everything(store, S2)) == ["kept"]


async def test_trim_by_count_keeps_the_newest(store: Store) -> None:
    written = await append(store, S1, drafts(*[("" if i % 2 else "x", i) for i in range(10)]))
    await append(store, S2, on("", *range(10)))
    removed = await store.trim(S1, 0, 4)
    assert removed == 6
    kept = await everything(store, S1, "") + await everything(store, S1, "x")
    assert sorted(m.seq for m in kept) == [7, 8, 9, 10]
    assert ids(sorted(kept, key=lambda m: m.seq)) == ids(written[-4:])
    assert len(await everything(store, S2)) == 10  # other streams untouched


async def test_trim_by_age(store: Store) -> None:
    written: list[Message] = []
    for i in range(20):
        written += await append(store, S1, on("", i))
    pivot = written[12].ts_ms
    removed = await store.trim(S1, pivot, 1_000_000)
    expected = [m for m in written if m.ts_ms >= pivot]
    assert removed == 20 - len(expected)
    assert ids(await everything(store, S1)) == ids(expected)


async def test_trim_with_nothing_to_trim(store: Store) -> None:
    await append(store, S1, on("", 1, 2))
    assert await store.trim(S1, 0, 10) == 0
    assert await store.trim("nothing00", 0, 10) == 0
    assert data(await everything(store, S1)) == [1, 2]


async def test_replay_after_trim(store: Store) -> None:
    written = await append(store, S1, on("", *range(10)))
    await store.trim(S1, 0, 3)
    found = await store.replay(replaying(S1, "", None, 100, None))
    assert ids(found.messages) == ids(written[-3:])
    found = await store.replay(replaying(S1, "", AfterId(written[0].id), 2, None))
    assert found.unknown_id
    assert ids(found.messages) == ids(written[-2:])
