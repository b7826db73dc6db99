"""`bloomr run`'s uploader against an HTTP peer that answers as a server under load
does (httpx's MockTransport): a 503 or 425 is retried with the same key and body, no
sooner than its `Retry-After` asks."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bloomr.cli.run import Uploader
from bloomr.model import Draft

pytestmark = pytest.mark.timeout(20)


class Peer:
    """Answers each POST with the next of `answers` (then 201), noting when and what."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[float, str | None, bytes]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            (time.monotonic(), request.headers.get("Idempotency-Key"), request.content)
        )
        if self.answers:
            return self.answers.pop(0)
        return httpx.Response(201, json={"ids": ["x"]})


async def upload(peer: Peer) -> Uploader:
    client = httpx.AsyncClient(transport=httpx.MockTransport(peer), base_url="http://bloomr")
    uploader = Uploader(client, "http://bloomr", "/api/streams/s/messages", 0, echo=False)
    sender = asyncio.create_task(uploader.run())
    try:
        await uploader.put([Draft("", b'"line"')])
        await uploader.drain(asyncio.Event())
    finally:
        sender.cancel()
        await client.aclose()
    return uploader


async def test_a_503_is_retried_after_its_retry_after() -> None:
    busy = httpx.Response(
        503, headers={"Retry-After": "1"}, json={"error": {"code": "unavailable"}}
    )
    peer = Peer(busy)
    uploader = await upload(peer)
    assert uploader.failure is None and uploader.backlog == 0
    (first, key, body), (second, key_again, body_again) = peer.seen
    assert second - first >= 0.95  # not the 0.2 s of the first backoff step
    assert (key, body) == (key_again, body_again) and key  # the same request again


async def test_a_425_is_retried_too() -> None:
    peer = Peer(httpx.Response(425, json={"error": {"code": "conflict"}}))
    uploader = await upload(peer)
    assert uploader.failure is None and len(peer.seen) == 2
