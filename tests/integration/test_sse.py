"""Server-sent events (SPEC §3, `GET /api/streams/{id}/events`): the socket's contract
over plain HTTP, served by the SSE transport on the same subscriber session as
Socket.IO. Errors before the stream starts are ordinary HTTP errors."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from httpkit import Api, assert_error, assert_uuid7, bearer
from test_http_publish_paths import messages_url

from server import running_server

pytestmark = pytest.mark.timeout(60)


def events_url(stream_id: str) -> str:
    return f"/api/streams/{stream_id}/events"


class EventStream:
    """One open event stream, read event by event: `(name, id, data)`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 10) -> tuple[str, str | None, Any]:
        name, event_id, data = "message", None, None
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data = orjson.loads(line[6:])
                elif line == "" and data is not None:
                    return name, event_id, data
        raise AssertionError("the event stream ended")

    async def until(self, name: str) -> list[tuple[str, str | None, Any]]:
        """Every event up to and including the first `name`."""
        seen = [await self.next()]
        while seen[-1][0] != name:
            seen.append(await self.next())
        return seen


@contextlib.asynccontextmanager
async def open_events(
    api: Api,
    stream_id: str,
    secret: str | None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> AsyncIterator[EventStream]:
    """An event stream, authorized by `secret` as a bearer token (None: by the query)."""
    auth = bearer(secret) if secret is not None else {}
    request = api.client.build_request(
        "GET", events_url(stream_id), params=params, headers={**auth, **(headers or {})}
    )
    response = await api.client.send(request, stream=True)
    try:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        yield EventStream(response)
    finally:
        await response.aclose()


async def test_replay_then_live(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    first = await api.publish(stream_id, [{"data": 1}, {"data": 2}])
    async with open_events(api, stream_id, token, replay="1h") as events:
        replayed = await events.until("replay_end")
        assert [(n, i) for n, i, _ in replayed[:2]] == [
            ("message", first[0]),
            ("message", first[1]),
        ]
        for _, event_id, envelope in replayed[:2]:
            assert_uuid7(envelope["id"])
            assert (envelope["id"], envelope["stream"], envelope["channel"]) == (
                event_id,
                stream_id,
                "",
            )
            assert envelope["replayed"] is True
        assert replayed[2][2] == {"count": 2, "lastId": first[1]}
        (live_id,) = await api.publish(stream_id, {"data": "live"}, token)
        name, event_id, envelope = await events.next()
        assert (name, event_id, envelope["data"], envelope["replayed"]) == (
            "message", live_id, "live", False
        )  # fmt: skip


async def test_last_event_id_resumes_strictly_after(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": n} for n in range(5)])
    headers = {"Last-Event-ID": ids[1]}
    async with open_events(api, stream_id, token, headers, replay="1h") as events:
        replayed = await events.until("replay_end")
        assert [i for n, i, _ in replayed if n == "message"] == ids[2:]


async def test_token_in_the_query_and_warnings_as_named_events(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    await api.publish(stream_id, {"data": 1})
    async with open_events(api, stream_id, None, token=token, replayLimit="20000") as events:
        replayed = await events.until("replay_end")
        names = [n for n, _, _ in replayed]
        assert names == ["warning", "message", "replay_end"]
        assert replayed[0][2]["code"] == "replay_limit_capped"


async def test_stream_deleted_ends_the_stream_with_an_error(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    async with open_events(api, stream_id, token) as events:
        await events.until("replay_end")
        r = await api.client.delete(f"/api/streams/{stream_id}", headers=api.admin)
        assert r.status_code == 204
        name, _, payload = await events.next()
        assert (name, payload["code"]) == ("error", "stream_deleted")
        with pytest.raises(AssertionError, match="ended"):
            await events.next()


async def test_errors_before_the_stream_are_http_errors(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    publisher = (await api.create_token([stream_id], ["publish"]))["token"]
    get = api.client.get
    assert_error(await get(events_url(stream_id)), 401, "unauthorized")
    assert_error(await get(events_url(stream_id), headers=bearer("nope")), 401, "unauthorized")
    assert_error(await get(events_url(stream_id), headers=bearer(publisher)), 403, "forbidden")
    assert_error(await get(events_url("missing"), headers=api.admin), 404, "not_found")
    r = await get(events_url(stream_id), params={"replay": "soon"}, headers=bearer(token))
    assert_error(r, 400, "invalid_argument", "replay")
    r = await api.client.post(events_url(stream_id), headers=bearer(token))
    assert_error(r, 405, "method_not_allowed")


async def test_documented_in_openapi(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    assert "get" in doc["paths"]["/api/streams/{stream_id}/events"]


# -- a client that stops reading ----------------------------------------------------------

PAD = "x" * 32 * 1024
SLOW_MESSAGES = 1200  # ~40 MB: more than kernel buffers + the server's backlog of 200


async def test_a_stalled_client_is_cut_off_with_the_sockets_warning() -> None:
    """The session waits while the client's unsent bytes are over the mark; when its
    backlog overflows it gets `warning` `slow_consumer` (the socket's payload) as its
    last event, once it reads again."""
    with running_server(env={"BLOOMR_BACKLOG_MESSAGES": "200"}) as server:
        stream_id, token = await server.stream_and_token()
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        try:
            request = f"GET {events_url(stream_id)}?token={token} HTTP/1.1\r\nHost: t\r\n\r\n"
            writer.write(request.encode())
            async with asyncio.timeout(10):
                await reader.readuntil(b"event: replay_end")
            async with server.client() as http:
                for start in range(0, SLOW_MESSAGES, 16):
                    items = [{"data": {"n": n, "pad": PAD}} for n in range(start, start + 16)]
                    r = await http.post(messages_url(stream_id), json=items, headers=server.admin)
                    assert r.status_code == 201, r.text
                    if await slow_consumers(http) >= 1:
                        break
                else:
                    await wait_for_slow_consumer(http)
            rest = await read_until(reader, b"\r\n0\r\n\r\n")  # the response's end
            last = rest.rsplit(b"event: ", 1)[1]
            assert last.startswith(b'warning\ndata: {"code":"slow_consumer"'), last
            assert b"reconnect with replay=<last id>" in last  # the socket's message
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    """What arrives up to and including `marker` (only the last MiB of it is kept)."""
    data = b""
    async with asyncio.timeout(20):
        while (end := data.find(marker)) < 0:
            chunk = await reader.read(1 << 16)
            assert chunk, "the connection ended first"
            data = data[-(1 << 20) :] + chunk
    return data[: end + len(marker)]


async def slow_consumers(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("bloomr_slow_consumers_total "))
    return float(line.split()[1])


async def wait_for_slow_consumer(http: httpx.AsyncClient) -> None:
    async with asyncio.timeout(20):
        while await slow_consumers(http) < 1:
            await asyncio.sleep(0.05)
