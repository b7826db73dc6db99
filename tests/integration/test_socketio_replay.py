"""The replay phase (SPEC §2): every `replay` format, `replayLimit`, the 10000 cap
with `replay_limit_capped` and `replay_truncated` (checked against HTTP polling),
`unknown_message_id` and `history_disabled`."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from server import Server
from sioclient import TRANSPORTS, Recorder, connect_and_wait, numbers, poll_messages


async def replayed(server: Server, transport: str = "websocket", **query: Any) -> Recorder:
    """Connect with `query`, wait for `replay_end`, close; the recorder keeps the events."""
    client = await connect_and_wait(server.socket_url(**query), transport=transport)
    await client.close()
    assert client.errors == [], client.summary()
    return client


def assert_replay(client: Recorder, expected: list[int], ids: list[str]) -> None:
    """`client` got exactly the messages numbered `expected` (data `{"n": i}`, ids
    `ids[i]`), then `replay_end` with their count and last id."""
    assert numbers(client.messages) == expected, client.summary()
    assert client.names[-1] == "replay_end", client.summary()
    last = ids[expected[-1]] if expected else None
    assert client.named("replay_end") == [{"count": len(expected), "lastId": last}]


async def publish_numbered(
    server: Server, stream_id: str, start: int, count: int, **extra: Any
) -> list[str]:
    return await server.publish(
        stream_id, [{"data": {"n": n}, **extra} for n in range(start, start + count)]
    )


async def wait_past(ts_ms: int, seconds: float) -> None:
    """Let wall-clock time pass `ts_ms + seconds` (replay by age needs real time)."""
    delay = ts_ms / 1000 + seconds - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


def ts_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


# -- replayLimit alone, empty replay ------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_replay_limit_alone_replays_the_newest(server: Server, transport: str) -> None:
    stream_id, token = await server.stream_and_token()
    ids: list[str] = []
    for n in range(10):  # interleaved with another channel, which never counts
        ids += await publish_numbered(server, stream_id, n, 1)
        await server.publish(stream_id, {"channel": "errors", "data": f"err {n}"})

    client = await replayed(
        server, transport, stream=stream_id, token=token, replayLimit=3, includeMetadata=1
    )
    assert_replay(client, [7, 8, 9], ids)
    assert [m["id"] for m in client.messages] == ids[7:]
    assert all(m["replayed"] is True for m in client.messages)
    assert client.warnings == []

    client = await replayed(server, transport, stream=stream_id, token=token, replayLimit=100)
    assert_replay(client, list(range(10)), ids)
    assert client.warnings == []  # fewer than the limit: nothing truncated


async def test_empty_replay_counts_as_absent(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 5)

    client = await connect_and_wait(server.socket_url(stream=stream_id, token=token, replay=""))
    try:
        assert client.names == ["connect", "replay_end"]
        assert client.named("replay_end") == [{"count": 0, "lastId": None}]
        more = await publish_numbered(server, stream_id, 5, 1)
        assert numbers(await client.wait_messages(1)) == [5]  # live only
    finally:
        await client.close()

    # with a limit, an empty replay is just absent: the newest `replayLimit`
    client = await replayed(server, stream=stream_id, token=token, replay="", replayLimit=2)
    assert_replay(client, [4, 5], [*ids, *more])
    # also in auth
    client = await connect_and_wait(
        server.socket_url(), auth={"stream": stream_id, "token": token, "replay": ""}
    )
    await client.close()
    assert client.names == ["connect", "replay_end"]


# -- replay by message id ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_replay_from_message_id_is_strictly_after(server: Server, transport: str) -> None:
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 10)

    client = await replayed(server, transport, stream=stream_id, token=token, replay=ids[4])
    assert_replay(client, [5, 6, 7, 8, 9], ids)
    assert client.warnings == []

    client = await replayed(server, transport, stream=stream_id, token=token, replay=ids[-1])
    assert_replay(client, [], ids)  # nothing after the newest: count 0, lastId null

    client = await replayed(server, transport, stream=stream_id, token=token, replay=ids[0])
    assert_replay(client, list(range(1, 10)), ids)


async def test_replay_id_of_another_channel_still_marks_the_position(server: Server) -> None:
    """An id is a position in the stream's one order: messages of the subscribed
    channel after it are replayed, whatever channel that id was on."""
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 3)
    (marker,) = await server.publish(stream_id, {"channel": "custom", "data": "marker"})
    ids += await publish_numbered(server, stream_id, 3, 2)
    client = await replayed(server, stream=stream_id, token=token, replay=marker)
    assert_replay(client, [3, 4], ids)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_unknown_message_id(server: Server, transport: str) -> None:
    """An id bloomr does not hold replays the newest up to the limit, with a warning."""
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 8)
    other_id, other_token = await server.stream_and_token()
    (foreign,) = await server.publish(other_id, {"data": "elsewhere"})

    unknown = str(uuid.uuid4())
    client = await replayed(
        server, transport, stream=stream_id, token=token, replay=unknown, replayLimit=3
    )
    assert_replay(client, [5, 6, 7], ids)
    (warning,) = client.warnings
    assert warning["code"] == "unknown_message_id"
    assert isinstance(warning["message"], str)
    assert client.names.index("warning") < client.names.index("message")

    # an id that exists, but in another stream: also unknown here; default limit 10000
    client = await replayed(server, transport, stream=stream_id, token=token, replay=foreign)
    assert_replay(client, list(range(8)), ids)
    assert [w["code"] for w in client.warnings] == ["unknown_message_id"]


# -- replay by date ------------------------------------------------------------------------


async def test_replay_from_iso_date(server: Server) -> None:
    """At or after the instant, whatever the notation: Z, an offset, or no zone (UTC)."""
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 3)
    stored = (await poll_messages(server, stream_id, token))["messages"]
    await wait_past(ts_ms(stored[-1]["timestamp"]), 0.01)
    ids += await publish_numbered(server, stream_id, 3, 3)
    stored = (await poll_messages(server, stream_id, token))["messages"]
    first_b = stored[3]["timestamp"]  # e.g. 2026-11-27T20:01:17.123Z
    assert ts_ms(stored[2]["timestamp"]) < ts_ms(first_b)

    instant = datetime.fromisoformat(first_b)
    plus_two = instant.astimezone(timezone(timedelta(hours=2)))
    minus_five_thirty = instant.astimezone(timezone(timedelta(hours=-5, minutes=-30)))
    notations = [
        first_b,  # Z
        plus_two.isoformat(timespec="milliseconds"),  # +02:00
        minus_five_thirty.isoformat(timespec="milliseconds"),  # -05:30
        first_b.removesuffix("Z"),  # no zone: UTC
        first_b.replace("Z", "+00:00"),
    ]
    for notation in notations:
        client = await replayed(server, stream=stream_id, token=token, replay=notation)
        assert_replay(client, [3, 4, 5], ids)

    # one millisecond later excludes the messages stamped with that instant
    later = (instant + timedelta(milliseconds=1)).isoformat(timespec="milliseconds")
    client = await replayed(server, stream=stream_id, token=token, replay=later)
    after = [n for n in (3, 4, 5) if ts_ms(stored[n]["timestamp"]) > ts_ms(first_b)]
    assert numbers(client.messages) == after

    # seconds precision, long ago: everything; in the future: nothing
    client = await replayed(server, stream=stream_id, token=token, replay="2024-03-26T15:24:57Z")
    assert_replay(client, list(range(6)), ids)
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    client = await replayed(server, stream=stream_id, token=token, replay=future)
    assert_replay(client, [], ids)


# -- replay by age -------------------------------------------------------------------------

SECOND_SPELLINGS = ["2s", "2 s", "2sec", "2 sec", "2seconds", "2 seconds", "2second", "2 SECOND"]
SECOND_SPELLINGS += ["2S", "2 Sec", "2SECONDS"]
MINUTE_SPELLINGS = ["1m", "1 m", "1min", "1 min", "1mins", "1 mins", "1minute", "1 minute"]
MINUTE_SPELLINGS += ["1minutes", "1 minutes", "1M", "1 MIN", "1Mins", "1 Minute", "1MINUTES"]
HOUR_SPELLINGS = ["1h", "1 h", "1hour", "1 hour", "1hours", "1 hours", "1H", "1 HOUR", "1Hours"]
DAY_SPELLINGS = ["1d", "1 d", "1day", "1 day", "1days", "1 days", "1D", "1 DAY", "1Days"]


async def test_replay_by_age_every_unit_spelling(server: Server) -> None:
    """Messages not older than the age. `old` is published >2 s before `new`: "2
    seconds" excludes it, "1 minute", "1 hour" and "1 day" include it."""
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 2)  # old
    old_ts = ts_ms((await poll_messages(server, stream_id, token))["messages"][-1]["timestamp"])
    await wait_past(old_ts, 2.5)
    ids += await publish_numbered(server, stream_id, 2, 2)  # new

    # all at once, so that every "2 seconds" client connects while `new` is younger
    spellings = SECOND_SPELLINGS + MINUTE_SPELLINGS + HOUR_SPELLINGS + DAY_SPELLINGS
    clients = await asyncio.gather(
        *(replayed(server, stream=stream_id, token=token, replay=age) for age in spellings)
    )
    for age, client in zip(spellings, clients, strict=True):
        expected = [2, 3] if age in SECOND_SPELLINGS else [0, 1, 2, 3]
        assert numbers(client.messages) == expected, age
        assert client.named("replay_end") == [{"count": len(expected), "lastId": ids[3]}], age


