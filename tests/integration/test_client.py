"""`bloomr.client` against a real `bloomr serve`: exact resume when a TCP proxy cuts the
connection mid-stream or refuses it for a while, across a server restart, backfill of
a truncated replay, errors and warnings, the Publisher's batches and retries, and the
blocking versions."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bloomr.client import (
    BloomrError,
    BloomrWarning,
    Message,
    Options,
    Publisher,
    SyncPublisher,
    subscribe,
    subscribe_sync,
)
from proxy import Proxy
from server import Server, running_server

TIMEOUT = 20.0
FAST = Options(retry_initial=0.05, retry_max=0.3)  # reconnect quickly in tests


async def history(srv: Server, stream: str, channel: str = "") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    params = {"channel": channel, "limit": "10000"}
    async with srv.client() as c:
        while True:
            r = await c.get(f"/api/streams/{stream}/messages", params=params, headers=srv.admin)
            page = r.json()
            if not page["messages"]:
                return messages
            messages += page["messages"]
            params["after"] = page["next"]


async def take(messages: AsyncIterator[Message], count: int) -> list[Message]:
    async def collect() -> list[Message]:
        return [await anext(messages) for _ in range(count)]

    return await asyncio.wait_for(collect(), TIMEOUT)


async def until(check: Callable[[], Any], what: str) -> None:
    """Poll a condition (not a fixed sleep): the test goes on as soon as it holds."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[Proxy]:
    target = urlsplit(server.url)
    assert target.hostname is not None and target.port is not None
    async with Proxy(target.hostname, target.port) as p:
        yield p


# -- subscribe ---------------------------------------------------------------------------


async def test_replay_then_live_as_typed_messages(server: Server) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": "a"}, {"data": {"n": 2}}], token)
    async with subscribe(server.url, stream, token, replay_limit=10) as messages:
        replayed = await take(messages, 2)
        await server.publish(stream, [{"data": [3]}], token)
        [live] = await take(messages, 1)
    assert [m.data for m in replayed] == ["a", {"n": 2}] and all(m.replayed for m in replayed)
    assert live.data == [3] and live.replayed is False
    assert live.stream == stream and live.channel == "" and live.timestamp.endswith("Z")
    stored = await history(server, stream)
    assert [m.id for m in [*replayed, live]] == [m["id"] for m in stored]


@pytest.mark.parametrize("transports", [None, ["websocket"], ["polling"]], ids=str)
async def test_resumes_exactly_when_the_connection_is_cut_mid_stream(
    server: Server, proxy: Proxy, transports: list[str] | None
) -> None:
    stream, token = await server.stream_and_token()
    total, seen = 600, []
    warnings: list[str] = []

    async def publish_all() -> None:
        for i in range(0, total, 10):  # small batches, while the cuts happen
            await server.publish(stream, [{"data": n} for n in range(i, i + 10)], token)
            await asyncio.sleep(0.005)

    subscription = subscribe(
        proxy.url,
        stream,
        token,
        replay_limit=1,
        on_warning=lambda w: warnings.append(w.code),
        options=Options(transports=transports, retry_initial=0.05, retry_max=0.3),
    )
    await server.publish(stream, [{"data": "start"}], token)
    async with subscription as messages:
        assert (await take(messages, 1))[0].data == "start"
        publisher = asyncio.create_task(publish_all())
        cuts = 0
        while len(seen) < total:
            seen += await take(messages, 1)
            if len(seen) % 100 == 50:  # cut six times, mid-stream
                await proxy.sever()
                cuts += 1
        await publisher
    assert cuts == 6 and [m.data for m in seen] == list(range(total))
    stored = await history(server, stream)
    assert [m.id for m in seen] == [m["id"] for m in stored][1:]
    # a cut can fall on a reconnection still under way, which then just fails again;
    # one sever can also cut a reconnection that lands while it is cutting
    lost = warnings.count("connection_lost")
    assert 1 <= lost <= 2 * cuts and warnings.count("reconnected") == lost


async def test_resumes_a_live_only_subscription_that_had_received_nothing(
    server: Server, proxy: Proxy
) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": "old"}], token)
    async with subscribe(proxy.url, stream, token, options=FAST) as messages:
        await until(lambda: messages.live, "the subscription to go live")
        await proxy.refuse()
        await proxy.sever()
        await server.publish(stream, [{"data": "while away"}, {"data": "x"}], token)
        await proxy.allow()
        got = await take(messages, 2)
    assert [m.data for m in got] == ["while away", "x"]  # not "old", nothing twice

    empty, token = await server.stream_and_token()  # an empty channel when it joined
    async with subscribe(proxy.url, empty, token, options=FAST) as messages:
        await until(lambda: messages.live, "the subscription to go live")
        await proxy.sever()
        await server.publish(empty, [{"data": "first"}], token)
        assert [m.data for m in await take(messages, 1)] == ["first"]


