"""Connection state recovery with the original's client, unchanged: socket.io-client
(pinned in tests/node) reconnects by itself through a TCP proxy that severs its
connections, and must get exactly what it missed (no gap, no duplicate), with
`socket.recovered` true — mid-stream, with zero events received, across a kill -9 and
restart of bloomr, and on another node of a cluster."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends import PG_DSN, REDIS_URL, PgSchema, delete_redis_prefix, drop_schema
from proxy import Proxy
from server import Server, running_server
from sioclient import NodeProcess, Recorder, ensure_node_modules, node_available

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(not node_available(), reason="needs Node.js (tests/node)"),
]

TRANSPORTS = (["websocket"], ["polling"], ["polling", "websocket"])


@pytest.fixture(scope="module", autouse=True)
def _node_modules() -> None:
    ensure_node_modules()


async def publish(srv: Server, stream_id: str, *numbers: int) -> list[str]:
    return await srv.publish(stream_id, [{"data": {"n": n}} for n in numbers])


def received(client: NodeProcess) -> list[int]:
    return [line["data"]["n"] for line in client.events("message")]


async def connects(client: NodeProcess, count: int) -> list[dict[str, Any]]:
    await client.wait_line(lambda _: len(client.events("connect")) >= count)
    return client.events("connect")


@asynccontextmanager
async def original_client(
    srv: Server, proxy: Proxy, stream_id: str, token: str, transports: list[str]
) -> AsyncIterator[NodeProcess]:
    """The original documentation's client (query: stream and token only), reconnecting
    by itself, through the proxy."""
    client = await NodeProcess.client(
        url=proxy.url + "/",
        query={"stream": stream_id, "token": token},
        transports=transports,
        reconnect=True,
        reconnectDelayMs=100,
        timeoutMs=60_000,
    )
    try:
        await connects(client, 1)
        await client.wait_line(lambda line: line.get("event") == "replay_end")
        yield client
    finally:
        await client.kill()


async def cut(proxy: Proxy) -> None:
    """Sever every connection and keep the client out while the test publishes."""
    await proxy.refuse()
    await proxy.sever()


@pytest.mark.parametrize("transports", TRANSPORTS, ids=["+".join(t) for t in TRANSPORTS])
async def test_a_dropped_client_resumes_exactly_mid_stream(
    server: Server, transports: list[str]
) -> None:
    stream_id, token = await server.stream_and_token()
    async with Proxy("127.0.0.1", port_of(server)) as proxy:
        async with original_client(server, proxy, stream_id, token, transports) as client:
            await publish(server, stream_id, 1, 2, 3)
            await client.wait_line(lambda _: received(client)[-1:] == [3])
            await cut(proxy)
            await publish(server, stream_id, 4, 5)  # published while it is away
            await proxy.allow()
            await publish(server, stream_id, 6)
            await client.wait_line(lambda _: received(client)[-1:] == [6])
            assert received(client) == [1, 2, 3, 4, 5, 6]
            assert [c["recovered"] for c in await connects(client, 2)] == [False, True]
            assert client.events("warning") == []


async def test_a_client_that_had_received_nothing_resumes_from_where_it_went_live(
    server: Server,
) -> None:
    stream_id, token = await server.stream_and_token()
    await publish(server, stream_id, 0)  # before it connects: not its business
    async with Proxy("127.0.0.1", port_of(server)) as proxy:
        async with original_client(server, proxy, stream_id, token, ["websocket"]) as client:
            await cut(proxy)
            await publish(server, stream_id, 1, 2)
            await proxy.allow()
            await client.wait_line(lambda _: received(client)[-1:] == [2])
            await publish(server, stream_id, 3)
            await client.wait_line(lambda _: received(client)[-1:] == [3])
            assert received(client) == [1, 2, 3]
            assert [c["recovered"] for c in await connects(client, 2)] == [False, True]


async def test_a_client_resumes_after_kill_9_and_a_restart(tmp_path: Path) -> None:
    port = free_port()
    with running_server("--port", str(port), data_dir=tmp_path) as first:
        stream_id, token = await first.stream_and_token()
    async with Proxy("127.0.0.1", port) as proxy:
        with running_server("--port", str(port), data_dir=tmp_path) as srv:
            client_cm = original_client(srv, proxy, stream_id, token, ["websocket"])
            client = await client_cm.__aenter__()
            try:
                await publish(srv, stream_id, 1, 2)
                await client.wait_line(lambda _: received(client)[-1:] == [2])
                await proxy.refuse()
                srv.process.send_signal(signal.SIGKILL)
                srv.process.wait(10)
            except BaseException:
                await client_cm.__aexit__(None, None, None)
                raise
        try:
            with running_server("--port", str(port), data_dir=tmp_path) as again:
                await publish(again, stream_id, 3, 4)
                await proxy.allow()
                await client.wait_line(lambda _: received(client)[-1:] == [4])
                await publish(again, stream_id, 5)
                await client.wait_line(lambda _: received(client)[-1:] == [5])
                assert received(client) == [1, 2, 3, 4, 5]
                assert (await connects(client, 2))[-1]["recovered"] is True
        finally:
            await client_cm.__aexit__(None, None, None)


async def test_recovery_fails_loudly_when_history_is_off(server: Server) -> None:
    stream_id, token = await server.stream_and_token(store_history=False)
    async with Proxy("127.0.0.1", port_of(server)) as proxy:
        async with original_client(server, proxy, stream_id, token, ["websocket"]) as client:
            await publish(server, stream_id, 1)
            await client.wait_line(lambda _: received(client)[-1:] == [1])
            await cut(proxy)
            await publish(server, stream_id, 2)  # lost to it: nothing keeps it
            await proxy.allow()
            warning = await client.wait_line(lambda line: line.get("event") == "warning")
            assert warning["data"]["code"] == "recovery_failed"
            assert warning["data"]["reason"] == "history_disabled"
            await publish(server, stream_id, 3)
            await client.wait_line(lambda _: received(client)[-1:] == [3])
            assert received(client) == [1, 3]
            assert (await connects(client, 2))[-1]["recovered"] is False


async def test_a_pid_is_not_a_key_to_another_stream(server: Server) -> None:
    """A pid names its stream, channel and token: sent with another stream's handshake,
    the connection starts anew there, and says so."""
    first, token = await server.stream_and_token()
    second, other = await server.stream_and_token()
    pid = await pid_for(server, first, token)
    client = Recorder()
    try:
        await client.connect(
            server.url,
            auth={"stream": second, "token": other, "pid": pid, "recovery": "true"},
        )
        warning = await client.wait_event("warning")
        assert warning["code"] == "recovery_failed"
        assert warning["reason"] == "another_stream_channel_or_token"
        await client.wait_event("replay_end")
    finally:
        await client.close()


async def pid_for(srv: Server, stream_id: str, token: str) -> str:
    """The pid of a connection made over raw Engine.IO polling, read from its CONNECT
    reply (as socket.io-client would)."""
    query = {"EIO": "4", "transport": "polling", "stream": stream_id, "token": token}
    async with httpx.AsyncClient(base_url=srv.url) as http:
        opened = (await http.get("/socket.io/", params=query)).text
        params = {**query, "sid": opened.split('"sid":"')[1].split('"')[0]}
        assert (await http.post("/socket.io/", params=params, content=b"40")).text == "ok"
        reply = (await http.get("/socket.io/", params=params)).text
    return reply.split('"pid":"')[1].split('"')[0]


def port_of(srv: Server) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a cluster: the client resumes on another node ---------------------------------------


@contextmanager
def cluster_node(name: str) -> Iterator[Server]:
    args = ("--redis", REDIS_URL, "--database", PG_DSN, "--cluster-name", name)
    with running_server(*args, env={"BLOOMR_LEASE_TTL": "3"}) as node:
        yield node


async def test_a_client_resumes_on_another_node_after_its_node_dies() -> None:
    name = "t_" + uuid.uuid4().hex[:12]
    try:
        with cluster_node(name) as a, cluster_node(name) as b:
            stream_id, token = await a.stream_and_token()
            async with Proxy("127.0.0.1", port_of(a)) as proxy:
                async with original_client(a, proxy, stream_id, token, ["websocket"]) as client:
                    await publish(a, stream_id, 1, 2)
                    await client.wait_line(lambda _: received(client)[-1:] == [2])
                    await proxy.refuse()
                    os.kill(a.process.pid, signal.SIGKILL)
                    await proxy.sever()
                    await publish(b, stream_id, 3, 4)
                    proxy.target = ("127.0.0.1", port_of(b))
                    await proxy.allow()
                    await client.wait_line(lambda _: received(client)[-1:] == [4])
                    await publish(b, stream_id, 5)
                    await client.wait_line(lambda _: received(client)[-1:] == [5])
                    assert received(client) == [1, 2, 3, 4, 5]
                    assert (await connects(client, 2))[-1]["recovered"] is True
    finally:
        await delete_redis_prefix(name)
        await drop_schema(PgSchema(PG_DSN, name))


@pytest.mark.parametrize("recovery", [None, "true"])
async def test_python_socketio_handlers_of_one_argument_keep_working(
    server: Server, recovery: str | None
) -> None:
    """python-socketio calls a handler with every argument of an event: its clients get
    no offsets (and no pid) unless they ask for `recovery`."""
    import socketio

    stream_id, token = await server.stream_and_token()
    got: list[Any] = []
    seen = asyncio.Event()
    sio = socketio.AsyncClient(reconnection=False)
    if recovery is None:
        sio.on("message", lambda data: (got.append([data]), seen.set()))  # one argument
    else:
        sio.on("message", lambda *args: (got.append(list(args)), seen.set()))
    auth = {"stream": stream_id, "token": token}
    if recovery is not None:
        auth["recovery"] = recovery
    await sio.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=10)
    try:
        [message_id] = await publish(server, stream_id, 1)
        await asyncio.wait_for(seen.wait(), 10)
        assert got == ([[{"n": 1}]] if recovery is None else [[{"n": 1}, message_id]])
    finally:
        await sio.disconnect()


async def test_a_resume_past_the_replay_cap_gets_everything_in_order(server: Server) -> None:
    """More than 10 000 messages missed: the newest 10 000 from one snapshot, what came
    before them paged ahead of them, all in order, each once."""
    stream_id, token = await server.stream_and_token()
    total = 10_500
    async with Proxy("127.0.0.1", port_of(server)) as proxy:
        async with original_client(server, proxy, stream_id, token, ["websocket"]) as client:
            await publish(server, stream_id, 0)
            await client.wait_line(lambda _: received(client)[-1:] == [0])
            await cut(proxy)
            for start in range(1, total, 1500):
                await publish(server, stream_id, *range(start, min(start + 1500, total)))
            await proxy.allow()
            await client.wait_line(lambda _: received(client)[-1:] == [total - 1], timeout=40)
            assert received(client) == list(range(total))
            assert (await connects(client, 2))[-1]["recovered"] is True


async def test_a_resume_that_retention_overtakes_is_cut_short_never_skips(
    tmp_path: Path,
) -> None:
    """The client comes back (recovered) to more than its connection can take at once,
    stops reading, and retention trims what the resume had still to send: it gets what
    follows its offset without a hole, then its connection ends; socket.io-client
    reconnects by itself and is told `recovery_failed`. Nothing after the hole reaches
    it as if it were next."""
    pad = "x" * 4000  # 3000 of these: ~12 MB, more than the server's buffers hold
    env = {"BLOOMR_TRIM_INTERVAL": "0.1"}
    with running_server(env=env, data_dir=tmp_path) as srv:
        keep = {"retention": {"max_messages": 3500}}
        stream_id, token = await srv.stream_and_token(**keep)

        async def publish_padded(numbers: range) -> None:
            for start in range(numbers.start, numbers.stop, 200):
                end = min(start + 200, numbers.stop)
                items = [{"data": {"n": n, "pad": pad}} for n in range(start, end)]
                await srv.publish(stream_id, items)

        async def oldest_kept() -> int:
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.get(
                    f"/api/streams/{stream_id}/messages",
                    params={"limit": 1},
                    headers={"Authorization": f"Bearer {token}"},
                )
            return int(r.json()["messages"][0]["data"]["n"])

        async with Proxy("127.0.0.1", port_of(srv)) as proxy:
            async with original_client(srv, proxy, stream_id, token, ["websocket"]) as client:
                await publish(srv, stream_id, 0)
                await client.wait_line(lambda _: received(client)[-1:] == [0])
                await cut(proxy)
                await publish_padded(range(1, 3001))  # missed: its resume
                proxy.hold(after=256 * 1024)  # its handshake, then the resume's start
                await proxy.allow()
                await connects(client, 2)
                await publish_padded(range(3001, 6001))  # retention keeps 3500 of 6001
                async with asyncio.timeout(15):
                    while await oldest_kept() < 2501:  # the newest 3500 of 0..6000
                        await asyncio.sleep(0.05)
                proxy.release()
                await client.wait_line(lambda line: line.get("event") == "warning", timeout=30)
                await publish(srv, stream_id, 7000)
                await client.wait_line(lambda _: received(client)[-1:] == [7000], timeout=30)
    got = received(client)
    resumed = got[: got.index(7000)]
    assert resumed == list(range(len(resumed))) and 1 < len(resumed) < 3001
    assert [c["recovered"] for c in client.events("connect")] == [False, True, False]
    assert [w["data"]["code"] for w in client.events("warning")] == ["recovery_failed"]