async def test_the_documented_example_ages(server: Server) -> None:
    """'2h' and '1hour', as in the original documentation."""
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 3)
    for age in ("2h", "1hour"):
        client = await replayed(server, "polling", stream=stream_id, token=token, replay=age)
        assert_replay(client, [0, 1, 2], ids)


# -- limits and truncation -----------------------------------------------------------------


async def test_replay_and_limit_together_truncates_to_the_newest(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 10)

    # by age: all 10 match, the newest 3 are replayed, the omitted start at the beginning
    client = await replayed(server, stream=stream_id, token=token, replay="1h", replayLimit=3)
    assert_replay(client, [7, 8, 9], ids)
    assert client.names.index("warning") < client.names.index("message")
    assert client.warnings == [
        {
            "code": "replay_truncated",
            "message": client.warnings[0]["message"],
            "limit": 3,
            "matched": 10,
            "omitted": 7,
            "firstReplayedId": ids[7],
            "backfillAfterId": None,
        }
    ]

    # by id: 3..9 match (7), the newest 3 are replayed, the omitted 4 follow ids[2]
    client = await replayed(server, stream=stream_id, token=token, replay=ids[2], replayLimit=3)
    assert_replay(client, [7, 8, 9], ids)
    (warning,) = client.warnings
    assert warning["code"] == "replay_truncated"
    assert (warning["limit"], warning["matched"], warning["omitted"]) == (3, 7, 4)
    assert warning["firstReplayedId"] == ids[7]
    assert warning["backfillAfterId"] == ids[2]
    page = await poll_messages(
        server, stream_id, token, after=warning["backfillAfterId"], limit=warning["omitted"]
    )
    assert [m["id"] for m in page["messages"]] == ids[3:7]  # exactly the omitted ones
    assert page["next"] == ids[6]  # ... and the next page starts at the first replayed


