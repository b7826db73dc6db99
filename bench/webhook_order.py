"""Whether a webhook gets a stream's messages in order when the stream is published to
through two cluster nodes at once (bench/RESULTS.md, session 8; README, *Known gap*).

    .venv/bin/python bench/webhook_order.py [PER_PUBLISHER]

Starts two bloomr nodes on the machine's Redis and PostgreSQL (a cluster name of their
own, dropped afterwards) and a webhook receiver, publishes PER_PUBLISHER messages
(default 300) from each of four concurrent publishers, two per node, waits 20 s for the
deliveries, and prints how many messages arrived and how many arrived after one with a
higher seq (ids grow with seqs). Needs what the tests need (`./scripts/setup.sh`)."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from backends import PG_DSN, REDIS_URL, PgSchema, delete_redis_prefix, drop_schema  # noqa: E402
from hookkit import running_receiver  # noqa: E402
from server import Server, running_server  # noqa: E402


async def publish(node: Server, stream_id: str, tag: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=node.url) as client:
        for i in range(count):
            body = {"data": {"from": tag, "i": i}}
            url = f"/api/streams/{stream_id}/messages"
            r = await client.post(url, json=body, headers=node.admin)
            assert r.status_code == 201, r.text


async def main(count: int) -> None:
    name = "bench_" + uuid.uuid4().hex[:10]
    args = ("--redis", REDIS_URL, "--database", PG_DSN, "--cluster-name", name)
    env = {"BLOOMR_WEBHOOK_ALLOW_PRIVATE": "1"}
    try:
        async with running_receiver() as receiver:
            with running_server(*args, env=env) as a, running_server(*args, env=env) as b:
                stream_id, _ = await a.stream_and_token()
                async with httpx.AsyncClient() as client:
                    url = f"{a.url}/api/streams/{stream_id}/webhooks"
                    r = await client.post(url, json={"url": receiver.url()}, headers=a.admin)
                    assert r.status_code == 201, r.text
                await asyncio.sleep(3)  # both nodes know the stream has a webhook
                await asyncio.gather(
                    *(publish(n, stream_id, f"{n.url}#{k}", count) for n in (a, b) for k in (1, 2))
                )
                await asyncio.sleep(20)
                ids = [m["id"] for m in receiver.delivered()]
                late = sum(1 for x, y in zip(ids, ids[1:], strict=False) if y < x)
                print(f"published {4 * count}, delivered {len(ids)} ({len(set(ids))} distinct)")
                print(f"delivered after a later message: {late}")
    finally:
        await delete_redis_prefix(name)
        await drop_schema(PgSchema(PG_DSN, name))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
