"""Hostile HTTP: what arrives slowly, too big, too deep, or with odd numbers gets its
documented code, and the server serves everyone else afterwards."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from raw import SHORT_ENV, RawSocketIO, assert_serves, closed_by_server, open_socket, read_response

from server import Server, running_server

pytestmark = pytest.mark.timeout(30)


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return dict(error)


def deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


# -- item 2: credentials before the body, deadlines, head size ---------------------------


async def test_unauthenticated_body_is_refused_before_it_is_read(hostile: Server) -> None:
    reader, writer = await open_socket(hostile)
    try:
        head = "POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {10 * 1024 * 1024}\r\n\r\n{{".encode())
        started = time.monotonic()
        status, body = await read_response(reader, timeout=5)
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        assert time.monotonic() - started < 1.0
    finally:
        writer.close()
    await assert_serves(hostile)


async def test_a_head_over_64_kib_gets_431(hostile: Server) -> None:
    reader, writer = await open_socket(hostile)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024))
        status, body = await read_response(reader)
        assert status == 431 and json.loads(body)["error"]["code"] == "header_too_large"
        assert await closed_by_server(reader, 5)
    finally:
        writer.close()
    await assert_serves(hostile)


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a",  # slowloris: a head never finished
        b"POST /api/streams HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-admin-key\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",  # a body stalled
    ],
)
async def test_a_request_that_does_not_arrive_in_time_gets_408(
    hostile: Server, partial: bytes
) -> None:
    reader, writer = await open_socket(hostile)
    try:
        writer.write(partial)
        started = time.monotonic()
        status, body = await read_response(reader, timeout=10)
        assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
        assert 1.0 < time.monotonic() - started < 6
        assert await closed_by_server(reader, 5)
    finally:
        writer.close()
    await assert_serves(hostile)


async def test_an_idle_connection_is_closed(hostile: Server) -> None:
    reader, writer = await open_socket(hostile)
    try:
        assert await closed_by_server(reader, 8)
    finally:
        writer.close()


async def test_a_malformed_request_gets_the_json_error_shape(hostile: Server) -> None:
    reader, writer = await open_socket(hostile)
    try:
        writer.write(b"\x00\x01 not http at all\r\n\r\n")
        status, body = await read_response(reader)
        assert status == 400 and json.loads(body)["error"]["code"] == "invalid_argument"
    finally:
        writer.close()
    upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    for path, key, status in [
        ("/nowhere", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 404),
        ("/socket.io/?EIO=4&transport=websocket", "", 400),  # no key
    ]:
        reader, writer = await open_socket(hostile)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{upgrade}{key}\r\n".encode())
            answer, body = await read_response(reader)
            assert answer == status and json.loads(body)["error"]["message"], body
        finally:
            writer.close()
    async with hostile.client() as http:
        error_of(await http.get("/api/nothing/here", headers=hostile.admin), 404, "not_found")
        error_of(await http.put("/api/streams", headers=hostile.admin), 405, "method_not_allowed")


# -- items 6, 7, 8, 10: numbers and JSON bloomr cannot hold ------------------------------


@pytest.mark.parametrize("levels", [255, 600, 1024])
async def test_json_nested_too_deep_is_invalid_json_everywhere(
    hostile: Server, levels: int
) -> None:
    stream, token = await hostile.stream_and_token()
    data = f'{{"data": {deep(levels)}}}'
    async with hostile.client() as http:
        for path, headers, body in [
            (f"/api/streams/{stream}/messages", {"Authorization": f"Bearer {token}"}, data),
            (f"/api/streams/{stream}/messages", hostile.admin, f"[{data}]"),
            ("/api/streams", hostile.admin, f'{{"name": {deep(levels)}}}'),
            ("/api/tokens", hostile.admin, f'{{"streams": {deep(levels)}}}'),
        ]:
            headers = {**headers, "Content-Type": "application/json"}
            error = error_of(
                await http.post(path, content=body, headers=headers), 400, "invalid_json"
            )
            assert "deeper" in str(error["message"]) or "not valid JSON" in str(error["message"])
    await assert_serves(hostile)


async def test_invalid_utf8_is_invalid_json_everywhere(hostile: Server) -> None:
    stream, token = await hostile.stream_and_token()
    bad = b'{"data": "\xff\xfe"}'
    async with hostile.client() as http:
        for path, headers in [
            (f"/api/streams/{stream}/messages", {"Authorization": f"Bearer {token}"}),
            ("/api/streams", hostile.admin),
            ("/api/tokens", hostile.admin),
            (f"/api/streams/{stream}/webhooks", hostile.admin),
        ]:
            headers = {**headers, "Content-Type": "application/json"}
            error_of(await http.post(path, content=bad, headers=headers), 400, "invalid_json")
        patch = await http.patch(f"/api/streams/{stream}", content=bad, headers=hostile.admin)
        error_of(patch, 400, "invalid_json")
    await assert_serves(hostile)


@pytest.mark.parametrize(
    "retention",
    [
        {"max_age": "99999999999999999999d"},
        {"max_age": "36501d"},
        {"max_messages": 2**63},
        {"max_messages": 2**53},
        {"max_messages": 10**30},
    ],
)
async def test_a_retention_beyond_the_maximum_is_refused(
    hostile: Server, retention: dict[str, object]
) -> None:
    async with hostile.client() as http:
        r = await http.post("/api/streams", json={"retention": retention}, headers=hostile.admin)
        error_of(r, 422, "validation_failed")
        stream = await hostile.create_stream(http)
        r = await http.patch(
            f"/api/streams/{stream['id']}", json={"retention": retention}, headers=hostile.admin
        )
        error_of(r, 422, "validation_failed")
    await assert_serves(hostile)


@pytest.mark.parametrize(
    "moment", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59Z1"]
)
async def test_an_expiry_utc_cannot_write_is_refused(hostile: Server, moment: str) -> None:
    stream = await hostile.create_stream()
    async with hostile.client() as http:
        body = {"streams": [stream["id"]], "expires_at": moment}
        error_of(
            await http.post("/api/tokens", json=body, headers=hostile.admin),
            422,
            "validation_failed",
        )
    await assert_serves(hostile)


async def test_the_greatest_retention_and_expiry_are_taken(hostile: Server) -> None:
    stream = await hostile.create_stream(retention={"max_age": "36500d", "max_messages": 2**53 - 1})
    await hostile.create_token([stream["id"]], expires_at="9999-12-31T23:59:59+14:00")


# -- item 4: a long-poll ends with its token ---------------------------------------------


async def test_a_long_poll_ends_when_its_token_is_revoked(hostile: Server) -> None:
    stream = await hostile.create_stream()
    token = await hostile.create_token([stream["id"]])
    async with hostile.client() as http:
        poll = asyncio.create_task(
            http.get(
                f"/api/streams/{stream['id']}/messages",
                params={"wait": "30"},
                headers={"Authorization": f"Bearer {token['token']}"},
            )
        )
        await asyncio.sleep(0.5)  # the poll is waiting (nothing to await on the outside)
        r = await http.delete(f"/api/tokens/{token['id']}", headers=hostile.admin)
        assert r.status_code == 204
        await hostile.publish(stream["id"], {"data": "after the revocation"})
        error_of(await asyncio.wait_for(poll, 5), 401, "token_revoked")
    await assert_serves(hostile)


async def test_a_long_poll_ends_when_its_token_expires(hostile: Server) -> None:
    stream = await hostile.create_stream()
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    token = await hostile.create_token([stream["id"]], expires_at=soon)
    async with hostile.client() as http:
        r = await http.get(
            f"/api/streams/{stream['id']}/messages",
            params={"wait": "30"},
            headers={"Authorization": f"Bearer {token['token']}"},
        )
        error_of(r, 401, "unauthorized")


# -- the admin key, webhook URLs ----------------------------------------------------------


async def test_the_admin_key_is_taken_only_in_a_header(hostile: Server) -> None:
    stream, token = await hostile.stream_and_token()
    async with hostile.client() as http:
        r = await http.get("/api/streams", params={"token": hostile.admin_key})
        error_of(r, 401, "unauthorized")
        r = await http.get(f"/api/streams/{stream}/messages", params={"token": token})
        assert r.status_code == 200  # tokens still are, in ?token=


async def test_a_webhook_password_is_masked_when_listed(hostile: Server) -> None:
    stream = await hostile.create_stream()
    url = "http://hook-user:s3cret-pass@127.0.0.1:9/hook"
    async with hostile.client() as http:
        r = await http.post(
            f"/api/streams/{stream['id']}/webhooks", json={"url": url}, headers=hostile.admin
        )
        assert r.status_code == 201, r.text
        listed = await http.get(f"/api/streams/{stream['id']}/webhooks", headers=hostile.admin)
        assert listed.status_code == 200
        assert "s3cret-pass" not in listed.text
        assert listed.json()["webhooks"][0]["url"] == "http://hook-user:***@127.0.0.1:9/hook"


# -- failed authentication is rate-limited per address -----------------------------------


async def test_failed_authentication_is_rate_limited() -> None:
    env = {**SHORT_ENV, "BLOOMR_AUTH_FAILURES": "5"}
    with running_server(env=env) as server:
        async with server.client() as http:
            for _ in range(5):
                r = await http.get("/api/streams", headers={"Authorization": "Bearer wrong"})
                error_of(r, 401, "unauthorized")
            r = await http.get("/api/streams", headers=server.admin)
            error_of(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1
            r = await http.post("/api/streams", json={}, headers={"Authorization": "Bearer x"})
            error_of(r, 429, "rate_limited")
        client = await RawSocketIO.open(server)  # the handshake counts the same address
        try:
            await client.connect({"stream": "dwd23RWdwE", "token": "guess"})
            events = await client.events_until("error")
            assert events[-1][1]["code"] == "rate_limited", events
        finally:
            client.close()


async def test_connections_per_address_are_limited_when_asked() -> None:
    env = {**SHORT_ENV, "BLOOMR_MAX_CONNECTIONS_PER_ADDRESS": "2"}
    with running_server(env=env) as server:
        held = [await open_socket(server) for _ in range(2)]
        try:
            reader, writer = await open_socket(server)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, body = await read_response(reader)
            assert status == 429 and json.loads(body)["error"]["code"] == "rate_limited"
            writer.close()
        finally:
            for _, w in held:
                w.close()
        async with asyncio.timeout(5):
            while True:  # the held ones are gone: room again
                async with server.client() as http:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