async def test_limit_above_cap_without_truncation(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 5)
    client = await replayed(server, stream=stream_id, token=token, replayLimit=10001)
    assert_replay(client, list(range(5)), ids)
    (warning,) = client.warnings
    assert warning["code"] == "replay_limit_capped"
    assert client.names.index("warning") < client.names.index("message")

    client = await replayed(server, stream=stream_id, token=token, replayLimit=10000)
    assert client.warnings == []  # 10000 itself is allowed


@pytest.fixture(scope="module")
def big_stream() -> dict[str, Any]:
    """Filled once by the first test that needs it (11000 messages on "" and one
    "errors" message per 1000, which must never count)."""
    return {}


async def fill_big_stream(server: Server, big: dict[str, Any]) -> dict[str, Any]:
    if not big:
        stream_id, token = await server.stream_and_token()
        ids: list[str] = []
        async with server.client() as http:
            for batch in range(11):
                items: list[dict[str, Any]] = [
                    {"data": {"n": n}} for n in range(batch * 1000, (batch + 1) * 1000)
                ]
                items.insert(500, {"channel": "errors", "data": f"error in batch {batch}"})
                r = await http.post(
                    f"/api/streams/{stream_id}/messages", json=items, headers=server.admin
                )
                assert r.status_code == 201, r.text
                batch_ids = r.json()["ids"]
                ids += batch_ids[:500] + batch_ids[501:]
        big.update(stream_id=stream_id, token=token, ids=ids)
    return big


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_cap_11000_messages_replay_limit_20000(
    server: Server, big_stream: dict[str, Any]
) -> None:
    big = await fill_big_stream(server, big_stream)
    stream_id, token, ids = big["stream_id"], big["token"], big["ids"]
    assert len(ids) == 11000

    url = server.socket_url(
        stream=stream_id, token=token, replayLimit=20000, includeMetadata="true"
    )
    client = await connect_and_wait(url)
    try:
        # the warnings come first, capped then truncated, before any message
        assert client.names[:3] == ["connect", "warning", "warning"], client.summary(5)
        capped, truncated = client.warnings
        assert capped["code"] == "replay_limit_capped"
        assert truncated == {
            "code": "replay_truncated",
            "message": truncated["message"],
            "limit": 10000,
            "matched": 11000,
            "omitted": 1000,
            "firstReplayedId": ids[1000],
            "backfillAfterId": None,  # the omitted ones start at the beginning
        }
        # the newest 10000, in order, flagged replayed, then replay_end
        envelopes = client.messages
        assert [e["data"]["n"] for e in envelopes] == list(range(1000, 11000))
        assert [e["id"] for e in envelopes] == ids[1000:]
        assert all(e["replayed"] is True and e["channel"] == "" for e in envelopes)
        assert client.names[-1] == "replay_end"
        assert client.named("replay_end") == [{"count": 10000, "lastId": ids[-1]}]
        # ...and it is live: the next message comes once, not replayed
        (live_id,) = await server.publish(stream_id, {"data": {"n": 11000}})
        await client.wait_messages(10001)
        assert client.messages[-1]["id"] == live_id
        assert client.messages[-1]["replayed"] is False
        ids.append(live_id)
    finally:
        await client.close()

    # the omitted messages are exactly what HTTP polling returns from the backfill point
    page = await poll_messages(server, stream_id, token, limit=truncated["omitted"])
    assert [m["id"] for m in page["messages"]] == ids[:1000]
    assert [m["data"]["n"] for m in page["messages"]] == list(range(1000))
    following = await poll_messages(server, stream_id, token, after=page["next"], limit=1)
    assert following["messages"][0]["id"] == truncated["firstReplayedId"]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_cap_11000_messages_replay_by_age(server: Server, big_stream: dict[str, Any]) -> None:
    big = await fill_big_stream(server, big_stream)
    stream_id, token, ids = big["stream_id"], big["token"], list(big["ids"])
    matched = len(ids)  # 11000 (11001 after the test above added a live one)
    assert matched in (11000, 11001)

    client = await replayed(server, "polling", stream=stream_id, token=token, replay="1h")
    (truncated,) = client.warnings  # no replayLimit given: nothing capped
    assert client.names.index("warning") < client.names.index("message")
    assert truncated == {
        "code": "replay_truncated",
        "message": truncated["message"],
        "limit": 10000,
        "matched": matched,
        "omitted": matched - 10000,
        "firstReplayedId": ids[matched - 10000],
        "backfillAfterId": None,
    }
    assert numbers(client.messages) == list(range(matched - 10000, matched))

    # from a message id: 10500 match, the newest 10000 are replayed, the omitted 500
    # follow that id exactly
    client = await replayed(server, stream=stream_id, token=token, replay=ids[499])
    (truncated,) = client.warnings
    assert (truncated["limit"], truncated["matched"]) == (10000, matched - 500)
    assert truncated["omitted"] == matched - 500 - 10000
    assert truncated["backfillAfterId"] == ids[499]
    first = matched - 10000
    assert truncated["firstReplayedId"] == ids[first]
    page = await poll_messages(
        server, stream_id, token, after=truncated["backfillAfterId"], limit=truncated["omitted"]
    )
    assert [m["data"]["n"] for m in page["messages"]] == list(range(500, first))
    assert numbers(client.messages) == list(range(first, matched))


