"""Batching and backpressure between a script's pipes and publish."""

from __future__ import annotations

import asyncio
import logging

import pytest
from runner_helpers import Collector, wait_until

from bloomr.model import Draft
from bloomr.runner.batcher import Batcher


def drafts(start: int, count: int) -> list[Draft]:
    return [Draft("", str(i).encode()) for i in range(start, start + count)]


async def test_many_drafts_go_out_in_few_ordered_batches(collector: Collector) -> None:
    batcher = Batcher(collector, max_batch=1000)
    for start in range(0, 5000, 250):
        await batcher.add(drafts(start, 250))
    await batcher.aclose()
    assert [int(d.data_json) for d in collector.drafts] == list(range(5000))
    assert collector.batches == [1000] * 5


async def test_a_lone_line_goes_out_after_a_tick(collector: Collector) -> None:
    batcher = Batcher(collector, tick=0.01)
    await batcher.add(drafts(0, 1))
    await wait_until(lambda: collector.batches == [1], timeout=1)
    await batcher.aclose()


async def test_add_waits_while_publish_is_slow() -> None:
    release = asyncio.Event()
    published: list[Draft] = []

    async def slow(batch: list[Draft]) -> None:
        await release.wait()
        published.extend(batch)

    batcher = Batcher(slow, max_batch=10)
    for start in range(0, 30, 10):  # one batch in flight, two queued: the limit
        await batcher.add(drafts(start, 10))
    blocked = asyncio.create_task(batcher.add(drafts(30, 10)))
    await wait_until(lambda: batcher.waiting == 1, timeout=1)
    assert not blocked.done()
    release.set()
    await blocked
    await batcher.aclose()
    assert [int(d.data_json) for d in published] == list(range(40))


@pytest.mark.parametrize("error", [OSError("store down"), asyncio.CancelledError()])
async def test_a_failing_publish_is_logged_and_later_batches_still_go_out(
    caplog: pytest.LogCaptureFixture, error: BaseException
) -> None:
    published: list[Draft] = []

    async def flaky(batch: list[Draft]) -> None:
        if not published and int(batch[0].data_json) == 0:
            raise error
        published.extend(batch)

    batcher = Batcher(flaky, max_batch=5)
    with caplog.at_level(logging.ERROR, logger="bloomr.runner"):
        await batcher.add(drafts(0, 5))
        await batcher.add(drafts(5, 5))
        await batcher.aclose()
    assert [int(d.data_json) for d in published] == list(range(5, 10))
    assert "publishing 5 script messages failed" in caplog.text
