"""The SQLite store keeps a batch's messages as runs, one row each (store/runs.py).
Whatever the runs, every read answers as if each message were a row of its own: checked
here against a plain list of what was written, for random batches, channels, run
sizes and trims, and the run encoding on its own."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bloomr.model import Draft, Message, _format_ids
from bloomr.replay import AfterId, Since
from bloomr.store import runs
from bloomr.store.base import AppendBatch
from bloomr.store.runs import run_messages, runs_of, without_first
from bloomr.store.sqlite import SQLiteStore
from queries import paging, replaying

S = "streamAAAA"
CHANNELS = ("", "x", "y")


def batch_messages(channels: list[str], sizes: list[int], first: int) -> list[Message]:
    ids = _format_ids(1_720_000_000_000, first, len(channels))
    return [
        Message(ids[i], S, channel, 1_720_000_000_000, 100 + i, orjson.dumps("d" * sizes[i]))
        for i, channel in enumerate(channels)
    ]


# -- the encoding ------------------------------------------------------------------------


@given(
    st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=30),
    st.lists(st.integers(0, 30), min_size=30, max_size=30),
    st.sampled_from([1, (1 << 48) - 5, (7 << 48) - 1]),
)
def test_runs_give_back_their_messages(channels: list[str], sizes: list[int], first: int) -> None:
    messages = batch_messages(channels, sizes, first)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "RUN_BYTES", 64)
        rows = runs_of(messages)
    assert [m for row in rows for m in run_messages(row)] == messages
    for row in rows:
        assert len({m.channel for m in run_messages(row)}) == 1
        n = row[6]
        for start in range(n + 1):
            assert run_messages(row, start, start + 2) == run_messages(row)[start : start + 2]
        for drop in range(1, n):
            assert run_messages(without_first(row, drop)) == run_messages(row)[drop:]


def test_a_batch_of_one_channel_is_one_row_and_a_lone_message_keeps_its_row() -> None:
    assert len(runs_of(batch_messages([""] * 1000, [5] * 1000, 1))) == 1
    [row] = runs_of(batch_messages(["x"], [3], 1))
    assert row[6:] == (1, None)


def test_a_run_stops_where_ids_carry_past_their_last_48_bits() -> None:
    rows = runs_of(batch_messages([""] * 6, [1] * 6, (1 << 48) - 2))
    assert [row[6] for row in rows] == [2, 4]


# -- the store, against a list -----------------------------------------------------------

batches = st.lists(
    st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=12), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batches,
    st.integers(1, 6),
    st.one_of(st.none(), st.integers(0, 40)),
    st.integers(1, 15),
    st.data(),
)
def test_reads_answer_as_rows_of_one_message_would(
    written: list[list[str]], group: int, keep: int | None, limit: int, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "RUN_BYTES", 24)  # runs split by size as well as by channel
        asyncio.run(_check(Path(tmp) / "bloomr.db", written, group, keep, limit, data))


async def _check(
    path: Path,
    written: list[list[str]],
    group: int,
    keep: int | None,
    limit: int,
    data: st.DataObject,
) -> None:
    store = SQLiteStore(path)
    await store.open()
    try:
        appends = [
            AppendBatch(S, [Draft(ch, orjson.dumps(f"m{j}.{i}")) for i, ch in enumerate(b)], True)
            for j, b in enumerate(written)
        ]
        stored: list[Message] = []
        for at in range(0, len(appends), group):
            for result in await store.append(appends[at : at + group]):
                assert isinstance(result, list)
                stored += result
        if keep is not None:
            removed = await store.trim(S, 0, keep)
            assert removed == max(len(stored) - keep, 0)
            stored = stored[max(len(stored) - keep, 0) :]
        for channel in CHANNELS:
            mine = [m for m in stored if m.channel == channel]
            await _check_channel(store, stored, mine, channel, limit, data)
    finally:
        await store.close()


async def _check_channel(
    store: SQLiteStore,
    stored: list[Message],
    mine: list[Message],
    channel: str,
    limit: int,
    data: st.DataObject,
) -> None:
    assert await store.page(paging(S, channel, None, None, 1000)) == mine
    window = data.draw(st.integers(0, len(mine) + 2), label="window")
    found = await store.replay(replaying(S, channel, None, limit, window))
    start = max(len(mine) - window, 0)
    matching, before = mine[start:], mine[:start]
    assert found.messages == matching[-limit:]
    assert found.matched == len(matching)
    assert found.backfill_after_id == (before[-1].id if before else None)
    if not stored:
        return
    pivot = data.draw(st.sampled_from(stored), label="pivot")
    after = [m for m in mine if m.seq > pivot.seq]
    assert await store.page(paging(S, channel, pivot.id, None, limit)) == after[:limit]
    found = await store.replay(replaying(S, channel, AfterId(pivot.id), limit, None))
    assert (found.messages, found.matched) == (after[-limit:], len(after))
    assert found.backfill_after_id == pivot.id and not found.unknown_id
    since = [m for m in mine if m.ts_ms >= pivot.ts_ms]
    assert await store.page(paging(S, channel, None, pivot.ts_ms, limit)) == since[:limit]
    found = await store.replay(replaying(S, channel, Since(pivot.ts_ms), limit, None))
    assert (found.messages, found.matched) == (since[-limit:], len(since))
    earlier = [m for m in mine if m.ts_ms < pivot.ts_ms]
    expected: Any = earlier[-1].id if len(since) > limit and earlier else None
    assert found.backfill_after_id == expected