# -- history disabled ----------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("replay", [{"replay": "1h"}, {"replayLimit": 5}])
async def test_history_disabled(server: Server, transport: str, replay: dict[str, Any]) -> None:
    stream_id, token = await server.stream_and_token(store_history=False)
    await publish_numbered(server, stream_id, 0, 3)  # not kept
    url = server.socket_url(stream=stream_id, token=token, **replay)
    client = await connect_and_wait(url, transport=transport)
    try:
        assert client.names == ["connect", "warning", "replay_end"], client.summary()
        assert client.warnings[0]["code"] == "history_disabled"
        assert client.named("replay_end") == [{"count": 0, "lastId": None}]
        # live messages still flow
        await publish_numbered(server, stream_id, 3, 2)
        assert numbers(await client.wait_messages(2)) == [3, 4]
        assert not client.disconnected
    finally:
        await client.close()


# -- polling with many packets waiting -----------------------------------------------------
# python-socketio's client refuses a polling payload of more than 16 packets ("Too many
# packets in payload") and drops the connection: the server must split them.


async def test_polling_replay_of_more_than_16_messages(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 100)
    client = await replayed(server, "polling", stream=stream_id, token=token, replayLimit=100)
    assert_replay(client, list(range(100)), ids)


async def test_polling_live_burst_of_more_than_16_messages(server: Server) -> None:
    stream_id, token = await server.stream_and_token()
    url = server.socket_url(stream=stream_id, token=token)
    client = await connect_and_wait(url, transport="polling")
    try:
        await publish_numbered(server, stream_id, 0, 100)  # one batch: one burst
        await client.wait_until(lambda: client.count("message") >= 100 or client.disconnected)
        assert not client.disconnected, client.summary()
        assert numbers(client.messages) == list(range(100))
    finally:
        await client.close()


async def test_store_history_toggled_by_patch(server: Server) -> None:
    """Turning `store_history` off: new clients get `history_disabled` and nothing
    replayed; messages published meanwhile are not kept. Turned back on, replay serves
    what was stored while it was on."""
    stream_id, token = await server.stream_and_token()
    ids = await publish_numbered(server, stream_id, 0, 3)

    async def patch(store_history: bool) -> None:
        async with server.client() as http:
            r = await http.patch(
                f"/api/streams/{stream_id}",
                json={"store_history": store_history},
                headers=server.admin,
            )
            assert r.status_code == 200, r.text

    await patch(False)
    client = await replayed(server, stream=stream_id, token=token, replay="1h")
    assert [w["code"] for w in client.warnings] == ["history_disabled"]
    assert client.messages == []
    assert client.named("replay_end") == [{"count": 0, "lastId": None}]
    ids += await publish_numbered(server, stream_id, 3, 2)  # not kept

    await patch(True)
    ids += await publish_numbered(server, stream_id, 5, 1)
    client = await replayed(server, stream=stream_id, token=token, replay="1h")
    assert client.warnings == []
    assert numbers(client.messages) == [0, 1, 2, 5]
    assert client.named("replay_end") == [{"count": 4, "lastId": ids[5]}]
