"""The original client: Node's socket.io-client (pinned in tests/node/package-lock.json)
running the original documentation's example verbatim (tests/node/example.mjs, only its
three literal values replaced by tests/node/run_example.mjs), and tests/node/client.mjs
for the documented query keys, `auth`, refusals and the hand-over over polling."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from server import Server
from sioclient import (
    NODE_DIR,
    NodeProcess,
    Publisher,
    check_handover,
    ensure_node_modules,
    node_available,
)

pytestmark = [pytest.mark.node, pytest.mark.usefixtures("node_modules")]

EXAMPLE_LITERALS = ("'https://api.bloomr.stream/'", "'dwd23RWdwE'", "'your-token-here'")


@pytest.fixture(scope="session")
def node_modules() -> None:
    """`npm ci` in tests/node when the pinned socket.io-client is not installed."""
    if not node_available():
        if os.environ.get("CI"):
            pytest.fail("node and npm are required in CI")
        pytest.skip("node/npm not installed")
    ensure_node_modules()


async def run_example(
    server: Server, stream_id: str, token: str, count: int, **env: str
) -> NodeProcess:
    return await NodeProcess.start(
        "run_example.mjs",
        env={
            "BLOOMR_URL": server.url + "/",
            "BLOOMR_STREAM": stream_id,
            "BLOOMR_TOKEN": token,
            "EXAMPLE_COUNT": str(count),
            "EXAMPLE_TIMEOUT_MS": "15000",
            **env,
        },
    )


def test_example_is_the_documented_code() -> None:
    """example.mjs is the documentation's code: one import, io(host, {query}), the
    three handlers, and the three literals the runner replaces, each once."""
    source = (NODE_DIR / "example.mjs").read_text()
    assert source.startswith("import { io } from 'socket.io-client';\n")
    for literal in EXAMPLE_LITERALS:
        assert source.count(literal) == 1, literal
    for handler in ("socket.on('connect'", "socket.on('error'", "socket.on('message'"):
        assert source.count(handler) == 1, handler
    assert "console.log('Connected to', host);" in source
    assert "console.error('ERROR =>', arg);" in source
    assert "console.error('MESSAGE =>', arg);" in source


async def test_original_example_prints_messages_published_after_it_connects(
    server: Server,
) -> None:
    stream_id, token = await server.stream_and_token()
    await server.publish(stream_id, {"data": "before the example connects: not printed"})
    example = await run_example(server, stream_id, token, count=0, EXAMPLE_UNTIL="the end")
    sent: list[Any] = ["a line of output", {"level": "info", "n": 1}, 42, [1, "two"], "the end"]
    try:
        connected = await example.wait_line(lambda line: "console" in line)
        assert connected == {"console": "log", "args": ["Connected to", server.url + "/"]}
        # published the instant `connect` fired: every one must be printed
        await server.publish(stream_id, [{"data": data} for data in sent[:2]])
        await server.publish(stream_id, {"channel": "errors", "data": "not this channel"})
        for data in sent[2:]:
            await server.publish(stream_id, {"data": data})
        assert await example.finish() == 0, example.lines
    finally:
        await example.kill()
    printed = [line for line in example.lines if line.get("console") == "error"]
    assert all(line["args"][0] == "MESSAGE =>" for line in printed), printed
    assert [line["args"][1] for line in printed] == sent


async def test_original_example_prints_the_error_of_a_refused_connection(
    server: Server,
) -> None:
    stream_id, _ = await server.stream_and_token()
    example = await run_example(server, stream_id, "not-a-valid-token", count=1)
    try:
        assert await example.finish() == 1  # the runner exits after 'ERROR =>'
    finally:
        await example.kill()
    consoles = [line for line in example.lines if "console" in line]
    assert consoles[0] == {"console": "log", "args": ["Connected to", server.url + "/"]}
    label, error = consoles[1]["args"]
    assert (consoles[1]["console"], label) == ("error", "ERROR =>")
    assert error["code"] == "unauthorized"
    assert isinstance(error["message"], str)


TRANSPORT_SETS = [["polling"], ["websocket"], ["polling", "websocket"]]


@pytest.mark.parametrize("transports", TRANSPORT_SETS, ids=["polling", "websocket", "upgrade"])
async def test_documented_query_keys(server: Server, transports: list[str]) -> None:
    """The documentation's second snippet: replayLimit 123, replay '2h',
    includeMetadata false, channel 'errors'."""
    stream_id, token = await server.stream_and_token()
    ids = await server.publish(
        stream_id,
        [{"channel": "errors", "data": {"n": n}} for n in range(200)]
        + [{"data": {"n": -1, "stdout": True}}],
    )
    query = {
        "stream": stream_id,
        "token": token,
        "replayLimit": 123,
        "replay": "2h",
        "includeMetadata": False,
        "channel": "errors",
    }
    client = await NodeProcess.client(
        url=server.url + "/", query=query, transports=transports, count=124
    )
    try:
        end = await client.wait_line(lambda line: line.get("event") == "replay_end")
        await server.publish(stream_id, {"data": "stdout, live"})
        await server.publish(stream_id, {"channel": "errors", "data": {"n": 200}})
        assert await client.finish() == 0
    finally:
        await client.kill()
    assert client.names == ["connect", "warning", *["message"] * 123, "replay_end", "message"]
    (warning,) = client.events("warning")
    assert warning["data"]["code"] == "replay_truncated"
    assert (warning["data"]["limit"], warning["data"]["matched"]) == (123, 200)
    assert warning["data"]["omitted"] == 77
    assert warning["data"]["firstReplayedId"] == ids[77]
    assert warning["data"]["backfillAfterId"] is None
    assert [m["data"] for m in client.events("message")] == [{"n": n} for n in range(77, 201)]
    assert end["data"] == {"count": 123, "lastId": ids[199]}


async def test_auth_object_wins_with_metadata(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    ids = await server.publish(stream_id, [{"data": {"n": n}} for n in range(5)])
    client = await NodeProcess.client(
        url=server.url + "/",
        query={"stream": stream_id, "token": "wrong", "includeMetadata": "false"},
        auth={"token": token, "includeMetadata": True, "replay": ids[1]},
        count=4,
    )
    try:
        await client.wait_line(lambda line: line.get("event") == "replay_end")
        (live_id,) = await server.publish(stream_id, {"data": {"n": 5}})
        assert await client.finish() == 0
    finally:
        await client.kill()
    envelopes = [m["data"] for m in client.events("message")]
    assert [e["id"] for e in envelopes] == [*ids[2:], live_id]
    assert [e["data"]["n"] for e in envelopes] == [2, 3, 4, 5]
    assert [e["replayed"] for e in envelopes] == [True, True, True, False]
    assert {e["stream"] for e in envelopes} == {stream_id}
    assert client.events("replay_end")[0]["data"] == {"count": 3, "lastId": ids[4]}


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ({"token": "not-a-valid-token"}, "unauthorized", None),
        ({"replayLimit": 0}, "invalid_argument", "replayLimit"),
        ({"replay": "yesterday"}, "invalid_argument", "replay"),
        ({"includeMetadata": "maybe"}, "invalid_argument", "includeMetadata"),
        ({"channel": "no spaces"}, "invalid_argument", "channel"),
    ],
)
@pytest.mark.parametrize("transports", [["polling"], ["websocket"]], ids=["polling", "ws"])
async def test_refused_connection_gets_error_then_disconnect(
    server: Server, query: dict[str, Any], code: str, field: str | None, transports: list[str]
) -> None:
    stream_id, token = await server.stream_and_token()
    client = await NodeProcess.client(
        url=server.url + "/",
        query={"stream": stream_id, "token": token, **query},
        transports=transports,
    )
    try:
        assert await client.finish() == 0  # exits on the disconnect
    finally:
        await client.kill()
    assert client.names == ["connect", "error", "disconnect"], client.lines
    error = client.events("error")[0]["data"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert client.events("disconnect")[0]["reason"] == "io server disconnect"


@pytest.mark.timeout(90)
async def test_handover_over_every_transport(server: Server) -> None:
    """The exact hand-over with the original client: joining mid-stream over polling,
    websocket and polling-then-upgrade, each sees a contiguous run to the end."""
    stream_id, token = await server.stream_and_token()
    publisher = Publisher(server, stream_id, seed=7)
    publishing = asyncio.create_task(publisher.run())
    plans: list[tuple[str, list[str], dict[str, Any]]] = [
        ("polling, replayLimit 60", ["polling"], {"replayLimit": 60}),
        ("websocket, replay by age", ["websocket"], {"replay": "10 min"}),
        ("upgrade, replay from an id", ["polling", "websocket"], {"replay": "id"}),
        ("polling, replay from an id", ["polling"], {"replay": "id"}),
    ]
    clients: list[tuple[str, NodeProcess, int | None]] = []
    try:
        for i, (how, transports, args) in enumerate(plans):
            await publisher.reach(60 * (i + 1))
            first = 0 if "age" in how else None
            if args.get("replay") == "id":
                at = len(publisher.ids) - 30
                args = {"replay": publisher.ids[at]}
                first = at + 1
            query = {"stream": stream_id, "token": token, "includeMetadata": True, **args}
            client = await NodeProcess.client(
                url=server.url + "/",
                query=query,
                transports=transports,
                stopOnField="last",
                timeoutMs=60000,
            )
            clients.append((how, client, first))
        for _, client, _ in clients:
            await client.wait_line(lambda line: line.get("event") == "replay_end", timeout=30)
        await publisher.reach(len(publisher.ids) + 60)
    finally:
        publisher.stopping.set()
        await publishing
    try:
        last = await publisher.finish()
        for how, client, first in clients:
            assert await client.finish(timeout=30) == 0, how
            envelopes = [m["data"] for m in client.events("message")]
            replayed = check_handover(how, envelopes, publisher.ids, last)
            if first is not None:
                assert envelopes[0]["data"]["n"] == first, how
            if "replayLimit 60" in how:
                assert replayed == 60
            assert 0 < replayed < len(envelopes), how
            names = [n for n in client.names if n in ("message", "replay_end")]
            assert names.index("replay_end") == replayed, how
            assert client.events("error") == [] and client.events("disconnect") == [], how
    finally:
        for _, client, _ in clients:
            await client.kill()