async def test_a_reconnection_cut_in_the_middle_of_its_handshake_is_tried_again(
    server: Server, proxy: Proxy
) -> None:
    """python-engineio raises aiohttp's own error (not its ConnectionError) when a
    polling handshake's body is cut after the headers: that is one more failed try."""
    stream, token = await server.stream_and_token()
    warnings: list[str] = []
    options = Options(transports=["polling"], retry_initial=0.05, retry_max=0.3)
    note = warnings.append
    async with subscribe(
        proxy.url, stream, token, options=options, on_warning=lambda w: note(w.code)
    ) as messages:
        await until(lambda: messages.live, "the subscription to go live")
        proxy.truncate_replies = 1  # the reconnection's handshake: head, then EOF
        await proxy.sever()
        await until(lambda: proxy.truncate_replies == 0, "the handshake to be cut")
        await server.publish(stream, [{"data": "after"}], token)
        assert [m.data for m in await take(messages, 1)] == ["after"]
    assert warnings[0] == "connection_lost" and warnings[-1] == "reconnected", warnings


async def test_resumes_across_a_server_restart(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ("--port", str(port))
    with running_server(*args, data_dir=tmp_path) as first:
        stream, token = await first.stream_and_token()
        await first.publish(stream, [{"data": "a"}], token)
        subscription = subscribe(first.url, stream, token, replay_limit=5, options=FAST)
        messages = await subscription.__aenter__()
        assert [m.data for m in await take(messages, 1)] == ["a"]
        await first.publish(stream, [{"data": "b"}], token)
        assert [m.data for m in await take(messages, 1)] == ["b"]
    try:
        with running_server(*args, data_dir=tmp_path) as second:
            await second.publish(stream, [{"data": "c"}, {"data": "d"}], token)
            got = await take(messages, 2)
            await second.publish(stream, [{"data": "e"}], token)
            got += await take(messages, 1)
            assert [m.data for m in got] == ["c", "d", "e"]
            assert [m.id for m in got] == [m["id"] for m in await history(second, stream)][2:]
    finally:
        await subscription.aclose()


async def test_a_reader_that_falls_behind_is_resumed_not_flooded(
    server: Server, proxy: Proxy
) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": i} for i in range(200)], token)
    # websocket only: each connection is a TCP connection of its own, counted by the proxy
    small = Options(max_queue=8, transports=["websocket"], retry_initial=0.05, retry_max=0.3)
    warnings: list[str] = []
    args = {"replay": "1h", "on_warning": lambda w: warnings.append(w.code), "options": small}
    got: list[Message] = []
    async with subscribe(proxy.url, stream, token, **args) as messages:
        while len(got) < 200:
            got += await take(messages, 1)
            await asyncio.sleep(0.005)  # a slow reader
    assert [m.data for m in got] == list(range(200))
    assert proxy.accepted > 1 and warnings == []  # it stopped reading and resumed, quietly


async def test_backfill_fetches_what_a_truncated_replay_left_out(server: Server) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": i} for i in range(2500)], token)
    warnings: list[BloomrWarning] = []
    args = {"replay": "1h", "replay_limit": 10, "on_warning": warnings.append}
    async with subscribe(server.url, stream, token, backfill=True, **args) as messages:
        got = await take(messages, 2500)
        await server.publish(stream, [{"data": "live"}], token)
        got += await take(messages, 1)
    assert [m.data for m in got] == [*range(2500), "live"]
    assert all(m.replayed for m in got[:-1]) and not got[-1].replayed
    assert [w.code for w in warnings] == ["replay_truncated"]
    assert warnings[0].details["omitted"] == 2490

    async with subscribe(server.url, stream, token, until_live=True, **args) as messages:
        plain = [m.data async for m in messages]
    assert plain == [*range(2491, 2500), "live"]


async def test_until_live_ends_after_the_replay(server: Server) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": i} for i in range(3)], token)
    async with subscribe(server.url, stream, token, replay_limit=2, until_live=True) as messages:
        assert [m.data async for m in messages] == [1, 2]
    empty, token = await server.stream_and_token()
    async with subscribe(server.url, empty, token, until_live=True) as messages:
        assert [m async for m in messages] == []


async def test_errors_that_do_not_go_away_raise(server: Server) -> None:
    stream, token = await server.stream_and_token()
    with pytest.raises(BloomrError) as refused:
        async with subscribe(server.url, stream, "bt_wrong") as messages:
            await take(messages, 1)
    assert refused.value.code == "unauthorized"

    with pytest.raises(BloomrError) as invalid:
        await take(subscribe(server.url, stream, token, replay="someday"), 1)
    assert invalid.value.code == "invalid_argument" and invalid.value.details["field"] == "replay"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(BloomrError) as unreachable:
        await take(subscribe(nowhere, stream, token), 1)
    assert unreachable.value.code == "unreachable"
    assert "connection refused" in unreachable.value.message

    async with subscribe(server.url, stream, token, replay_limit=1) as messages:
        await until(lambda: messages.live, "the subscription to go live")
        async with server.client() as c:
            await c.delete(f"/api/streams/{stream}", headers=server.admin)
        with pytest.raises(BloomrError) as deleted:
            await take(messages, 1)
    assert deleted.value.code == "stream_deleted"


async def test_warnings_go_to_the_callback(server: Server) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": "kept"}], token)
    warnings: list[BloomrWarning] = []
    unknown = "00000000-0000-7000-8000-000000000001"  # a UUIDv7 no stream holds
    async with subscribe(
        server.url, stream, token, replay=unknown, on_warning=warnings.append
    ) as messages:
        assert [m.data for m in await take(messages, 1)] == ["kept"]
    assert [w.code for w in warnings] == ["unknown_message_id"]
    assert warnings[0].details == {"id": unknown}

    quiet, token = await server.stream_and_token(store_history=False)
    warnings.clear()
    async with subscribe(
        server.url, quiet, token, replay_limit=5, on_warning=warnings.append
    ) as messages:
        await until(lambda: messages.live, "the subscription to go live")
        await server.publish(quiet, [{"data": "live"}], token)
        assert [m.data for m in await take(messages, 1)] == ["live"]
    assert [w.code for w in warnings] == ["history_disabled"]


async def test_subscribe_sync_is_the_same_as_a_plain_iterator(server: Server, proxy: Proxy) -> None:
    stream, token = await server.stream_and_token()
    await server.publish(stream, [{"data": i} for i in range(3)], token)

    def read(count: int) -> list[Any]:
        with subscribe_sync(proxy.url, stream, token, replay="1h", options=FAST) as messages:
            return [next(messages).data for _ in range(count)]

    reading = asyncio.create_task(asyncio.to_thread(read, 6))
    await until(lambda: proxy.connections > 0, "the blocking client to connect")
    await proxy.sever()
    await server.publish(stream, [{"data": i} for i in range(3, 6)], token)
    assert await asyncio.wait_for(reading, TIMEOUT) == list(range(6))

    def until_live() -> list[Any]:
        return [
            m.data
            for m in subscribe_sync(server.url, stream, token, replay_limit=2, until_live=True)
        ]

    assert await asyncio.to_thread(until_live) == [4, 5]


# -- Publisher ---------------------------------------------------------------------------


async def test_publisher_stores_batches_in_order(server: Server) -> None:
    stream, token = await server.stream_and_token()
    async with Publisher(server.url, stream, token, batch_size=50) as publisher:
        futures = [await publisher.publish({"n": i}) for i in range(120)]
        await publisher.publish("done", channel="progress")
        await publisher.flush()
        ids = [f.result() for f in futures]
    stored = await history(server, stream)
    assert [m["data"] for m in stored] == [{"n": i} for i in range(120)]
    assert [m["id"] for m in stored] == ids
    assert [m["data"] for m in await history(server, stream, "progress")] == ["done"]


async def test_publisher_retries_while_the_server_cannot_be_reached(
    server: Server, proxy: Proxy
) -> None:
    stream, token = await server.stream_and_token()
    await proxy.refuse()
    publisher = Publisher(proxy.url, stream, token, retry_initial=0.05, retry_max=0.2)
    async with publisher:
        first = await publisher.publish("while refused")
        await asyncio.sleep(0.3)  # let it fail a few times on purpose
        assert not first.done()
        await proxy.allow()
        assert await asyncio.wait_for(first, TIMEOUT)
        await publisher.publish("after")
    assert [m["data"] for m in await history(server, stream)] == ["while refused", "after"]


async def test_a_batch_whose_answer_was_lost_is_stored_once(server: Server, proxy: Proxy) -> None:
    stream, token = await server.stream_and_token()
    proxy.drop_replies = 1  # the server stores the batch, its answer never arrives
    async with Publisher(proxy.url, stream, token, retry_initial=0.05) as publisher:
        futures = [await publisher.publish(i) for i in range(3)]
    assert proxy.drop_replies == 0
    stored = await history(server, stream)
    assert [m["data"] for m in stored] == [0, 1, 2]
    assert [f.result() for f in futures] == [m["id"] for m in stored]


async def test_publisher_refused_raises_on_flush(server: Server) -> None:
    stream, token = await server.stream_and_token()
    subscriber = await server.create_token([stream], ["subscribe"])
    publisher = Publisher(server.url, stream, subscriber["token"])
    future = await publisher.publish("nope")
    with pytest.raises(BloomrError) as refused:
        await publisher.aclose()
    assert refused.value.code == "forbidden" and refused.value.details["status"] == 403
    assert future.exception() is refused.value
    with pytest.raises(ValueError):
        await Publisher(server.url, stream, token).publish("x", channel="bad channel!")


def test_sync_publisher(server: Server) -> None:
    async def setup() -> tuple[str, str]:
        return await server.stream_and_token()

    stream, token = asyncio.run(setup())
    with SyncPublisher(server.url, stream, token, batch_size=10) as publisher:
        for i in range(25):
            publisher.publish(i)
        publisher.flush()
    with httpx.Client(base_url=server.url, headers=server.admin) as c:
        page = c.get(f"/api/streams/{stream}/messages").json()
    assert [m["data"] for m in page["messages"]] == list(range(25))
