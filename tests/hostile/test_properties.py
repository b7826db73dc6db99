"""Property-based: whatever handshake arguments or HTTP bodies arrive, the answer is a
documented code (never `internal`, never a 5xx), and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw import assert_serves
from websockets.sync.client import connect

from bloomr.errors import HTTP_STATUS
from server import Server

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([2**63, 2**64, 10**300, 1e300, -1, 0, 10_001]),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "2h",
            "99999999999999999999d",
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "1e300",
            "9" * 50,
            "00000000-0000-7000-8000-000000000000",
            "true",
            "",
            " ",
        ]
    ),  # fmt: skip
)
values = st.one_of(st.none(), st.booleans(), numbers, texts, st.lists(st.integers(), max_size=2))
handshakes = st.fixed_dictionaries(
    {},
    optional={
        "replay": values,
        "replayLimit": values,
        "channel": values,
        "includeMetadata": values,
    },
)

SOCKET_CODES = {"invalid_argument", "unauthorized"}


@pytest.fixture(scope="module")
def credentials(hostile: Server) -> tuple[str, str]:
    async def make() -> tuple[str, str]:
        stream, token = await hostile.stream_and_token()
        await hostile.publish(stream, [{"data": n} for n in range(3)], token)
        return stream, token

    return asyncio.run(make())


def _socket_answer(url: str, auth: dict[str, Any] | None) -> list[str]:
    """The packets after CONNECT, up to `replay_end` or the server's DISCONNECT."""
    seen: list[str] = []
    with connect(url, open_timeout=10, close_timeout=0.05, max_size=None) as ws:
        assert str(ws.recv(10)).startswith("0{")
        ws.send("40" + (json.dumps(auth) if auth is not None else ""))
        while True:
            packet = str(ws.recv(10))
            if packet == "2":
                ws.send("3")
                continue
            seen.append(packet)
            if packet.startswith(("41", "44")) or '["replay_end"' in packet:
                return seen


@SETTINGS
@given(args=handshakes, in_auth=st.booleans())
def test_any_handshake_gets_a_documented_answer(
    hostile: Server, credentials: tuple[str, str], args: dict[str, Any], in_auth: bool
) -> None:
    stream, token = credentials
    base = hostile.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket&"
    if in_auth:
        url, auth = base, {"stream": stream, "token": token, **args}
    else:
        query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}
        url, auth = base + urlencode({"stream": stream, "token": token, **query}), None
    packets = _socket_answer(url, auth)
    assert packets[0].startswith("40{"), packets
    for packet in packets:
        if packet.startswith('42["error"'):
            error = json.loads(packet[2:])[1]
            assert error["code"] in SOCKET_CODES, (args, error)
            assert error["code"] == "invalid_argument" and error["field"] in args, (args, error)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
field_values = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values,
        "store_history": json_values,
        "retention": st.one_of(
            json_values,
            st.fixed_dictionaries({}, optional={"max_age": values, "max_messages": numbers}),
        ),
        "command": json_values,
        "streams": json_values,
        "scopes": json_values,
        "expires_at": st.one_of(texts, json_values),
        "channel": json_values,
        "data": json_values,
        "url": texts,
    },
)
bodies = st.one_of(
    field_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.integers(min_value=250, max_value=1100).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=250, max_value=1030).map(
        lambda n: b'{"data": ' + b"[" * n + b"]" * n + b"}"
    ),
    st.sampled_from(
        [
            b'{"streams": ["*"], "expires_at": "9999-12-31T23:59:59-14:00"}',
            b'{"retention": {"max_age": "99999999999999999999d"}}',
            b'{"retention": {"max_messages": 9223372036854775808}}',
            b'{"data": "\xff"}',
        ]
    ),
)


@SETTINGS
@given(body=bodies, target=st.integers(min_value=0, max_value=4))
def test_any_body_gets_a_documented_answer(
    hostile: Server, credentials: tuple[str, str], body: bytes, target: int
) -> None:
    stream, token = credentials
    method, path, secret = [
        ("POST", "/api/streams", hostile.admin_key),
        ("POST", "/api/tokens", hostile.admin_key),
        ("PATCH", f"/api/streams/{stream}", hostile.admin_key),
        ("POST", f"/api/streams/{stream}/messages", token),
        ("POST", f"/api/streams/{stream}/webhooks", hostile.admin_key),
    ][target]
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    with httpx.Client(base_url=hostile.url, timeout=10) as http:
        r = http.request(method, path, content=body, headers=headers)
    assert r.status_code < 500, (path, body[:200], r.text)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert HTTP_STATUS[error["code"]] == r.status_code, error


def test_still_serving_after_the_properties(hostile: Server) -> None:
    asyncio.run(assert_serves(hostile))
