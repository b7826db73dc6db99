"""Sequential appends to the cluster history (`RedisHistory.append`) against a Redis:
single-message and 100-message batches, as a caught-up node makes them (each batch
carries the last message the node delivered, so the Lua's rollback check runs).

    .venv/bin/python bench/redis_append.py [redis://127.0.0.1:6379/0]

Run it with PYTHONPATH at two checkouts' `src/`, alternating, to compare them. It
writes under a prefix of its own and deletes it afterwards."""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
import uuid
from typing import Any

import redis.asyncio as aioredis

from bloomr.model import Draft
from bloomr.store.base import AppendBatch
from bloomr.store.redis_history import RedisHistory

ROUNDS = 3


async def appends(history: RedisHistory, stream: str, count: int, size: int) -> float:
    """Messages per second over `count` appends of `size` messages each."""
    seen: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if "seen" in inspect.signature(history.append).parameters:  # older checkouts lack it
        options["seen"] = seen.get
    started = time.perf_counter()
    for _ in range(count):
        batch = AppendBatch(stream, [Draft("", b'{"n":1}')] * size, True)
        [stored] = await history.append([batch], **options)
        assert isinstance(stored, list)
        seen[stream] = (batch.epoch, stored[-1].seq, stored[-1].ts_ms)
    return count * size / (time.perf_counter() - started)


async def main(url: str) -> None:
    prefix = "bench-append-" + uuid.uuid4().hex[:8]
    history = RedisHistory(url, prefix)
    await history.open()
    try:
        for n in range(ROUNDS):
            single = await appends(history, f"single{n}", 2000, 1)
            batch = await appends(history, f"batch{n}", 100, 100)
            print(f"single {single:,.0f} msg/s, batches of 100 {batch:,.0f} msg/s", flush=True)
    finally:
        await history.close()
        client = aioredis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(match=prefix + ":*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "redis://127.0.0.1:6379/0"))
