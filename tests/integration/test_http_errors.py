"""Bad input over HTTP: malformed JSON, unknown fields, wrong types, bad batches and
channels, oversized bodies. Each gets its documented status and an error body that is
exactly `{"error": {"code", "message", ...}}`; the server keeps serving everyone else
and loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import orjson
import pytest
from httpkit import Api, assert_error, bearer, messages_url, open_client

from server import Server

MAX_BODY = 10 * 1024 * 1024  # the default limit


# -- a raw HTTP/1.1 client, to control exactly what is sent --------------------------------


async def raw_post(
    server: Server, path: str, headers: list[tuple[str, str]], chunks: list[bytes]
) -> httpx.Response:
    """Send the head and `chunks` (all of them, nothing more: no end of body), then read
    the response. With `transfer-encoding: chunked` each item is one chunk."""
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    conn = h11.Connection(h11.CLIENT)
    try:
        head = [("host", url.netloc), ("authorization", f"Bearer {server.admin_key}"), *headers]
        writer.write(conn.send(h11.Request(method="POST", target=path, headers=head)) or b"")
        for chunk in chunks:
            writer.write(conn.send(h11.Data(data=chunk)) or b"")
            await writer.drain()
        return await asyncio.wait_for(_read_response(conn, reader), 20)
    finally:
        writer.close()


async def _read_response(conn: h11.Connection, reader: asyncio.StreamReader) -> httpx.Response:
    status, headers, body = 0, [], b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, [(k, v) for k, v in event.headers]
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return httpx.Response(status, headers=headers, content=body)


def publish_body(size: int) -> bytes:
    """A valid publish body of exactly `size` bytes."""
    head, tail = b'{"data":"', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


# -- malformed JSON -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b'{"data":', b"not json", b"", b'{"data":1}}', b"\xff\xfe", b'{"data":NaN}', b"[1,]",
     b'{"data":"\\ud800"}', b"{'data': 1}"],
)  # fmt: skip
async def test_publish_malformed_json(api: Api, body: bytes) -> None:
    stream = await api.create_stream()
    r = await api.client.post(messages_url(stream["id"]), content=body, headers=api.admin)
    assert_error(r, 400, "invalid_json")


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/streams"), ("PATCH", "/api/streams/{id}"), ("POST", "/api/tokens")],
)
@pytest.mark.parametrize("body", [b'{"name":', b"nope", b'{"name": "a",}'])
async def test_admin_malformed_json(api: Api, method: str, path: str, body: bytes) -> None:
    stream = await api.create_stream()
    headers = {**api.admin, "content-type": "application/json"}
    url = path.format(id=stream["id"])
    r = await api.client.request(method, url, content=body, headers=headers)
    assert_error(r, 400, "invalid_json")


# -- unknown fields and wrong types -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/streams", {"bogus": 1}, "bogus"),
        ("/api/streams", {"name": "a", "storeHistory": False}, "storeHistory"),
        ("/api/streams", {"retention": {"max_age": "1d", "ttl": 5}}, "retention.ttl"),
        ("/api/streams", {"id": "chosenId00"}, "id"),
        ("/api/tokens", {"streams": ["*"], "admin": True}, "admin"),
        ("/api/tokens", {"streams": ["*"], "secret": "mine"}, "secret"),
    ],
)
async def test_unknown_fields_are_refused(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    r = await api.client.post(path, json=body, headers=api.admin)
    assert_error(r, 422, "validation_failed", field)


async def test_patch_unknown_fields_change_nothing(api: Api) -> None:
    stream = await api.create_stream(name="same")
    url = f"/api/streams/{stream['id']}"
    r = await api.client.patch(url, json={"name": "changed", "colour": "red"}, headers=api.admin)
    assert_error(r, 422, "validation_failed", "colour")
    assert (await api.client.get(url, headers=api.admin)).json()["name"] == "same"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/streams", {"name": 5}, "name"),
        ("/api/streams", {"store_history": "yes"}, "store_history"),
        ("/api/streams", {"store_history": 1}, "store_history"),
        ("/api/streams", {"retention": "7d"}, "retention"),
        ("/api/streams", {"retention": {"max_messages": "10"}}, "retention.max_messages"),
        ("/api/streams", {"retention": {"max_messages": 0}}, "retention.max_messages"),
        ("/api/streams", {"retention": {"max_messages": -5}}, "retention.max_messages"),
        ("/api/streams", {"retention": {"max_messages": 1.5}}, "retention.max_messages"),
        ("/api/streams", {"retention": {"max_age": 7}}, "retention.max_age"),
        ("/api/streams", {"retention": {"max_age": "forever"}}, "retention.max_age"),
        ("/api/streams", {"command": "ls -l"}, "command"),
        ("/api/streams", {"restart": "sometimes"}, "restart"),
        ("/api/tokens", {}, "streams"),
        ("/api/tokens", {"streams": "abc"}, "streams"),
        ("/api/tokens", {"streams": []}, "streams"),
        ("/api/tokens", {"streams": [1]}, "streams.0"),
        ("/api/tokens", {"streams": ["*"], "scopes": "publish"}, "scopes"),
        ("/api/tokens", {"streams": ["*"], "scopes": ["admin"]}, "scopes.0"),
        ("/api/tokens", {"streams": ["*"], "scopes": []}, "scopes"),
        ("/api/tokens", {"streams": ["*"], "expires_at": "tomorrow"}, "expires_at"),
        ("/api/tokens", {"streams": ["*"], "name": 5}, "name"),
    ],
)
async def test_wrong_types_are_refused(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    r = await api.client.post(path, json=body, headers=api.admin)
    assert_error(r, 422, "validation_failed", field)


@pytest.mark.parametrize("body", [b"[1]", b'"stream"', b"5", b"null", b""])
async def test_admin_bodies_must_be_objects(api: Api, body: bytes) -> None:
    headers = {**api.admin, "content-type": "application/json"}
    r = await api.client.post("/api/streams", content=body, headers=headers)
    assert_error(r, 422, "validation_failed")


# -- bad publish bodies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "data"),
        ({"channel": "progress"}, "data"),
        ({"data": 1, "extra": 2}, "extra"),
        ({"Data": 1}, "Data"),
        ({"data": 1, "channel": 5}, "channel"),
        ({"data": 1, "channel": None}, "channel"),
        ({"data": 1, "channel": ["a"]}, "channel"),
        ([{"data": 1}, 5], "[1]"),
        ([{"data": 1}, "text"], "[1]"),
        ([{"data": 1}, None], "[1]"),
        ([[{"data": 1}]], "[0]"),
        ([{"data": 1}, {"data": 2, "x": 1}], "[1].x"),
        ([{"data": 1}, {"channel": "c"}], "[1].data"),
        ([{"data": 1}, {"data": 2}, {"data": 3, "channel": "bad name"}], "[2].channel"),
    ],
)
async def test_publish_bad_items(api: Api, body: Any, field: str) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.post(messages_url(stream_id), json=body, headers=api.admin)
    assert_error(r, 422, "validation_failed", field)
    assert await api.poll_all(stream_id, secret) == []  # a batch is all or nothing


@pytest.mark.parametrize("body", [b"5", b'"text"', b"null", b"true"])
async def test_publish_body_must_be_an_object_or_array(api: Api, body: bytes) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.post(messages_url(stream_id), content=body, headers=api.admin)
    assert_error(r, 422, "validation_failed")
    assert await api.poll_all(stream_id, secret) == []


@pytest.mark.parametrize(
    "channel",
    ["x" * 65, "a b", " ", "a/b", "é", "new\nline", "tab\t", "emoji✓", "#hash", "a*", "a,b"],
)
async def test_publish_invalid_channel_names(api: Api, channel: str) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.post(
        messages_url(stream_id), json={"channel": channel, "data": 1}, headers=api.admin
    )
    assert_error(r, 422, "validation_failed", "channel")
    r = await api.client.post(
        messages_url(stream_id), json=[{"data": 0}, {"channel": channel, "data": 1}],
        headers=api.admin,
    )  # fmt: skip
    assert_error(r, 422, "validation_failed", "[1].channel")
    assert await api.poll_all(stream_id, secret) == []


async def test_a_refused_batch_leaves_the_order_intact(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    first = await api.publish(stream_id, [{"data": 0}, {"data": 1}])
    r = await api.client.post(
        messages_url(stream_id),
        json=[{"data": "a"}, {"data": "b"}, {"data": "c", "oops": True}],
        headers=api.admin,
    )
    assert_error(r, 422, "validation_failed", "[2].oops")
    second = await api.publish(stream_id, [{"data": 2}])
    stored = await api.poll_all(stream_id, secret)
    assert [m["data"] for m in stored] == [0, 1, 2]
    assert [m["id"] for m in stored] == first + second


# -- oversized bodies ---------------------------------------------------------------------


async def test_declared_oversized_body_is_refused_before_it_is_sent(server: Server) -> None:
    r = await raw_post(
        server,
        "/api/streams/AnyStream0/messages",
        [("content-length", str(MAX_BODY + 1)), ("content-type", "application/json")],
        [],  # the body never comes: the declared length is enough
    )
    assert_error(r, 413, "payload_too_large")


async def test_chunked_oversized_body_is_refused(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    body = publish_body(MAX_BODY + 1)
    chunks = [body[i : i + 1024 * 1024] for i in range(0, len(body), 1024 * 1024)]
    r = await raw_post(
        api.server,
        messages_url(stream_id),
        [("transfer-encoding", "chunked"), ("content-type", "application/json")],
        chunks,
    )
    assert_error(r, 413, "payload_too_large")
    assert await api.poll_all(stream_id, secret) == []


async def test_oversized_admin_body_is_refused(server: Server) -> None:
    r = await raw_post(
        server,
        "/api/streams",
        [("content-length", str(MAX_BODY + 1)), ("content-type", "application/json")],
        [],
    )
    assert_error(r, 413, "payload_too_large")


async def test_a_body_of_exactly_the_limit_is_accepted(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    body = publish_body(MAX_BODY)
    r = await api.client.post(messages_url(stream_id), content=body, headers=api.admin)
    assert r.status_code == 201, r.text[:200]
    [message] = (await api.poll(stream_id, secret))["messages"]
    assert message["data"] == orjson.loads(body)["data"]


async def test_a_chunked_body_under_the_limit_is_accepted(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()

    async def chunks() -> AsyncIterator[bytes]:
        yield b'[{"data": 1},'
        yield b'{"channel": "", "data": 2}]'

    r = await api.client.post(messages_url(stream_id), content=chunks(), headers=api.admin)
    assert r.status_code == 201, r.text
    assert [m["data"] for m in await api.poll_all(stream_id, secret)] == [1, 2]


async def test_httpx_sees_413_for_an_oversized_body(api: Api) -> None:
    stream_id, _ = await api.stream_and_token()
    body = publish_body(MAX_BODY + 1024 * 1024)
    try:
        r = await api.client.post(messages_url(stream_id), content=body, headers=api.admin)
    except httpx.TransportError as exc:
        pytest.fail(f"no response, the connection broke: {exc!r}")
    assert_error(r, 413, "payload_too_large")


# -- after all that, nothing is lost --------------------------------------------------------


async def test_bad_clients_do_not_disturb_good_ones(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    victim = await api.create_stream()
    server = api.server
    published: list[str] = []

    async def good_publisher() -> None:
        async with open_client(server) as c:
            for i in range(150):
                r = await c.post(messages_url(stream_id), json={"data": i}, headers=bearer(secret))
                assert r.status_code == 201, r.text
                published.extend(r.json()["ids"])

    async def bad(request: Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]) -> int:
        async with open_client(server) as c:
            return (await request(c)).status_code

    url, a = messages_url(stream_id), api.admin
    attacks: list[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]] = [
        lambda c: c.post(url, content=b'{"data":', headers=a),
        lambda c: c.post(url, json={"data": 1, "x": 2}, headers=a),
        lambda c: c.post(url, json=[{"data": 1}, 7], headers=a),
        lambda c: c.post(url, json={"channel": "a b", "data": 1}, headers=a),
        lambda c: c.post(url, json={"data": 1}, headers=bearer("bt_nope")),
        lambda c: c.get(url, params={"limit": "0"}, headers=bearer(secret)),
        lambda c: c.get(url, params={"after": "zzz"}, headers=bearer(secret)),
        lambda c: c.get(url, params={"replay": "never"}, headers=bearer(secret)),
        lambda c: c.post("/api/streams", json={"bogus": 1}, headers=a),
        lambda c: c.post("/api/tokens", content=b"{", headers=a),
        lambda c: c.delete(f"/api/streams/{victim['id']}", headers=bearer(secret)),
    ]

    async def oversized() -> int:
        r = await raw_post(server, url, [("content-length", str(MAX_BODY + 1))], [])
        return r.status_code

    statuses = await asyncio.gather(
        good_publisher(),
        *[bad(attack) for _ in range(4) for attack in attacks],
        *[oversized() for _ in range(3)],
    )
    assert set(statuses[1:]) == {400, 401, 403, 413, 422}

    stored = await api.poll_all(stream_id, secret)
    assert [m["data"] for m in stored] == list(range(150))
    assert [m["id"] for m in stored] == published
    # and a brand-new client still gets an exact round trip
    other_id, other_secret = await api.stream_and_token()
    ids = await api.publish(other_id, [{"data": "after"}, {"channel": "c", "data": "storm"}])
    assert [m["id"] for m in await api.poll_all(other_id, other_secret)] == ids[:1]
    r = await api.client.get(f"/api/streams/{victim['id']}", headers=api.admin)
    assert r.status_code == 200  # the forbidden deletes deleted nothing
    assert (await api.client.get("/healthz")).status_code == 200
