"""`GET /metrics`: Prometheus text, open to anyone, counting what the node did."""

from __future__ import annotations

import re

from server import Server
from sioclient import connect_and_wait


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in:\n{text}"
    return float(match.group(1))


async def test_metrics_count_publishes_and_subscribers(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    async with server.client() as c:
        before = (await c.get("/metrics")).text
        await server.publish(stream_id, [{"data": i} for i in range(5)])
        client = await connect_and_wait(server.socket_url(stream=stream_id, token=token))
        try:
            r = await c.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            published = _value(r.text, "bloomr_messages_published_total")
            assert published - _value(before, "bloomr_messages_published_total") >= 5
            assert _value(r.text, "bloomr_subscriptions") >= 1
            assert _value(r.text, "bloomr_slow_consumers_total") >= 0
        finally:
            await client.close()
