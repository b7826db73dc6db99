"""The Publisher's batching, idempotency keys and retries, against httpx's
MockTransport playing the server's answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from bloomr.client import BloomrError, Publisher
from bloomr.client.publisher import retry_after

URL = "http://bloomr.test"

Handler = Callable[[httpx.Request], httpx.Response]


class Server:
    """Answers each request with the next handler (the last one repeats)."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.requests: list[httpx.Request] = []
        self.stored = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
        return handler(request)

    def batches(self) -> list[list[object]]:
        return [json.loads(r.content) for r in self.requests]

    def keys(self) -> list[str]:
        return [r.headers["Idempotency-Key"] for r in self.requests]


def stored(request: httpx.Request) -> httpx.Response:
    count = len(json.loads(request.content))
    return httpx.Response(201, json={"ids": [f"id{i}" for i in range(count)]})


def failing(status: int, code: str, **headers: str) -> Handler:
    body = {"error": {"code": code, "message": code.replace("_", " ")}}
    return lambda _: httpx.Response(status, json=body, headers=headers)


def publisher(server: Server, **options: Any) -> Publisher:
    options = {"retry_initial": 0.001, "retry_max": 0.01, **options}
    return Publisher(URL, "S", "bt_x", transport=httpx.MockTransport(server), **options)


async def test_batches_of_at_most_batch_size_each_with_its_own_key() -> None:
    server = Server(stored)
    async with publisher(server, batch_size=50, linger=0.05) as p:
        futures = [await p.publish({"n": i}) for i in range(120)]
        last = await p.publish("done", channel="progress")
        await p.flush()
    batches = server.batches()
    assert [len(b) for b in batches] == [50, 50, 21]
    assert batches[0][0] == {"channel": "", "data": {"n": 0}}
    assert batches[-1][-1] == {"channel": "progress", "data": "done"}
    assert len(set(server.keys())) == 3
    assert all(0 < len(k) <= 255 and k.isascii() and k.isprintable() for k in server.keys())
    assert futures[0].result() == "id0" and last.result() == "id20"
    assert server.requests[0].headers["Authorization"] == "Bearer bt_x"


async def test_an_unknown_outcome_is_retried_with_the_same_key_and_body() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    server = Server(failing(503, "unavailable", **{"Retry-After": "0"}), broken, stored)
    async with publisher(server) as p:
        future = await p.publish("once")
        await p.flush()
    assert future.result() == "id0"
    assert len(server.requests) == 3
    assert len(set(server.keys())) == 1
    assert len({r.content for r in server.requests}) == 1


async def test_a_batch_too_large_is_split_and_a_refusal_raises_on_flush() -> None:
    too_large = failing(413, "payload_too_large")
    server = Server(too_large, stored, failing(422, "validation_failed"))
    p = publisher(server, linger=0.05)
    futures = [await p.publish(i) for i in range(4)]
    with pytest.raises(BloomrError) as refused:
        await p.flush()
    assert refused.value.code == "validation_failed" and refused.value.details["status"] == 422
    assert [len(b) for b in server.batches()] == [4, 2, 2]
    assert [f.exception() is None for f in futures] == [True, True, False, False]
    await p.aclose()  # the failure was raised once


async def test_it_gives_up_after_give_up_after_seconds() -> None:
    server = Server(failing(500, "internal"))
    p = publisher(server, give_up_after=0.05)
    await p.publish("x")
    with pytest.raises(BloomrError) as failed:
        await p.aclose()
    assert failed.value.code == "unavailable" and "internal" in failed.value.message
    assert len(server.requests) > 1


def test_retry_after_takes_seconds_or_a_date() -> None:
    assert retry_after(None) == 0.0 and retry_after("garbage") == 0.0
    assert retry_after("2") == 2.0 and retry_after("3600") == 60.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after(later) <= 30
