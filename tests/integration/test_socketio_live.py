"""Live delivery (SPEC §1, §2): the exact replay -> live hand-over while a publisher
runs, channel and stream isolation, sessions ended by token revocation, stream
deletion and token expiry, and slow consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import websockets

from server import Server, running_server
from sioclient import (
    Publisher,
    Recorder,
    admin_delete,
    check_handover,
    connect_and_wait,
    connected,
    numbers,
    poll_messages,
    refused,
)

# -- the exact hand-over --------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_exact_handover_while_publishing(server: Server) -> None:
    """Clients join with a replay while a publisher keeps publishing; each must see one
    contiguous run of numbers, replayed ones first, ending at the last one published:
    no gap, no duplicate, no reordering."""
    stream_id, token = await server.stream_and_token()
    publisher = Publisher(server, stream_id)
    publishing = asyncio.create_task(publisher.run())
    clients: list[tuple[str, Recorder, int | None]] = []  # (how, client, expected first n)
    try:
        await publisher.reach(50)
        # (how, transport, handshake args, the first number it must get, if known)
        plans: list[tuple[str, str, dict[str, Any], int | None]] = [
            ("replay by age", "websocket", {"replay": "1h"}, 0),
            ("replayLimit 40, polling", "polling", {"replayLimit": 40}, None),
            ("replay from an id", "websocket", {"replay": "id"}, None),
            ("replay from an id, polling", "polling", {"replay": "id"}, None),
            ("replayLimit 10000", "websocket", {"replayLimit": 10000}, 0),
            ("replay by date", "polling", {"replay": "2020-01-01T00:00:00Z"}, 0),
            ("no replay", "websocket", {}, None),
        ]
        for i, (how, transport, args, first) in enumerate(plans):
            await publisher.reach(50 + 40 * (i + 1))  # staggered, mid-stream
            if args.get("replay") == "id":
                at = len(publisher.ids) - 7
                args = {"replay": publisher.ids[at]}
                first = at + 1
            url = server.socket_url(stream=stream_id, token=token, includeMetadata=1, **args)
            client = Recorder()
            clients.append((how, client, first))
            await client.connect(url, transport=transport)
        # keep publishing until every client is live, then a little more
        for _, client, _ in clients:
            await client.wait_event("replay_end", timeout=30)
        await publisher.reach(len(publisher.ids) + 60)
    finally:
        publisher.stopping.set()
        await publishing
    last = await publisher.finish()
    try:
        for how, client, first in clients:
            await client.wait_until(
                lambda c=client: c.count("message") > 0 and "last" in c.messages[-1]["data"],
                timeout=30,
            )
            envelopes = client.messages
            replayed = check_handover(how, envelopes, publisher.ids, last)
            if first is not None:
                assert envelopes[0]["data"]["n"] == first, how
            if how.startswith("replayLimit 40"):
                assert replayed == 40
            elif how == "no replay":
                assert replayed == 0
            else:
                assert replayed > 0, how
            assert replayed < len(envelopes), f"{how}: nothing live"
            # replay_end right after the replayed ones, with their count and last id
            names = [n for n in client.names if n in ("message", "replay_end")]
            assert names.index("replay_end") == replayed, how
            end = client.named("replay_end")[0]
            assert end == {
                "count": replayed,
                "lastId": envelopes[replayed - 1]["id"] if replayed else None,
            }, how
            assert client.errors == [] and not client.disconnected, how
    finally:
        for _, client, _ in clients:
            await client.close()


async def test_concurrent_publishers_one_total_order(server: Server) -> None:
    """Several publishers at once: every subscriber sees the same order, the stream's
    one order, which is also the order of its history."""
    stream_id, token = await server.stream_and_token()
    subscribers = [
        await connect_and_wait(server.socket_url(stream=stream_id, token=token, **extra))
        for extra in ({}, {"includeMetadata": "true"}, {})
    ]

    async def publish(who: str) -> None:
        async with server.client() as http:
            for i in range(40):
                r = await http.post(
                    f"/api/streams/{stream_id}/messages",
                    json=[{"data": f"{who}-{i}-{k}"} for k in range(i % 3 + 1)],
                    headers=server.admin,
                )
                assert r.status_code == 201, r.text

    try:
        await asyncio.gather(*(publish(who) for who in "abcd"))
        history = (await poll_messages(server, stream_id, token, limit=10000))["messages"]
        order = [m["data"] for m in history]
        assert len(order) == 4 * sum(i % 3 + 1 for i in range(40))
        for client in subscribers:
            received = await client.wait_messages(len(order))
            data = [m["data"] if isinstance(m, dict) else m for m in received]
            assert data == order
        assert [m["id"] for m in subscribers[1].messages] == [m["id"] for m in history]
        # each publisher's own messages keep their order, each batch contiguous
        for who in "abcd":
            mine = [d for d in order if d.startswith(who + "-")]
            expected = [f"{who}-{i}-{k}" for i in range(40) for k in range(i % 3 + 1)]
            assert mine == expected
        for i in range(len(order) - 1):
            who, batch, k = order[i].split("-")
            if int(k) < int(batch) % 3:  # not the batch's last: its next one follows
                assert order[i + 1] == f"{who}-{batch}-{int(k) + 1}"
    finally:
        for client in subscribers:
            await client.close()


async def test_message_published_right_after_connect_is_delivered(server: Server) -> None:
    """What the original example's users do: wait for `connect`, then expect every
    message published from then on. Here while the server is busy serving large
    history reads (as many HTTP polls of a big backlog would make it)."""
    stream_id, token = await server.stream_and_token()
    big_id, big_token = await server.stream_and_token()
    pad = "y" * 1000
    async with server.client() as http:
        for start in range(0, 10000, 1000):
            items = [{"data": {"n": n, "pad": pad}} for n in range(start, start + 1000)]
            r = await http.post(f"/api/streams/{big_id}/messages", json=items, headers=server.admin)
            assert r.status_code == 201, r.text

        async def big_read() -> None:
            r = await http.get(
                f"/api/streams/{big_id}/messages",
                params={"limit": 10000},
                headers={"Authorization": f"Bearer {big_token}"},
            )
            assert r.status_code == 200

        missed = []
        for attempt in range(2):
            reads = [asyncio.create_task(big_read()) for _ in range(6)]
            await asyncio.sleep(0.05)  # let the reads reach the server first
            client = Recorder()
            try:
                await client.connect(server.socket_url(stream=stream_id, token=token))
                # connected: from now on every message must arrive
                await server.publish(stream_id, {"data": attempt})
                await asyncio.gather(*reads)
                marker = f"after {attempt}"
                await server.publish(stream_id, {"data": marker})
                await client.wait_messages(1, timeout=10)
                await client.wait_until(lambda c=client, m=marker: c.messages[-1] == m)
                if attempt not in client.messages:
                    missed.append(attempt)
            finally:
                await client.close()
        assert missed == [], f"published right after connect, never delivered: {missed}"


# -- isolation ------------------------------------------------------------------------------


async def test_channel_isolation(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    channels = ["", "errors", "custom"]
    subscribers: dict[str, Recorder] = {}
    try:
        for channel in channels:
            url = server.socket_url(stream=stream_id, token=token, channel=channel)
            subscribers[channel] = await connect_and_wait(url)
        items = [
            {"channel": channels[n % 3], "data": {"n": n, "to": channels[n % 3]}} for n in range(30)
        ]
        await server.publish(stream_id, items[:15])
        for item in items[15:]:
            await server.publish(stream_id, item)
        for channel, client in subscribers.items():
            expected = [item["data"] for item in items if item["channel"] == channel]
            await client.wait_messages(len(expected))
        # a last message on each channel: nothing else can be in flight before it
        await server.publish(
            stream_id, [{"channel": c, "data": {"n": 99, "to": c}} for c in channels]
        )
        for channel, client in subscribers.items():
            expected = [item["data"] for item in items if item["channel"] == channel]
            expected.append({"n": 99, "to": channel})
            count = len(expected)
            await client.wait_until(lambda c=client, n=count: c.count("message") >= n)
            assert client.messages == expected, channel
    finally:
        for client in subscribers.values():
            await client.close()

    # replay is per channel too
    for channel in channels:
        url = server.socket_url(stream=stream_id, token=token, channel=channel, replayLimit=100)
        client = await connect_and_wait(url)
        await client.close()
        assert {m["to"] for m in client.messages} == {channel}
        assert len(client.messages) == 11


async def test_one_token_never_reads_another_stream(server: Server) -> None:
    stream_a, token_a = await server.stream_and_token()
    stream_b, token_b = await server.stream_and_token()
    await server.publish(stream_b, {"data": "secret of b"})

    for args in ({}, {"replay": "1h"}, {"replayLimit": 5}):
        error = await refused(server.socket_url(stream=stream_b, token=token_a, **args))
        assert error["code"] == "unauthorized"
    # ... nor through the auth object, mixed with the right stream in the query
    error = await refused(
        server.socket_url(stream=stream_a, token=token_a), auth={"stream": stream_b}
    )
    assert error["code"] == "unauthorized"

    # subscribers of A never see B's messages, live or replayed
    url = server.socket_url(stream=stream_a, token=token_a, replay="1h")
    async with connected(url) as client:
        await client.wait_event("replay_end")
        assert client.messages == []
        await server.publish(stream_b, {"data": "more of b"})
        await server.publish(stream_a, {"data": "of a"})
        await client.wait_messages(1)
        await server.publish(stream_a, {"data": "of a, again"})
        assert await client.wait_messages(2) == ["of a", "of a, again"]


async def test_wildcard_token_reads_every_stream(server: Server) -> None:
    stream_a, _ = await server.stream_and_token()
    stream_b, _ = await server.stream_and_token()
    wildcard = (await server.create_token(["*"]))["token"]
    await server.publish(stream_a, {"data": "a"})
    await server.publish(stream_b, {"data": "b"})
    for stream_id, data in ((stream_a, "a"), (stream_b, "b")):
        client = await connect_and_wait(
            server.socket_url(stream=stream_id, token=wildcard, replayLimit=1)
        )
        await client.close()
        assert client.messages == [data]


# -- sessions ended by the server -------------------------------------------------------------


async def test_token_revocation_ends_live_sessions_within_1s(server: Server) -> None:
    stream_id, _ = await server.stream_and_token()
    doomed = await server.create_token([stream_id])
    kept = await server.create_token([stream_id])
    doomed_clients = [
        await connect_and_wait(
            server.socket_url(stream=stream_id, token=doomed["token"], channel=channel),
            transport=transport,
        )
        for channel, transport in (("", "websocket"), ("errors", "polling"))
    ]
    survivor = await connect_and_wait(server.socket_url(stream=stream_id, token=kept["token"]))
    try:
        await server.publish(stream_id, {"data": "before"})
        await doomed_clients[0].wait_messages(1)

        started = time.monotonic()
        await admin_delete(server, f"/api/tokens/{doomed['id']}")
        for client in doomed_clients:
            await client.wait_disconnect(timeout=5)
            assert time.monotonic() - started < 1.0, "session outlived its token by 1 s"
            assert client.names[-2:] == ["error", "disconnect"], client.summary()
            assert client.errors[-1]["code"] == "token_revoked"
            assert client.named("disconnect") == [client.sio.reason.SERVER_DISCONNECT]

        # the other token's session is untouched, and the revoked token is refused
        await server.publish(stream_id, {"data": "after"})
        assert await survivor.wait_messages(2) == ["before", "after"]
        assert not survivor.disconnected
        error = await refused(server.socket_url(stream=stream_id, token=doomed["token"]))
        assert error["code"] == "unauthorized"
    finally:
        for client in [*doomed_clients, survivor]:
            await client.close()


async def test_stream_deletion_ends_sessions_within_1s(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    other_id, other_token = await server.stream_and_token()
    clients = [
        await connect_and_wait(
            server.socket_url(stream=stream_id, token=token, channel=channel),
            transport=transport,
        )
        for channel, transport in (("", "websocket"), ("errors", "websocket"), ("", "polling"))
    ]
    bystander = await connect_and_wait(server.socket_url(stream=other_id, token=other_token))
    try:
        started = time.monotonic()
        await admin_delete(server, f"/api/streams/{stream_id}")
        for client in clients:
            await client.wait_disconnect(timeout=5)
            assert time.monotonic() - started < 1.0, "session outlived its stream by 1 s"
            assert client.names[-2:] == ["error", "disconnect"], client.summary()
            assert client.errors[-1]["code"] == "stream_deleted"

        # the deleted stream is gone for new clients; other streams carry on
        error = await refused(server.socket_url(stream=stream_id, token=token))
        assert error["code"] == "unauthorized"
        await server.publish(other_id, {"data": "still here"})
        assert await bystander.wait_messages(1) == ["still here"]
        assert not bystander.disconnected
    finally:
        for client in [*clients, bystander]:
            await client.close()


async def test_token_expiry_ends_live_session(server: Server) -> None:
    stream_id, _ = await server.stream_and_token()
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    token = await server.create_token([stream_id], expires_at=expires.isoformat())
    async with connected(server.socket_url(stream=stream_id, token=token["token"])) as client:
        await client.wait_event("replay_end")
        await server.publish(stream_id, {"data": "while valid"})
        assert await client.wait_messages(1) == ["while valid"]
        await client.wait_disconnect(timeout=10)
        late = time.time() - expires.timestamp()
        assert late < 1.0, f"session outlived its token's expiry by {late:.2f} s"
        assert client.names[-2:] == ["error", "disconnect"], client.summary()
        assert isinstance(client.errors[-1]["code"], str)


# -- slow consumers --------------------------------------------------------------------------

PAD = "x" * 32 * 1024  # 32 KiB of data per message
SLOW_MESSAGES = 1200  # ~40 MB: more than kernel buffers + the server's backlog of 200


@pytest.fixture(scope="module")
def small_backlog_server() -> Iterator[Server]:
    with running_server(env={"BLOOMR_BACKLOG_MESSAGES": "200"}) as srv:
        yield srv


class StalledClient:
    """A websocket Socket.IO client that completes the handshake, then stops reading
    (a tiny receive buffer, and the websockets library pauses the socket once one
    message is waiting)."""

    def __init__(self, ws: Any, sock: socket.socket) -> None:
        self.ws = ws
        self.sock = sock

    @classmethod
    async def connect(cls, server: Server, auth: dict[str, Any]) -> StalledClient:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        ws = await websockets.connect(
            f"ws://{host}:{port}/socket.io/?EIO=4&transport=websocket",
            sock=sock,
            max_queue=1,
            compression=None,
            max_size=None,
            close_timeout=0.5,
        )
        opened = await ws.recv()
        assert opened.startswith("0{"), opened
        await ws.send("40" + json.dumps(auth))
        connected_ = await ws.recv()
        assert connected_.startswith("40{"), connected_
        client = cls(ws, sock)
        assert (await client.next_event())[0] == "replay_end"
        return client

    async def next_event(self, timeout: float = 10) -> tuple[str, Any]:
        """The next Socket.IO event (answering pings); ("disconnect", None) for `41`."""
        while True:
            packet = await asyncio.wait_for(self.ws.recv(), timeout)
            if packet == "2":
                await self.ws.send("3")
            elif packet.startswith("42"):
                name, *args = json.loads(packet[2:])
                return name, args[0] if args else None
            elif packet.startswith("41"):
                return "disconnect", None

    @property
    def server_side_state(self) -> str | None:
        """The TCP state of the server's end of this connection, from /proc/net/tcp
        ("01" ESTABLISHED), or None once the server has dropped it."""
        local_port = self.sock.getsockname()[1]
        server_port = self.sock.getpeername()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == server_port and (
                int(remote.rsplit(":", 1)[1], 16) == local_port
            ):
                return state
        return None

    async def close(self) -> None:
        self.ws.transport.abort()  # no closing handshake with a peer that may be gone
        await self.ws.wait_closed()


async def overflow(server: Server, stream_id: str, fast: Recorder) -> float:
    """Publish SLOW_MESSAGES big messages; return how long after the last publish the
    fast client had them all."""
    async with server.client() as http:
        for start in range(0, SLOW_MESSAGES, 16):
            items = [{"data": {"n": n, "pad": PAD}} for n in range(start, start + 16)]
            r = await http.post(
                f"/api/streams/{stream_id}/messages", json=items, headers=server.admin
            )
            assert r.status_code == 201, r.text
    published = time.monotonic()
    await fast.wait_messages(SLOW_MESSAGES, timeout=30)
    return time.monotonic() - published


@pytest.mark.slow
async def test_slow_consumer_never_holds_back_the_others(small_backlog_server: Server) -> None:
    server = small_backlog_server
    stream_id, token = await server.stream_and_token()
    auth = {"stream": stream_id, "token": token, "includeMetadata": True}
    stalled = await StalledClient.connect(server, auth)
    fast = await connect_and_wait(server.socket_url(stream=stream_id, token=token))
    try:
        lag = await overflow(server, stream_id, fast)
        # the fast client got everything, in order, promptly
        assert lag < 5, f"the fast client lagged {lag:.1f} s behind the publisher"
        assert numbers(fast.messages) == list(range(SLOW_MESSAGES))
        assert not fast.disconnected

        # the server keeps serving: HTTP, new subscribers, publishing
        async with server.client() as http:
            assert (await http.get("/healthz")).status_code == 200
        newcomer = await connect_and_wait(
            server.socket_url(stream=stream_id, token=token, replayLimit=1)
        )
        await newcomer.close()
        assert numbers(newcomer.messages) == [SLOW_MESSAGES - 1]

        # the stalled client, reading again, finds a prefix of the stream and then its
        # end: the slow_consumer warning and a disconnect, or (the server having
        # dropped the connection) just the end of the connection
        received: list[dict[str, Any]] = []
        ending: tuple[str, Any] = ("connection dropped", None)
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                name, payload = await stalled.next_event()
                if name != "message":
                    ending = (name, payload)
                    break
                received.append(payload)
        if ending[0] == "warning":
            assert ending[1]["code"] == "slow_consumer", ending
            assert (await stalled.next_event())[0] == "disconnect"
        else:
            assert ending[0] in ("connection dropped", "disconnect"), ending
        assert len(received) < SLOW_MESSAGES
        assert numbers(received) == list(range(len(received)))

        # nothing is lost from history: it catches up with replay=<last id>
        replay = received[-1]["id"] if received else "1h"
        url = server.socket_url(stream=stream_id, token=token, replay=replay)
        catch_up = await connect_and_wait(url)
        await catch_up.close()
        assert numbers(catch_up.messages) == list(range(len(received), SLOW_MESSAGES))
    finally:
        await stalled.close()
        await fast.close()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")
async def test_stalled_consumer_is_disconnected(small_backlog_server: Server) -> None:
    server = small_backlog_server
    stream_id, token = await server.stream_and_token()
    stalled = await StalledClient.connect(server, {"stream": stream_id, "token": token})
    fast = await connect_and_wait(server.socket_url(stream=stream_id, token=token))
    try:
        await overflow(server, stream_id, fast)  # far past the backlog of 200
        # the server must drop a client that fell that far behind
        deadline = time.monotonic() + 5
        while stalled.server_side_state == "01" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert stalled.server_side_state != "01", "still connected 5 s after overflowing"
    finally:
        await stalled.close()
        await fast.close()
