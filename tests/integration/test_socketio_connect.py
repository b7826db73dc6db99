"""Socket.IO handshake (SPEC §2): query and `auth` keys, the `message` payload with and
without metadata, `replay_end`, and every refusal (`error` then disconnect) — with
python-socketio's AsyncClient over both transports against a real `bloomr serve`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import socketio

from server import Server
from sioclient import TRANSPORTS, Recorder, admin_delete, connect_and_wait, connected, refused

ISO_MS_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# Every kind of JSON value a message's data can be; compared with their types, since
# True == 1 in Python.
PAYLOADS: list[Any] = [
    "a line",
    "",
    0,
    42,
    -1.5,
    True,
    False,
    None,
    [1, "two", None, {"three": 3}],
    {"nested": {"list": [1, 2]}, "unicode": "ü ✓ 🌸", "quote": '"'},
]


def typed(values: list[Any]) -> list[tuple[type, Any]]:
    return [(type(v), v) for v in values]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_query_handshake_then_live_messages_as_is(server: Server, transport: str) -> None:
    stream_id, token = await server.stream_and_token()
    await server.publish(stream_id, {"data": "published before: no replay was asked"})
    client = await connect_and_wait(
        server.socket_url(stream=stream_id, token=token), transport=transport
    )
    try:
        # live only: nothing replayed, and replay_end says so before any live message
        assert client.names == ["connect", "replay_end"]
        assert client.named("replay_end") == [{"count": 0, "lastId": None}]
        await server.publish(stream_id, [{"data": d} for d in PAYLOADS])
        await server.publish(stream_id, {"data": "sentinel"})
        await client.wait_until(lambda: "sentinel" in client.messages)
        assert typed(client.messages) == typed([*PAYLOADS, "sentinel"])
        assert not client.disconnected
    finally:
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("flag", ["true", "1", "TRUE"])
async def test_include_metadata_envelope(server: Server, transport: str, flag: str) -> None:
    stream_id, token = await server.stream_and_token()
    replayed_ids = await server.publish(stream_id, [{"data": {"n": 0}}, {"data": "one"}])
    url = server.socket_url(stream=stream_id, token=token, includeMetadata=flag, replayLimit=2)
    client = await connect_and_wait(url, transport=transport)
    try:
        live_ids = await server.publish(stream_id, [{"data": None}, {"data": [2]}])
        envelopes = await client.wait_messages(4)
        for envelope in envelopes:
            assert set(envelope) == {"id", "stream", "channel", "timestamp", "data", "replayed"}
            assert UUID_RE.fullmatch(envelope["id"]), envelope
            assert ISO_MS_Z.fullmatch(envelope["timestamp"]), envelope
            assert envelope["stream"] == stream_id
            assert envelope["channel"] == ""
        assert [e["id"] for e in envelopes] == replayed_ids + live_ids
        assert [e["data"] for e in envelopes] == [{"n": 0}, "one", None, [2]]
        assert [e["replayed"] for e in envelopes] == [True, True, False, False]
        assert client.names == ["connect", *["message"] * 2, "replay_end", *["message"] * 2]
        assert client.named("replay_end") == [{"count": 2, "lastId": replayed_ids[-1]}]
        # the envelope's timestamp is the stored one (as HTTP polling reports it)
        stored = await _poll(server, stream_id, token)
        assert [m["timestamp"] for m in stored] == [e["timestamp"] for e in envelopes]
    finally:
        await client.close()


@pytest.mark.parametrize("flag", ["false", "0", "FALSE", ""])
async def test_include_metadata_off_sends_data_as_is(server: Server, flag: str) -> None:
    stream_id, token = await server.stream_and_token()
    await server.publish(stream_id, {"data": {"n": 0}})
    url = server.socket_url(stream=stream_id, token=token, includeMetadata=flag, replayLimit=5)
    client = await connect_and_wait(url)
    try:
        await server.publish(stream_id, {"data": {"n": 1}})
        assert await client.wait_messages(2) == [{"n": 0}, {"n": 1}]
    finally:
        await client.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_auth_object_alone(server: Server, transport: str) -> None:
    """Every key in `auth` (with JSON types), nothing in the query string."""
    stream_id, token = await server.stream_and_token()
    ids = await server.publish(stream_id, [{"data": n} for n in range(5)])
    await server.publish(stream_id, {"channel": "custom", "data": "custom"})
    auth = {
        "stream": stream_id,
        "token": token,
        "channel": "",
        "replayLimit": 2,
        "includeMetadata": True,
    }
    client = await connect_and_wait(server.socket_url(), auth=auth, transport=transport)
    try:
        await server.publish(stream_id, {"data": 5})
        envelopes = await client.wait_messages(3)
        assert [e["data"] for e in envelopes] == [3, 4, 5]
        assert [e["replayed"] for e in envelopes] == [True, True, False]
        assert client.named("replay_end") == [{"count": 2, "lastId": ids[-1]}]
    finally:
        await client.close()


async def test_auth_wins_over_query(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    await server.publish(stream_id, [{"data": "out-1"}, {"channel": "errors", "data": "err-1"}])

    # a bad token in the query, the good one in auth: auth wins, connection works
    url = server.socket_url(
        stream=stream_id, token="not-a-token", channel="errors", includeMetadata="true"
    )
    auth = {"token": token, "channel": "", "includeMetadata": False, "replay": "1h"}
    client = await connect_and_wait(url, auth=auth)
    try:
        assert client.messages == ["out-1"]  # channel "" and no metadata, from auth
        assert client.named("replay_end")[0]["count"] == 1
    finally:
        await client.close()

    # the good token in the query, a bad one in auth: auth wins, refused
    url = server.socket_url(stream=stream_id, token=token)
    error = await refused(url, auth={"token": "not-a-token"})
    assert error["code"] == "unauthorized"

    # an invalid value in the query is overridden by a valid one in auth
    url = server.socket_url(stream=stream_id, token=token, replayLimit="abc")
    client = await connect_and_wait(url, auth={"replayLimit": 1})
    try:
        assert client.messages == ["out-1"]
    finally:
        await client.close()


# -- refusals: `error` then disconnect ---------------------------------------------------


async def _poll(server: Server, stream_id: str, token: str) -> list[dict[str, Any]]:
    async with server.client() as http:
        r = await http.get(
            f"/api/streams/{stream_id}/messages", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 200, r.text
        return list(r.json()["messages"])


async def _unauthorized_case(server: Server, case: str) -> tuple[str, dict[str, Any] | None]:
    """(url, auth) for one way of not being allowed to subscribe."""
    stream_id, token = await server.stream_and_token()
    if case == "missing stream":
        return server.socket_url(token=token), None
    if case == "missing token":
        return server.socket_url(stream=stream_id), None
    if case == "empty token":
        return server.socket_url(stream=stream_id, token=""), None
    if case == "unknown stream":
        wildcard = await server.create_token(["*"])  # the token would allow any stream
        return server.socket_url(stream="nOsUcHsTrM", token=wildcard["token"]), None
    if case == "bad token":
        return server.socket_url(stream=stream_id, token=token + "x"), None
    if case == "expired token":
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        expired = await server.create_token([stream_id], expires_at=past)
        return server.socket_url(stream=stream_id, token=expired["token"]), None
    if case == "revoked token":
        revoked = await server.create_token([stream_id])
        await admin_delete(server, f"/api/tokens/{revoked['id']}")
        return server.socket_url(stream=stream_id, token=revoked["token"]), None
    if case == "token for another stream":
        other_id, other_token = await server.stream_and_token()
        return server.socket_url(stream=stream_id, token=other_token), None
    if case == "token without subscribe scope":
        publish_only = await server.create_token([stream_id], ["publish"])
        return server.socket_url(stream=stream_id, token=publish_only["token"]), None
    if case == "stream as a number in auth":
        return server.socket_url(token=token), {"stream": 12345}
    if case == "token as a number in auth":
        return server.socket_url(stream=stream_id), {"token": 12345}
    raise AssertionError(case)


UNAUTHORIZED_CASES = [
    "missing stream",
    "missing token",
    "empty token",
    "unknown stream",
    "bad token",
    "expired token",
    "revoked token",
    "token for another stream",
    "token without subscribe scope",
    "stream as a number in auth",
    "token as a number in auth",
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", UNAUTHORIZED_CASES)
async def test_unauthorized(server: Server, case: str, transport: str) -> None:
    url, auth = await _unauthorized_case(server, case)
    error = await refused(url, auth=auth, transport=transport)
    assert error["code"] == "unauthorized", error


async def test_unauthorized_is_one_answer_for_every_reason(server: Server) -> None:
    """An unknown stream and a stream the token may not read look the same, so stream
    ids cannot be probed."""
    stream_id, token = await server.stream_and_token()
    other_id, _ = await server.stream_and_token()
    unknown = await refused(server.socket_url(stream="nOsUcHsTrM", token=token))
    forbidden = await refused(server.socket_url(stream=other_id, token=token))
    assert unknown == forbidden


# (key, value) in the query string -> the `field` of invalid_argument
INVALID_QUERY = [
    ("channel", "bad channel"),
    ("channel", "x" * 65),
    ("channel", "a/b"),
    ("replay", "yesterday"),
    ("replay", "5 weeks"),
    ("replay", "-5m"),
    ("replay", "12"),
    ("replay", "2h ago"),
    ("replay", "2024-13-45T00:00:00Z"),
    ("replay", "8006d38c-e838-11ee-9353"),
    ("replayLimit", "0"),
    ("replayLimit", "-1"),
    ("replayLimit", "abc"),
    ("replayLimit", "1.5"),
    ("includeMetadata", "maybe"),
    ("includeMetadata", "yes"),
]
# (key, JSON value) in the auth object
INVALID_AUTH = [
    ("channel", 5),
    ("channel", "bad channel"),
    ("replay", 5),
    ("replay", "yesterday"),
    ("replayLimit", 0),
    ("replayLimit", -1),
    ("replayLimit", "abc"),
    ("replayLimit", True),
    ("replayLimit", 1.5),
    ("includeMetadata", "maybe"),
    ("includeMetadata", 2),
]


@pytest.mark.parametrize(
    ("key", "value"), INVALID_QUERY, ids=[f"{k}={v!r}" for k, v in INVALID_QUERY]
)
async def test_invalid_argument_in_query(server: Server, key: str, value: str) -> None:
    stream_id, token = await server.stream_and_token()
    error = await refused(server.socket_url(stream=stream_id, token=token, **{key: value}))
    assert error["code"] == "invalid_argument", error
    assert error["field"] == key, error


@pytest.mark.parametrize(
    ("key", "value"), INVALID_AUTH, ids=[f"{k}={v!r}" for k, v in INVALID_AUTH]
)
async def test_invalid_argument_in_auth(server: Server, key: str, value: Any) -> None:
    stream_id, token = await server.stream_and_token()
    auth = {"stream": stream_id, "token": token, key: value}
    error = await refused(server.socket_url(), auth=auth, transport="polling")
    assert error["code"] == "invalid_argument", error
    assert error["field"] == key, error


async def test_refusals_do_not_disturb_others(server: Server) -> None:
    """A live subscriber keeps getting every message while others are refused."""
    stream_id, token = await server.stream_and_token()
    async with connected(server.socket_url(stream=stream_id, token=token)) as live:
        await live.wait_event("replay_end")
        for n in range(3):
            await refused(server.socket_url(stream=stream_id, token="nope"))
            await refused(server.socket_url(stream=stream_id, token=token, replay="soon"))
            await server.publish(stream_id, {"data": n})
        assert await live.wait_messages(3) == [0, 1, 2]
        assert not live.disconnected


async def test_channel_names(server: Server) -> None:
    """`errors`, custom names at the edge of the pattern, and `""` all subscribe."""
    stream_id, token = await server.stream_and_token()
    names = ["", "errors", "my.Channel_1:x-y", "c" * 64]
    await server.publish(stream_id, [{"channel": name, "data": f"to {name!r}"} for name in names])
    for name in names:
        url = server.socket_url(stream=stream_id, token=token, channel=name, replayLimit=10)
        client = await connect_and_wait(url)
        try:
            assert client.messages == [f"to {name!r}"]
            assert client.errors == []
        finally:
            await client.close()


async def test_only_the_default_namespace(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    client = Recorder()
    try:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.sio.connect(
                server.socket_url(stream=stream_id, token=token),
                namespaces=["/other"],
                transports=["websocket"],
                wait_timeout=5,
            )
    finally:
        await client.close()
