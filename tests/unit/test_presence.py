"""Occupancy across nodes (`presence.py`) on a real Redis, under a key prefix of its own:
two presences stand for two nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from backends import REDIS_URL, delete_redis_prefix, unique_prefix
from bloomr.presence import Counts, RedisPresence, total

pytestmark = pytest.mark.timeout(20)

STREAM = "s_presence"


class Node:
    """A node's subscriber counts, as `Subscribers.occupancies` gives them."""

    def __init__(self, client: aioredis.Redis, prefix: str, node_id: str, ttl: float) -> None:
        self.counts: dict[str, Counts] = {}
        self.presence = RedisPresence(lambda: client, prefix, node_id, ttl=ttl)

    def set(self, stream_id: str, counts: Counts) -> None:
        self.counts = {stream_id: counts} if counts else {}
        self.presence.changed(stream_id)


@pytest.fixture
async def cluster() -> AsyncIterator[Callable[[float], Awaitable[tuple[Node, Node]]]]:
    prefix = unique_prefix()
    client = aioredis.Redis.from_url(REDIS_URL)
    nodes: list[Node] = []

    async def make(ttl: float) -> tuple[Node, Node]:
        for name in ("n_a", "n_b"):
            node = Node(client, prefix, name, ttl)
            await node.presence.start(lambda node=node: node.counts)
            nodes.append(node)
        return nodes[0], nodes[1]

    yield make
    for node in nodes:
        await node.presence.stop()
    await delete_redis_prefix(prefix)
    await client.aclose()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


def test_total_sums_channel_by_channel() -> None:
    assert total({"": 1}, [{"": 2, "errors": 1}, {"errors": 3}]) == {"": 3, "errors": 4}
    assert total({}, []) == {}


async def test_a_node_sees_what_the_other_announces_and_its_changes(cluster: Any) -> None:
    a, b = await cluster(10.0)
    assert await a.presence.elsewhere(STREAM) == []
    b.set(STREAM, {"": 2, "errors": 1})

    async def seen(expected: list[Counts]) -> bool:
        return await a.presence.elsewhere(STREAM) == expected

    await eventually(lambda: seen([{"": 2, "errors": 1}]), 2)
    assert await b.presence.elsewhere(STREAM) == []  # its own are not "elsewhere"
    b.set(STREAM, {})
    await eventually(lambda: seen([]), 2)


async def test_a_stopped_node_withdraws_and_a_silent_one_expires(cluster: Any) -> None:
    a, b = await cluster(0.6)
    b.set(STREAM, {"": 1})
    await eventually(lambda: _equals(a.presence.elsewhere(STREAM), [{"": 1}]), 2)
    await b.presence.stop()  # a clean stop: gone at once
    assert await a.presence.elsewhere(STREAM) == []
    await b.presence.start(lambda: b.counts)
    await eventually(lambda: _equals(a.presence.elsewhere(STREAM), [{"": 1}]), 2)
    # a node that stops announcing without withdrawing (killed): gone after the ttl
    assert b.presence._task is not None
    b.presence._task.cancel()
    await eventually(lambda: _equals(a.presence.elsewhere(STREAM), []), 2)


async def test_counts_lost_by_redis_are_announced_again(cluster: Any) -> None:
    a, b = await cluster(0.8)  # a heartbeat every 0.2 s
    b.set(STREAM, {"": 4})
    await eventually(lambda: _equals(a.presence.elsewhere(STREAM), [{"": 4}]), 2)
    prefix = b.presence._prefix
    await delete_redis_prefix(prefix)  # what a Redis restarted without its data holds
    assert await a.presence.elsewhere(STREAM) == []
    await eventually(lambda: _equals(a.presence.elsewhere(STREAM), [{"": 4}]), 2)


async def _equals(read: Awaitable[list[Counts]], expected: list[Counts]) -> bool:
    return await read == expected
