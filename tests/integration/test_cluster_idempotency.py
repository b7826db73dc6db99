"""Idempotent publishing in a cluster (SPEC §3, §5): two real nodes sharing Redis and
PostgreSQL, where the Redis append call records the key, so a retry on the other node,
or duplicates racing on both, store once. And a Redis stall (SIGSTOP of a private
redis-server) with a publish in flight: its retry with the same key is stored once."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from httpkit import Api, assert_error, bearer, messages_url
from test_cluster import ENV, forget_cluster, two_nodes

from backends import PG_DSN
from server import Server, running_server

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[Server, Server]]:
    with two_nodes("t_idem_" + uuid.uuid4().hex[:12]) as pair:
        yield pair


async def publish(
    server: Server, stream_id: str, token: str, body: Any, key: str, timeout: float = 30
) -> httpx.Response:
    headers = {**bearer(token), "Idempotency-Key": key}
    async with server.client() as client:
        return await client.post(
            messages_url(stream_id), json=body, headers=headers, timeout=timeout
        )


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 201, response.text
    return list(response.json()["ids"])


async def stored(server: Server, stream_id: str, token: str) -> list[Any]:
    async with server.client() as client:
        return [m["data"] for m in await Api(server, client).poll_all(stream_id, token)]


async def test_a_retry_on_the_other_node_gets_the_first_ids(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    body = [{"data": 1}, {"channel": "x", "data": 2}]
    first = ids_of(await publish(a, stream_id, token, body, "k1"))
    assert ids_of(await publish(b, stream_id, token, body, "k1")) == first
    assert_error(
        await publish(b, stream_id, token, {"data": 3}, "k1"), 422, "idempotency_key_reused"
    )
    assert await stored(b, stream_id, token) == [1]


async def test_duplicates_racing_on_both_nodes_store_once(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    body = [{"data": n} for n in range(20)]
    answers = await asyncio.gather(
        *(publish(node, stream_id, token, body, "race") for node in (a, b) for _ in range(5))
    )
    assert len({tuple(ids_of(r)) for r in answers}) == 1
    assert await stored(a, stream_id, token) == list(range(20))


# -- a Redis stall -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own on a free port (never the shared one)."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.05)
        client.close()
        yield url, process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server to stall")
async def test_a_publish_in_flight_through_a_redis_stall_is_stored_once(tmp_path: Path) -> None:
    name = "t_idem_stall_" + uuid.uuid4().hex[:8]
    with private_redis(tmp_path) as (url, redis_process):
        args = ["--redis", url, "--database", PG_DSN, "--cluster-name", name]
        try:
            with running_server(*args, env=ENV) as node:
                stream_id, token = await node.stream_and_token()
                await stall_and_retry(node, stream_id, token, redis_process)
        finally:
            await forget_cluster(name)


async def stall_and_retry(
    node: Server, stream_id: str, token: str, redis_process: subprocess.Popen[bytes]
) -> None:
    body = [{"data": "exactly once"}]
    redis_process.send_signal(signal.SIGSTOP)
    try:
        # one client gives up on its publish (its outcome unknown), another waits it out
        gave_up = asyncio.ensure_future(publish(node, stream_id, token, body, "s1", timeout=2))
        waits = asyncio.ensure_future(publish(node, stream_id, token, [{"data": 2}], "s2"))
        with pytest.raises(httpx.TimeoutException):
            await gave_up
        await asyncio.wait([waits], timeout=2)  # a stall of 4 s in all
    finally:
        redis_process.send_signal(signal.SIGCONT)
    waited = await waits
    # 201 if Redis answered in time; else 503 (outcome unknown), never 500
    assert waited.status_code in (201, 503), waited.text
    retried = ids_of(await publish(node, stream_id, token, body, "s1"))
    again = await publish(node, stream_id, token, [{"data": 2}], "s2")
    if waited.status_code == 201:
        assert ids_of(again) == ids_of(waited)
    assert ids_of(await publish(node, stream_id, token, body, "s1")) == retried
    # stored once each; in either order (the first may have been stored by its retry)
    assert sorted(map(str, await stored(node, stream_id, token))) == ["2", "exactly once"]
