"""Hostile Engine.IO / Socket.IO, over raw websockets and raw polling: odd handshake
numbers, another namespace's DISCONNECT, clients that never read their pongs, polling
POSTs without GETs, sessions that never CONNECT. Each ends with a normal publish and
subscribe."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from raw import (
    BACKLOG,
    STALLED_RCVBUF,
    RawSocketIO,
    assert_serves,
    closed_by_server,
    slow_consumers,
)

from server import Server, running_server
from sioclient import connect_and_wait

pytestmark = pytest.mark.timeout(40)


def eio(**query: str) -> dict[str, str]:
    return {"EIO": "4", "transport": "polling", **query}


@pytest.mark.parametrize("limit", [2**63, 2**64 + 1, 10**30, 1e300, "9" * 40])
async def test_a_replay_limit_past_any_number_is_capped(hostile: Server, limit: object) -> None:
    stream, token = await hostile.stream_and_token()
    await hostile.publish(stream, [{"data": n} for n in range(3)], token)
    client = await RawSocketIO.open(hostile)
    try:
        await client.connect({"stream": stream, "token": token, "replayLimit": limit})
        events = await client.events_until("replay_end")
        warnings = [payload for name, payload in events if name == "warning"]
        assert warnings[0]["code"] == "replay_limit_capped", events
        assert [p for name, p in events if name == "message"] == [0, 1, 2]
        assert events[-1][1]["count"] == 3
    finally:
        client.close()
    async with hostile.client() as http:  # SSE: the same parser, the same answer
        async with http.stream(
            "GET",
            f"/api/streams/{stream}/events",
            params={"replayLimit": str(2**63), "token": token},
        ) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data:") and "replay_limit_capped" in line:
                    break
    await assert_serves(hostile)


async def test_a_disconnect_for_another_namespace_leaves_the_default_one(hostile: Server) -> None:
    stream, token = await hostile.stream_and_token()
    client = await RawSocketIO.open(hostile)
    try:
        await client.connect({"stream": stream, "token": token})
        await client.events_until("replay_end")
        client.send("41/admin,")
        await hostile.publish(stream, {"data": "still here"}, token)
        events = await client.events_until("message")
        assert events[-1] == ("message", "still here")
    finally:
        client.close()
    await assert_serves(hostile)


async def test_pings_never_read_close_the_session_at_the_backlog(hostile: Server) -> None:
    client = await RawSocketIO.open(hostile, rcvbuf=STALLED_RCVBUF)
    try:
        big = "2" + "x" * 900_000  # under Engine.IO's maxPayload (1 MB)
        with contextlib.suppress(ConnectionError):  # reset while still sending: cut off
            for _ in range(BACKLOG // 900_000 + 8):
                client.send(big)
                await client.writer.drain()
        assert await closed_by_server(client.reader, 3)
    finally:
        client.close()
    await assert_serves(hostile)


async def test_polling_posts_without_gets_close_the_session_at_the_backlog(
    hostile: Server,
) -> None:
    async with hostile.client() as http:
        r = await http.get("/socket.io/", params=eio())
        sid = json.loads(r.text[1:])["sid"]
        body = "\x1e".join(["2" + "y" * 100_000] * 9)  # 900 kB of pings a POST
        refused = None
        for _ in range(BACKLOG // 900_000 + 4):
            r = await http.post("/socket.io/", params=eio(sid=sid), content=body)
            if r.status_code != 200:
                refused = r
                break
        assert refused is not None and refused.status_code == 400, "the outbox grew unbounded"
        assert refused.json()["message"] == "Session ID unknown"
    await assert_serves(hostile)


async def test_a_session_that_never_connects_is_closed(hostile: Server) -> None:
    async with hostile.client() as http:
        r = await http.get("/socket.io/", params=eio())
        sid = json.loads(r.text[1:])["sid"]
        await asyncio.sleep(2.0)  # past BLOOMR_CONNECT_TIMEOUT (1.5 s)
        r = await http.get("/socket.io/", params=eio(sid=sid))
        if r.status_code == 200:  # the CLOSE packet, then nothing
            assert r.text.startswith("1"), r.text
            r = await http.get("/socket.io/", params=eio(sid=sid))
        assert r.status_code == 400 and r.json()["message"] == "Session ID unknown"
        assert r.json()["error"] == {"code": "invalid_argument", "message": "Session ID unknown"}
    client = await RawSocketIO.open(hostile)  # and on websocket
    try:
        assert await closed_by_server(client.reader, 5)
    finally:
        client.close()
    await assert_serves(hostile)


async def test_sessions_waiting_to_connect_are_capped() -> None:
    with running_server(env={"BLOOMR_MAX_UNCONNECTED": "5"}) as server:
        async with server.client() as http:
            sids = []
            for _ in range(5):
                r = await http.get("/socket.io/", params=eio())
                sids.append(json.loads(r.text[1:])["sid"])
            r = await http.get("/socket.io/", params=eio())
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "unavailable"  # and Engine.IO's own code
            assert r.json()["code"] == 3
            for sid in sids:  # they leave: room again
                await http.post("/socket.io/", params=eio(sid=sid), content="1")
            r = await http.get("/socket.io/", params=eio())
            assert r.status_code == 200
        await assert_serves(server)


async def test_a_replay_to_a_client_that_never_reads_ends_in_slow_consumer(
    hostile: Server,
) -> None:
    """Twice the backlog in replay, to a websocket that reads nothing: cut off once the
    stall timeout passes (its `warning` is lost with the connection, which is aborted)."""
    stream, token = await hostile.stream_and_token()
    async with hostile.client() as http:
        for _ in range(2 * BACKLOG // (512 * 1024) + 1):
            r = await http.post(
                f"/api/streams/{stream}/messages",
                json={"data": "z" * (512 * 1024)},
                headers=hostile.admin,
            )
            assert r.status_code == 201
        before = await slow_consumers(http)
        client = await RawSocketIO.open(hostile, rcvbuf=STALLED_RCVBUF)
        try:
            client.send("40" + json.dumps({"stream": stream, "token": token, "replayLimit": 100}))
            async with asyncio.timeout(15):  # reading nothing meanwhile
                while await slow_consumers(http) < before + 1:
                    await asyncio.sleep(0.1)
            assert await closed_by_server(client.reader, 5)
        finally:
            client.close()
    await assert_serves(hostile)


async def test_a_replay_larger_than_memory_holds_arrives_whole(hostile: Server) -> None:
    """The replay is held only a few chunks ahead and read again from history: a client
    that reads gets every message once, in order, then live."""
    stream, token = await hostile.stream_and_token()
    pad = "p" * (100 * 1024)
    await hostile.publish(stream, [{"data": f"{n:03d}{pad}"} for n in range(20)], token)
    await hostile.publish(stream, [{"channel": "other", "data": "x"}] * 5, token)
    await hostile.publish(stream, [{"data": f"{n:03d}{pad}"} for n in range(20, 45)], token)
    url = hostile.socket_url(stream=stream, token=token, replayLimit=40)
    client = await connect_and_wait(url)
    try:
        assert client.named("replay_end")[0]["count"] == 40
        assert [m[:3] for m in client.messages] == [f"{n:03d}" for n in range(5, 45)]
        await hostile.publish(stream, {"data": "live"}, token)
        assert (await client.wait_messages(41))[-1] == "live"
    finally:
        await client.close()
    # and over polling, read raw
    async with hostile.client() as http:
        r = await http.get("/socket.io/", params=eio())
        sid = json.loads(r.text[1:])["sid"]
        auth = {"stream": stream, "token": token, "replayLimit": 40}
        await http.post("/socket.io/", params=eio(sid=sid), content="40" + json.dumps(auth))
        got: list[str] = []
        async with asyncio.timeout(20):
            while "replay_end" not in got:
                r = await http.get("/socket.io/", params=eio(sid=sid))
                for packet in r.text.split("\x1e"):
                    if packet.startswith("42"):
                        name, payload = json.loads(packet[2:])[:2]
                        got.append(payload[:3] if name == "message" else name)
        expected = [f"{n:03d}" for n in range(6, 45)] + ["liv"]  # "live" is the newest now
        assert [g for g in got if g not in ("replay_end", "warning")] == expected
    await assert_serves(hostile)
