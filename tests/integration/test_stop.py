"""A clean stop (SPEC §3 "Availability and limits"): on SIGTERM or SIGINT bloomr stops
accepting, answers the publishes in progress, sends every subscriber `warning`
`shutting_down`, closes the transports so that clients reconnect by themselves (the
Node client sees "transport close", after which socket.io-client reconnects; after
"io server disconnect" it would not) and exits 0 within 10 s."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpkit import bearer
from test_http_publish_paths import RawHttp, messages_url

from server import Server, running_server
from sioclient import NodeProcess, connect_and_wait, ensure_node_modules, node_available

pytestmark = pytest.mark.timeout(90)

STOP_SECONDS = 10


async def _exit_code(server: Server, timeout: float = STOP_SECONDS + 2) -> int:
    return await asyncio.to_thread(server.process.wait, timeout)


def _log(server: Server) -> str:
    return "server output:\n" + "".join(server.output[-30:])


async def _sse_events(
    server: Server, stream_id: str, token: str, ready: asyncio.Event
) -> list[Any]:
    """Every SSE event (name, data) until the server ends the stream."""
    events: list[Any] = []
    name = ""
    async with server.client() as client:
        url = f"/api/streams/{stream_id}/events"
        async with client.stream("GET", url, headers=bearer(token)) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    events.append((name, orjson.loads(line[6:])))
                    if name == "replay_end":
                        ready.set()
    return events


async def _partial_publish(server: Server, stream_id: str, token: str) -> tuple[RawHttp, bytes]:
    """A publish whose headers and half its body reached the server; the rest to send."""
    body = orjson.dumps([{"data": "in flight"}])
    head = (
        f"POST {messages_url(stream_id)} HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    raw = await RawHttp.open(server)
    await raw.send(head + body[:5])
    return raw, body[5:]


def _node_available() -> None:
    if not node_available():
        if os.environ.get("CI"):
            pytest.fail("node and npm are required in CI")
        pytest.skip("node/npm not installed")
    ensure_node_modules()


@pytest.mark.node
async def test_sigterm_warns_everyone_answers_publishes_and_exits_0() -> None:
    _node_available()
    with running_server() as server:
        stream_id, token = await server.stream_and_token()
        await server.publish(stream_id, [{"data": "warm"}], token)  # the stream is cached
        node = await NodeProcess.client(
            url=server.url + "/",
            query={"stream": stream_id, "token": token},
            transports=["websocket"],
            timeoutMs=30_000,
        )
        python = await connect_and_wait(server.socket_url(stream=stream_id, token=token))
        sse_ready = asyncio.Event()
        sse = asyncio.create_task(_sse_events(server, stream_id, token, sse_ready))
        fast: RawHttp | None = None
        try:
            await node.wait_line(lambda line: line.get("event") == "replay_end")
            await asyncio.wait_for(sse_ready.wait(), 10)
            fast, fast_rest = await _partial_publish(server, stream_id, token)
            async with server.client() as client:  # the partial request has been read
                assert (await client.get("/healthz")).status_code == 200

            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)

            warning = await node.wait_line(lambda line: line.get("event") == "warning")
            assert warning["data"]["code"] == "shutting_down"
            await fast.send(fast_rest)
            status, headers, body = await fast.response()
            assert status == 201, body
            assert len(orjson.loads(body)["ids"]) == 1
            disconnect = await node.wait_line(lambda line: line.get("event") == "disconnect")
            assert disconnect["reason"] == "transport close"  # socket.io-client reconnects

            await python.wait_disconnect()
            assert [w["code"] for w in python.warnings] == ["shutting_down"]
            # the reason python-socketio reconnects after (not "server disconnect")
            assert python.named("disconnect") == [python.sio.reason.TRANSPORT_ERROR]
            # the warning, then at most the publish that was in flight, then the end
            after = python.names[python.names.index("warning") + 1 :]
            assert after in (["disconnect"], ["message", "disconnect"]), python.names

            events = await asyncio.wait_for(sse, 10)
            assert events[-1] == ("warning", {"code": "shutting_down", "message": ANY_TEXT})

            assert await _exit_code(server) == 0, _log(server)
            assert time.monotonic() - started < STOP_SECONDS, _log(server)
        finally:
            if fast is not None:
                await fast.close()
            sse.cancel()
            await node.kill()
            await python.close()


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT: Any = _AnyText()


@pytest.mark.node
async def test_sigint_with_polling_clients_and_a_long_poll() -> None:
    """SIGINT too; Engine.IO polling clients get the warning in their pending poll, and
    an HTTP long poll answers its (empty) page at once instead of holding the stop."""
    _node_available()
    with running_server() as server:
        stream_id, token = await server.stream_and_token()
        polling = await connect_and_wait(
            server.socket_url(stream=stream_id, token=token), transport="polling"
        )
        node = await NodeProcess.client(
            url=server.url + "/",
            query={"stream": stream_id, "token": token},
            transports=["polling"],
            timeoutMs=30_000,
        )
        await node.wait_line(lambda line: line.get("event") == "replay_end")
        async with server.client() as client:
            params = {"wait": "25"}
            url = messages_url(stream_id)
            long_poll = asyncio.create_task(client.get(url, params=params, headers=bearer(token)))
            try:
                await _wait_subscriptions(client, 3)  # the sockets and the long poll
                started = time.monotonic()
                server.process.send_signal(signal.SIGINT)
                await polling.wait_disconnect()
                assert [w["code"] for w in polling.warnings] == ["shutting_down"]
                assert polling.named("disconnect") == [polling.sio.reason.TRANSPORT_ERROR]
                warning = await node.wait_line(lambda line: line.get("event") == "warning")
                assert warning["data"]["code"] == "shutting_down"
                disconnect = await node.wait_line(lambda line: line.get("event") == "disconnect")
                # any reason but "io server disconnect" makes socket.io-client reconnect
                assert disconnect["reason"] in ("transport close", "transport error")
                response = await asyncio.wait_for(long_poll, STOP_SECONDS)
                assert response.status_code == 200
                assert response.json()["messages"] == []
                assert await _exit_code(server) == 0, _log(server)
                assert time.monotonic() - started < STOP_SECONDS, _log(server)
            finally:
                long_poll.cancel()
                await polling.close()
                await node.kill()


async def test_a_second_signal_forces_the_exit() -> None:
    """A request whose body never ends holds the graceful stop for its drain timeout; a
    second signal ends the wait at once (exit status 1: not everything was finished)."""
    with running_server() as server:
        stream_id, token = await server.stream_and_token()
        raw = await RawHttp.open(server)
        head = (
            f"POST {messages_url(stream_id)} HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[{{}},\r\n"
        )
        await raw.send(head.encode())
        async with server.client() as client:
            assert (await client.get("/healthz")).status_code == 200
        server.process.send_signal(signal.SIGTERM)
        await _wait_refused(server)  # the first signal was taken
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert await _exit_code(server, 5) == 1
        assert time.monotonic() - started < 3
        await raw.close()


async def _wait_refused(server: Server) -> None:
    """Return once the server accepts no more connections."""
    async with httpx.AsyncClient(base_url=server.url, timeout=2) as client:
        for _ in range(200):
            try:
                await client.get("/healthz", headers={"connection": "close"})
            except httpx.TransportError:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the server kept accepting connections")


async def _wait_subscriptions(client: httpx.AsyncClient, count: int) -> None:
    for _ in range(500):
        text = (await client.get("/metrics")).text
        line = next(x for x in text.splitlines() if x.startswith("bloomr_subscriptions "))
        if float(line.split()[1]) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} subscriptions")


@pytest.mark.node
async def test_socketio_client_reconnects_by_itself_to_the_restarted_server(
    tmp_path: Path,
) -> None:
    """The point of closing the transport rather than disconnecting the socket: the
    original client, reconnection on (its default), comes back on its own."""
    _node_available()
    port, data_dir = _free_port(), tmp_path / "data"
    node: NodeProcess | None = None
    try:
        with running_server("--port", str(port), data_dir=data_dir) as first:
            stream_id, token = await first.stream_and_token()
            node = await NodeProcess.client(
                url=first.url + "/",
                query={"stream": stream_id, "token": token},
                reconnect=True,
                count=1,
                timeoutMs=45_000,
            )
            await node.wait_line(lambda line: line.get("event") == "replay_end")
        # (leaving the block stopped the first server with SIGTERM)
        disconnect = await node.wait_line(lambda line: line.get("event") == "disconnect")
        assert disconnect["reason"] == "transport close"
        with running_server("--port", str(port), data_dir=data_dir) as second:
            connects = node.events
            await node.wait_line(lambda _: len(connects("connect")) == 2, timeout=30)
            await second.publish(stream_id, [{"data": "after the restart"}], token)
            message = await node.wait_line(lambda line: line.get("event") == "message")
            assert message["data"] == "after the restart"
            assert await node.finish() == 0
    finally:
        if node is not None:
            await node.kill()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
