"""Publishing over HTTP the way real clients do it (SPEC §3): keep-alive connections,
pipelined requests, HTTP/1.0, `Connection: close`, `Expect: 100-continue`, chunked
bodies, clients that leave mid-request. bloomr publishes most requests inside its
HTTP protocol and hands the rest to its ASGI app; whichever path a request takes,
the answer, the error and the stored order must be the same."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from httpkit import Api, assert_error, assert_uuid7, bearer, messages_url, open_client

from server import Server

TIMEOUT = 20
pytestmark = pytest.mark.timeout(60)


class RawHttp:
    """One TCP connection speaking HTTP/1.1 by hand: what httpx never sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server) -> RawHttp:
        url = urlsplit(server.url)
        assert url.hostname is not None and url.port is not None
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(TIMEOUT):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def closed(self) -> bool:
        async with asyncio.timeout(TIMEOUT):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def post(stream_id: str, secret: str, body: Any, *extra: str, version: str = "1.1") -> bytes:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    head = [
        f"POST {messages_url(stream_id)} HTTP/{version}",
        "Host: test",
        f"Authorization: Bearer {secret}",
        "Content-Type: application/json",
        f"Content-Length: {len(raw)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + raw


async def stored(api: Api, stream_id: str, secret: str) -> list[Any]:
    return [m["data"] for m in await api.poll_all(stream_id, secret)]


async def test_one_keep_alive_publisher_gets_every_answer_in_order(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    reader = (await api.create_token([stream_id], ["subscribe"]))["token"]
    url = messages_url(stream_id)
    expected: list[Any] = []
    async with open_client(api.server) as client:  # one connection, kept alive
        for n in range(5):
            r = await client.post(url, json={"data": n}, headers=bearer(secret))
            assert r.status_code == 201, r.text
            assert r.headers["content-type"] == "application/json"
            [message_id] = r.json()["ids"]
            assert_uuid7(message_id)
            expected.append(n)
        batch = [{"data": {"big": i}} for i in range(300)]  # too big to store on the spot
        r = await client.post(url, json=batch, headers=bearer(secret))
        assert r.status_code == 201 and len(r.json()["ids"]) == 300
        expected += [item["data"] for item in batch]
        r = await client.post(url, json=[], headers=bearer(secret))
        assert r.status_code == 201 and r.json() == {"ids": []}
        r = await client.post(url, json={"channel": "errors", "data": "on a channel"},
                              headers=bearer(secret))  # fmt: skip
        assert r.status_code == 201
        # the errors are the route's own, whichever path answers them
        r = await client.post(url, content=b"{not json", headers=bearer(secret))
        assert_error(r, 400, "invalid_json")
        r = await client.post(url, json={"data": 1, "extra": 2}, headers=bearer(secret))
        assert_error(r, 422, "validation_failed", "extra")
        r = await client.post(url, json=[{"data": 1}, 7], headers=bearer(secret))
        assert_error(r, 422, "validation_failed", "[1]")
        for _ in range(2):  # the first answer fills the token cache, the second uses it
            r = await client.post(url, json={"data": 1}, headers=bearer(reader))
            assert_error(r, 403, "forbidden")
        r = await client.post(url, json={"data": "last"}, headers=bearer(secret))
        assert r.status_code == 201
        expected.append("last")
    assert await stored(api, stream_id, secret) == expected


async def test_an_idle_keep_alive_connection_outlasts_five_seconds(api: Api) -> None:
    """A publisher's pooled connection, idle a while, still takes the next publish: a
    server that closes it first races that request (the client sees a reset)."""
    stream_id, secret = await api.stream_and_token()
    raw = await RawHttp.open(api.server)
    try:
        await raw.send(post(stream_id, secret, {"data": 1}))
        assert (await raw.response())[0] == 201
        await asyncio.sleep(6)  # past uvicorn's default of 5 s
        await raw.send(post(stream_id, secret, {"data": 2}))
        assert (await raw.response())[0] == 201
    finally:
        await raw.close()
    assert await stored(api, stream_id, secret) == [1, 2]


async def test_pipelined_publishes_are_answered_and_stored_in_request_order(
    api: Api,
) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": "first"}, secret)  # the token is now cached
    big = [{"data": i} for i in range(200)]
    conn = await RawHttp.open(api.server)
    try:
        # one write, four requests: on the spot, handed to the app, then two more that
        # must wait for it
        await conn.send(
            post(stream_id, secret, {"data": "a"})
            + post(stream_id, secret, big)
            + post(stream_id, secret, {"data": "b"})
            + post(stream_id, secret, [{"data": "c"}, {"data": "d"}])
        )
        answers = [await conn.response() for _ in range(4)]
    finally:
        await conn.close()
    assert [status for status, _, _ in answers] == [201] * 4
    counts = [len(orjson.loads(body)["ids"]) for _, _, body in answers]
    assert counts == [1, 200, 1, 2]
    assert await stored(api, stream_id, secret) == ["first", "a", *range(200), "b", "c", "d"]


@pytest.mark.parametrize(
    ("version", "extra"),
    [("1.0", ()), ("1.0", ("Connection: keep-alive",)), ("1.1", ("Connection: close",))],
    ids=["http-1.0", "http-1.0-keep-alive", "connection-close"],
)
async def test_a_publish_on_a_connection_that_closes_after_it(
    api: Api, version: str, extra: tuple[str, ...]
) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": 0}, secret)
    conn = await RawHttp.open(api.server)
    try:
        await conn.send(post(stream_id, secret, {"data": 1}, *extra, version=version))
        status, _, body = await conn.response()
        assert status == 201, body
        assert await conn.closed()
    finally:
        await conn.close()
    assert await stored(api, stream_id, secret) == [0, 1]


async def test_expect_100_continue_and_chunked_bodies(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": 0}, secret)
    conn = await RawHttp.open(api.server)
    try:
        body = orjson.dumps({"data": 1})
        request = post(stream_id, secret, body, "Expect: 100-continue")
        await conn.send(request[: -len(body)])
        async with asyncio.timeout(TIMEOUT):
            interim = await conn.reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 ")
        await conn.send(body)
        status, _, _ = await conn.response()
        assert status == 201

        chunk = orjson.dumps([{"data": 2}, {"data": 3}])
        head = (
            f"POST {messages_url(stream_id)} HTTP/1.1\r\nHost: test\r\n"
            f"Authorization: Bearer {secret}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        await conn.send(head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
        status, _, answer = await conn.response()
        assert status == 201 and len(orjson.loads(answer)["ids"]) == 2
    finally:
        await conn.close()
    assert await stored(api, stream_id, secret) == [0, 1, 2, 3]


async def test_a_client_that_leaves_mid_body_loses_only_its_own_request(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": 0}, secret)
    conn = await RawHttp.open(api.server)
    request = post(stream_id, secret, {"data": "never sent whole"})
    await conn.send(request[:-5])
    await conn.close()
    await api.publish(stream_id, {"data": 1}, secret)
    assert await stored(api, stream_id, secret) == [0, 1]


async def test_a_revoked_token_or_deleted_stream_is_refused_at_once(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    token = await api.create_token([stream_id], ["publish"])
    url = messages_url(stream_id)
    for _ in range(2):  # cached now
        r = await api.client.post(url, json={"data": 1}, headers=bearer(token["token"]))
        assert r.status_code == 201
    r = await api.client.delete(f"/api/tokens/{token['id']}", headers=api.admin)
    assert r.status_code == 204
    r = await api.client.post(url, json={"data": 2}, headers=bearer(token["token"]))
    assert_error(r, 401, "unauthorized")

    r = await api.client.delete(f"/api/streams/{stream_id}", headers=api.admin)
    assert r.status_code == 204
    r = await api.client.post(url, json={"data": 3}, headers=bearer(secret))
    assert_error(r, 404, "not_found")
