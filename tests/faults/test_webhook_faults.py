"""Webhook deliveries of a cluster through a dead node and a lost Redis history (issue
12): real `bloomr serve` nodes on a private Redis and the shared PostgreSQL under a
schema of their own, and a real HTTP receiver. A message acknowledged by a publish
reaches every webhook of its channel, in order, even when the node that took it is
SIGKILLed right after its 201, or dies between its append and its outbox write and
the publish is retried with its Idempotency-Key; a Redis history that starts over
(new epoch, seqs from 1 again) neither collides with nor jumps ahead of what still
waits of the old one."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from faultkit import PrivateRedis, private_postgres, private_redis

from backends import PG_DSN, PgSchema, drop_schema
from hookkit import Receiver, running_receiver
from server import Server, running_server

pytestmark = pytest.mark.timeout(90)

ENV = {"BLOOMR_LEASE_TTL": "2", "BLOOMR_WEBHOOK_ALLOW_PRIVATE": "1"}


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    with private_redis() as redis:
        yield redis


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


@pytest.fixture
async def cluster(redis: PrivateRedis) -> AsyncIterator[list[str]]:
    """The arguments of a node of a cluster of its own (its schema dropped after)."""
    name = "t_hooks_" + uuid.uuid4().hex[:12]
    try:
        yield ["--redis", redis.url, "--database", PG_DSN, "--cluster-name", name]
    finally:
        await drop_schema(PgSchema(PG_DSN, name))


async def create_hook(srv: Server, stream_id: str, **body: Any) -> None:
    async with srv.client() as http:
        r = await http.post(f"/api/streams/{stream_id}/webhooks", json=body, headers=srv.admin)
    assert r.status_code == 201, r.text


async def test_a_node_killed_right_after_its_201_loses_no_delivery(
    cluster: list[str], receiver: Receiver
) -> None:
    """Node A takes every publish and is SIGKILLed right after the last 201; node B
    (which delivers, or takes the delivery over after the lease ttl) delivers every
    acknowledged message to both webhooks, each in the stream's order."""
    with contextlib.ExitStack() as nodes:
        a = nodes.enter_context(running_server(*cluster, env=ENV))
        nodes.enter_context(running_server(*cluster, env=ENV))
        stream_id = (await a.create_stream())["id"]
        await create_hook(a, stream_id, url=receiver.url())
        await create_hook(a, stream_id, url=receiver.url("/progress"), channel="progress")
        progress: set[str] = set()

        async def publisher(k: int) -> list[str]:
            ids: list[str] = []
            async with a.client() as http:
                for i in range(25):
                    batch = [{"data": [k, i, j]} for j in range(4)]
                    batch.append({"channel": "progress", "data": [k, i, 4]})
                    ids += await a.publish(stream_id, batch, client=http)
                    progress.add(ids[-1])
            return ids

        acknowledged = await asyncio.gather(*map(publisher, range(4)))
        a.process.send_signal(signal.SIGKILL)  # right after the last 201
        expected = sorted(i for ids in acknowledged for i in ids)  # ids grow with seqs
        assert len(expected) == 500 and len(progress) == 100
        await receiver.until(lambda: len(receiver.first_seen("/hook")) >= 400, timeout=30)
        await receiver.until(lambda: len(receiver.first_seen("/progress")) >= 100, timeout=30)
    assert receiver.first_seen("/hook") == [i for i in expected if i not in progress]
    assert receiver.first_seen("/progress") == [i for i in expected if i in progress]


async def test_a_redis_history_reset_is_delivered_after_the_old_epoch(
    cluster: list[str], redis: PrivateRedis, receiver: Receiver
) -> None:
    """The webhook's first request is held (its receiver is slow) while ten messages
    wait in its outbox; Redis is flushed (a new epoch: seqs start at 1 again) and ten
    more are published. All twenty arrive, the old epoch's first, each in order."""
    receiver.gate = asyncio.Event()
    with running_server(*cluster, env=ENV) as srv:
        stream_id = (await srv.create_stream())["id"]
        await create_hook(srv, stream_id, url=receiver.url())
        async with srv.client() as http:
            acked = await srv.publish(stream_id, {"data": 0}, client=http)
            await receiver.until(lambda: receiver.arrived == 1)  # held at the gate
            for n in range(1, 10):
                acked += await srv.publish(stream_id, {"data": n}, client=http)
            redis.flush()
            acked += await srv.publish(stream_id, [{"data": n} for n in range(10, 15)], client=http)
            for n in range(15, 20):
                acked += await srv.publish(stream_id, {"data": n}, client=http)
        receiver.gate.set()
        await receiver.until(lambda: len(receiver.first_seen()) >= 20)
    assert [m["data"] for m in receiver.delivered()] == list(range(20))
    assert receiver.first_seen() == acked


async def test_a_retried_publish_whose_node_died_before_its_outbox_write_is_delivered(
    redis: PrivateRedis, receiver: Receiver
) -> None:
    """PostgreSQL stops, so a publish is stored in Redis but its outbox write cannot
    land: it is not answered, and its node is SIGKILLed. Once PostgreSQL is back, the
    publisher retries with the same Idempotency-Key on a new node: the repeat is
    answered with the first ids only once the outbox holds the messages, which then
    reach the webhook (before, the repeat was answered from Redis's record alone)."""
    with private_postgres() as pg:
        args = ["--redis", redis.url, "--database", pg.dsn, "--cluster-name", "t_repeat"]
        key = {"Idempotency-Key": "retried-1"}
        batch = [{"data": n} for n in range(3)]
        with running_server(*args, env=ENV) as srv:
            stream_id = (await srv.create_stream())["id"]
            await create_hook(srv, stream_id, url=receiver.url())
            first = await srv.publish(stream_id, {"data": "before"})
            pg.stop()
            async with srv.client() as http:
                url = f"/api/streams/{stream_id}/messages"
                cut = asyncio.create_task(http.post(url, json=batch, headers=srv.admin | key))
                await stored_in_redis(redis, "t_repeat", stream_id, seq=4)
                assert not cut.done()  # waiting for its outbox write
                srv.process.send_signal(signal.SIGKILL)
                srv.process.wait(5)
                with contextlib.suppress(Exception):
                    await cut
        pg.start()
        with running_server(*args, env=ENV) as srv:
            async with srv.client() as http:
                r = await http.post(url, json=batch, headers=srv.admin | key)
            assert r.status_code == 201, r.text
            retried = r.json()["ids"]
            await receiver.until(lambda: len(receiver.first_seen()) >= 4, timeout=30)
    assert receiver.first_seen() == first + retried
    assert [m["data"] for m in receiver.delivered()][-3:] == [0, 1, 2]


async def stored_in_redis(redis: PrivateRedis, prefix: str, stream_id: str, seq: int) -> None:
    """Until the stream's history in Redis reaches `seq`."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        async with asyncio.timeout(10):
            while int(await client.hget(f"{prefix}:{{{stream_id}}}:head", "seq") or 0) < seq:
                await asyncio.sleep(0.02)
    finally:
        await client.aclose()
