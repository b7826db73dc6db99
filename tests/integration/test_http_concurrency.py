"""Many publishers at once over HTTP (SPEC §1, §3): one total order per stream, every
message stored once, each publisher's messages in its order, batches contiguous; a
reader paging with `next` meanwhile sees that exact order, without gap or duplicate."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from httpkit import Api, bearer, open_client

from server import Server

PUBLISHERS = 20
PER_PUBLISHER = 50
BATCH = 10
TOTAL = PUBLISHERS * PER_PUBLISHER


async def test_concurrent_publishers(server: Server) -> None:
    async with open_client(server) as client:
        api = Api(server, client)
        stream_id, secret = await api.stream_and_token()
        url = f"/api/streams/{stream_id}/messages"
        acknowledged: dict[tuple[int, int], str] = {}
        batches: list[list[str]] = []

        async def publisher(p: int) -> None:
            """Even publishers send one message per request, odd ones batches of 10."""
            async with open_client(server) as c:
                step = 1 if p % 2 == 0 else BATCH
                for start in range(0, PER_PUBLISHER, step):
                    items = [{"data": {"p": p, "n": n}} for n in range(start, start + step)]
                    body: Any = items[0] if step == 1 else items
                    r = await c.post(url, json=body, headers=bearer(secret))
                    assert r.status_code == 201, r.text
                    ids = r.json()["ids"]
                    assert len(ids) == step
                    for n, message_id in zip(range(start, start + step), ids, strict=True):
                        acknowledged[(p, n)] = message_id
                    batches.append(ids)

        async def reader() -> list[dict[str, Any]]:
            """Pages forward with `next` while the publishers run."""
            async with open_client(server) as c:
                seen: list[dict[str, Any]] = []
                after: str | None = None
                while len(seen) < TOTAL:
                    params: dict[str, Any] = {"limit": 37}
                    if after is not None:
                        params["after"] = after
                    r = await c.get(url, params=params, headers=bearer(secret))
                    assert r.status_code == 200, r.text
                    page = r.json()
                    seen += page["messages"]
                    after = page["next"]
                    if not page["messages"]:
                        await asyncio.sleep(0.01)  # poll interval: nothing new yet
                return seen

        *_, paged = await asyncio.gather(*(publisher(p) for p in range(PUBLISHERS)), reader())

        stored = await api.poll_all(stream_id, secret)
        assert len(stored) == TOTAL
        keys = [(m["data"]["p"], m["data"]["n"]) for m in stored]
        assert len(set(keys)) == TOTAL  # every message exactly once
        assert set(keys) == set(acknowledged)
        ids = [m["id"] for m in stored]
        assert [acknowledged[k] for k in keys] == ids  # the acknowledged ids are the stored ones
        assert ids == sorted(ids)  # ids follow the stream's order

        order: dict[int, list[int]] = defaultdict(list)
        for p, n in keys:
            order[p].append(n)
        for p in range(PUBLISHERS):
            assert order[p] == list(range(PER_PUBLISHER)), f"publisher {p} out of order"

        position = {message_id: i for i, message_id in enumerate(ids)}
        for batch in batches:
            first = position[batch[0]]
            assert [position[i] for i in batch] == list(range(first, first + len(batch)))

        assert [m["id"] for m in paged] == ids  # the concurrent reader saw the same order


async def test_concurrent_publishers_on_separate_streams(server: Server) -> None:
    async with open_client(server) as client:
        api = Api(server, client)
        streams = [await api.stream_and_token() for _ in range(5)]

        async def publish_all(stream_id: str, secret: str) -> list[str]:
            async with open_client(server) as c:
                ids: list[str] = []
                for i in range(0, 100, 20):
                    items = [{"data": [stream_id, n]} for n in range(i, i + 20)]
                    r = await c.post(
                        f"/api/streams/{stream_id}/messages", json=items, headers=bearer(secret)
                    )
                    assert r.status_code == 201, r.text
                    ids += r.json()["ids"]
                return ids

        results = await asyncio.gather(*(publish_all(s, t) for s, t in streams))
        for (stream_id, secret), ids in zip(streams, results, strict=True):
            stored = await api.poll_all(stream_id, secret)
            assert [m["id"] for m in stored] == ids
            assert [m["data"] for m in stored] == [[stream_id, n] for n in range(100)]
