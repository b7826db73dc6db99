"""The HTTP API of SPEC §3 against a real `bloomr serve`: streams, tokens, publish,
polling, health and docs. Each test makes its own streams and tokens."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from httpkit import (
    STREAM_ID_RE,
    TIMESTAMP_RE,
    Api,
    assert_envelope,
    assert_error,
    assert_uuid7,
    bearer,
    messages_url,
    open_client,
    wait_until,
)

from server import Server, running_server

STREAM_KEYS = {
    "id",
    "name",
    "store_history",
    "retention",
    "command",
    "cwd",
    "env",
    "restart",
    "created_at",
    "updated_at",
    "script",
}
TOKEN_KEYS = {"id", "name", "streams", "scopes", "expires_at", "created_at", "channels"}


# -- streams ------------------------------------------------------------------------------


async def test_create_stream_defaults(api: Api) -> None:
    r = await api.client.post("/api/streams", json={}, headers=api.admin)
    assert r.status_code == 201, r.text
    stream = r.json()
    assert STREAM_KEYS <= set(stream)
    assert STREAM_ID_RE.fullmatch(stream["id"])
    assert stream["name"] == ""
    assert stream["store_history"] is True
    assert stream["retention"] == {"max_age": "7d", "max_messages": 1_000_000}
    assert stream["command"] is None
    assert TIMESTAMP_RE.fullmatch(stream["created_at"])


async def test_create_stream_with_fields(api: Api) -> None:
    body = {"name": "deploys", "store_history": False, "retention": {"max_age": "2 hours"}}
    r = await api.client.post("/api/streams", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    stream = r.json()
    assert stream["name"] == "deploys"
    assert stream["store_history"] is False
    assert stream["retention"] == {"max_age": "2 hours", "max_messages": 1_000_000}


async def test_stream_ids_are_distinct(api: Api) -> None:
    ids = {(await api.create_stream())["id"] for _ in range(20)}
    assert len(ids) == 20


async def test_list_and_show_streams(api: Api) -> None:
    a = await api.create_stream(name="a")
    b = await api.create_stream(name="b")
    r = await api.client.get("/api/streams", headers=api.admin)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["streams"]
    listed = {s["id"]: s for s in body["streams"]}
    assert listed[a["id"]] == a and listed[b["id"]] == b

    r = await api.client.get(f"/api/streams/{a['id']}", headers=api.admin)
    assert r.status_code == 200
    assert r.json() == a


async def test_patch_stream(api: Api) -> None:
    stream = await api.create_stream(name="before")
    url = f"/api/streams/{stream['id']}"

    r = await api.client.patch(url, json={"store_history": False}, headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["store_history"] is False
    assert r.json()["name"] == "before"

    r = await api.client.patch(
        url, json={"name": "after", "retention": {"max_messages": 10}}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["retention"] == {"max_age": "7d", "max_messages": 10}

    r = await api.client.patch(url, json={"retention": {"max_age": "12h"}}, headers=api.admin)
    assert r.json()["retention"] == {"max_age": "12h", "max_messages": 10}

    shown = (await api.client.get(url, headers=api.admin)).json()
    assert shown["name"] == "after"
    assert shown["store_history"] is False
    assert shown["retention"] == {"max_age": "12h", "max_messages": 10}
    assert shown["id"] == stream["id"] and shown["created_at"] == stream["created_at"]
    assert shown["updated_at"] >= stream["updated_at"]


async def test_store_history_toggle(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    url = f"/api/streams/{stream_id}"
    first = await api.publish(stream_id, {"data": "kept 1"})

    await api.client.patch(url, json={"store_history": False}, headers=api.admin)
    skipped = await api.publish(stream_id, [{"data": "not kept"}, {"data": "not kept"}])
    assert len(skipped) == 2  # ordered and acknowledged, just not stored
    assert [m["data"] for m in await api.poll_all(stream_id, secret)] == ["kept 1"]

    await api.client.patch(url, json={"store_history": True}, headers=api.admin)
    last = await api.publish(stream_id, {"data": "kept 2"})

    stored = await api.poll_all(stream_id, secret)
    assert [m["data"] for m in stored] == ["kept 1", "kept 2"]
    assert [m["id"] for m in stored] == first + last
    assert first[0] < skipped[0] < skipped[1] < last[0]


async def test_delete_stream(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": 1})
    url = f"/api/streams/{stream_id}"

    r = await api.client.delete(url, headers=api.admin)
    assert r.status_code == 204
    assert r.content == b""

    assert_error(await api.client.get(url, headers=api.admin), 404, "not_found")
    assert_error(await api.client.delete(url, headers=api.admin), 404, "not_found")
    assert_error(
        await api.client.patch(url, json={"name": "x"}, headers=api.admin), 404, "not_found"
    )
    r = await api.client.post(messages_url(stream_id), json={"data": 2}, headers=api.admin)
    assert_error(r, 404, "not_found")
    r = await api.client.get(messages_url(stream_id), headers=bearer(secret))
    assert_error(r, 404, "not_found")
    listed = (await api.client.get("/api/streams", headers=api.admin)).json()["streams"]
    assert stream_id not in {s["id"] for s in listed}


async def test_unknown_stream_is_404_for_the_admin(api: Api) -> None:
    url = "/api/streams/NoSuchOne1"
    assert_error(await api.client.get(url, headers=api.admin), 404, "not_found")
    r = await api.client.patch(url, json={"name": "x"}, headers=api.admin)
    assert_error(r, 404, "not_found")
    r = await api.client.post(messages_url("NoSuchOne1"), json={"data": 1}, headers=api.admin)
    assert_error(r, 404, "not_found")
    assert_error(
        await api.client.get(messages_url("NoSuchOne1"), headers=api.admin), 404, "not_found"
    )


async def test_stream_endpoints_need_the_admin_key(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    assert_error(await api.client.get("/api/streams"), 401, "unauthorized")
    assert_error(await api.client.post("/api/streams", json={}), 401, "unauthorized")
    r = await api.client.get("/api/streams", headers=bearer("not-the-key"))
    assert_error(r, 401, "unauthorized")
    for request in (
        api.client.get("/api/streams", headers=bearer(secret)),
        api.client.post("/api/streams", json={}, headers=bearer(secret)),
        api.client.get(f"/api/streams/{stream_id}", headers=bearer(secret)),
        api.client.patch(f"/api/streams/{stream_id}", json={"name": "x"}, headers=bearer(secret)),
        api.client.delete(f"/api/streams/{stream_id}", headers=bearer(secret)),
        api.client.get("/api/tokens", headers=bearer(secret)),
        api.client.post("/api/tokens", json={"streams": ["*"]}, headers=bearer(secret)),
    ):
        assert_error(await request, 403, "forbidden")
    assert (await api.client.get(f"/api/streams/{stream_id}", headers=api.admin)).status_code == 200


# -- tokens -------------------------------------------------------------------------------


async def test_create_token(api: Api) -> None:
    stream = await api.create_stream()
    body = {"name": "reader", "streams": [stream["id"]]}
    r = await api.client.post("/api/tokens", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    token = r.json()
    assert set(token) == TOKEN_KEYS | {"token"}
    assert token["name"] == "reader"
    assert token["streams"] == [stream["id"]]
    assert token["scopes"] == ["subscribe"]  # the default
    assert token["expires_at"] is None
    assert isinstance(token["token"], str) and len(token["token"]) >= 32
    assert token["token"] != token["id"]


async def test_create_token_with_scopes_and_expiry(api: Api) -> None:
    body = {
        "streams": ["*"],
        "scopes": ["publish", "subscribe"],
        "expires_at": "2100-01-01T02:00:00+02:00",
    }
    r = await api.client.post("/api/tokens", json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    token = r.json()
    assert token["streams"] == ["*"]
    assert sorted(token["scopes"]) == ["publish", "subscribe"]
    assert token["expires_at"] == "2100-01-01T00:00:00Z"


async def test_list_tokens_never_shows_secrets(api: Api) -> None:
    stream = await api.create_stream()
    created = await api.create_token([stream["id"]], ["subscribe", "publish"], name="x")
    secret = created.pop("token")
    r = await api.client.get("/api/tokens", headers=api.admin)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["tokens"]
    listed = {t["id"]: t for t in body["tokens"]}
    assert listed[created["id"]] == created
    for token in body["tokens"]:
        assert set(token) == TOKEN_KEYS
    assert secret not in r.text
    assert hashlib.sha256(secret.encode()).hexdigest() not in r.text


async def test_revoke_token(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    token_id = next(
        t["id"]
        for t in (await api.client.get("/api/tokens", headers=api.admin)).json()["tokens"]
        if t["streams"] == [stream_id]
    )
    await api.poll(stream_id, secret)  # works before

    r = await api.client.delete(f"/api/tokens/{token_id}", headers=api.admin)
    assert r.status_code == 204 and r.content == b""

    r = await api.client.get(messages_url(stream_id), headers=bearer(secret))
    assert_error(r, 401, "unauthorized")
    r = await api.client.post(messages_url(stream_id), json={"data": 1}, headers=bearer(secret))
    assert_error(r, 401, "unauthorized")
    r = await api.client.delete(f"/api/tokens/{token_id}", headers=api.admin)
    assert_error(r, 404, "not_found")
    listed = (await api.client.get("/api/tokens", headers=api.admin)).json()["tokens"]
    assert token_id not in {t["id"] for t in listed}


async def test_expired_token_is_unauthorized(api: Api) -> None:
    stream = await api.create_stream()
    past = await api.create_token([stream["id"]], expires_at="2001-01-01T00:00:00Z")
    r = await api.client.get(messages_url(stream["id"]), headers=bearer(past["token"]))
    assert_error(r, 401, "unauthorized")
    soon = datetime.now(UTC) + timedelta(hours=1)
    valid = await api.create_token([stream["id"]], expires_at=soon.isoformat())
    await api.poll(stream["id"], valid["token"])


async def test_wildcard_token_reads_every_stream(api: Api) -> None:
    a, b = await api.create_stream(), await api.create_stream()
    await api.publish(a["id"], {"data": "a"})
    await api.publish(b["id"], {"data": "b"})
    token = await api.create_token(["*"])
    assert [m["data"] for m in (await api.poll(a["id"], token["token"]))["messages"]] == ["a"]
    assert [m["data"] for m in (await api.poll(b["id"], token["token"]))["messages"]] == ["b"]
    r = await api.client.get(messages_url("NoSuchOne1"), headers=bearer(token["token"]))
    assert_error(r, 404, "not_found")


async def test_token_for_an_unknown_stream_is_refused(api: Api) -> None:
    r = await api.client.post("/api/tokens", json={"streams": ["NoSuchOne1"]}, headers=api.admin)
    assert_error(r, 422, "validation_failed", "streams")


# -- publish ------------------------------------------------------------------------------


async def test_publish_one(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.post(messages_url(stream_id), json={"data": "hello"}, headers=api.admin)
    assert r.status_code == 201, r.text
    body = r.json()
    assert list(body) == ["ids"] and len(body["ids"]) == 1
    assert_uuid7(body["ids"][0])
    # 201 means stored: the very next read sees it
    [message] = (await api.poll(stream_id, secret))["messages"]
    assert message["id"] == body["ids"][0]
    assert message["data"] == "hello"
    assert_envelope(message, stream_id)


async def test_publish_a_batch_in_order(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    batch = [{"data": i} for i in range(50)]
    r = await api.client.post(messages_url(stream_id), json=batch, headers=api.admin)
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert len(ids) == 50
    for message_id in ids:
        assert_uuid7(message_id)
    assert ids == sorted(ids) and len(set(ids)) == 50
    stored = await api.poll_all(stream_id, secret)
    assert [m["id"] for m in stored] == ids
    assert [m["data"] for m in stored] == list(range(50))


async def test_publish_an_empty_batch(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.post(messages_url(stream_id), json=[], headers=api.admin)
    assert r.status_code == 201 and r.json() == {"ids": []}
    assert await api.poll_all(stream_id, secret) == []


@pytest.mark.parametrize(
    "data",
    ["", "line with \"quotes\" and \\ and é ✓", 0, -7, 3.25, True, False, None, [], {},
     [1, "two", {"three": [3]}], {"pct": 50, "nested": {"deep": [None, True]}}],
)  # fmt: skip
async def test_any_json_data_round_trips(api: Api, data: Any) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": data})
    [message] = (await api.poll(stream_id, secret))["messages"]
    assert message["data"] == data
    assert type(message["data"]) is type(data)


async def test_publish_to_channels(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(
        stream_id,
        [
            {"data": "out 1"},
            {"channel": "errors", "data": "err 1"},
            {"channel": "progress", "data": {"pct": 10}},
            {"channel": "", "data": "out 2"},
            {"channel": "a.b:c-d_e", "data": "custom"},
        ],
    )
    default = (await api.poll(stream_id, secret))["messages"]
    assert [m["data"] for m in default] == ["out 1", "out 2"]
    assert [m["id"] for m in default] == [ids[0], ids[3]]
    for m in default:
        assert_envelope(m, stream_id, "")
    assert (await api.poll(stream_id, secret, channel=""))["messages"] == default
    errors = (await api.poll(stream_id, secret, channel="errors"))["messages"]
    assert [(m["id"], m["data"]) for m in errors] == [(ids[1], "err 1")]
    assert_envelope(errors[0], stream_id, "errors")
    progress = (await api.poll(stream_id, secret, channel="progress"))["messages"]
    assert [m["data"] for m in progress] == [{"pct": 10}]
    custom = (await api.poll(stream_id, secret, channel="a.b:c-d_e"))["messages"]
    assert [m["data"] for m in custom] == ["custom"]
    assert (await api.poll(stream_id, secret, channel="none"))["messages"] == []


async def test_publish_with_a_publish_token(api: Api) -> None:
    stream = await api.create_stream()
    publisher = await api.create_token([stream["id"]], ["publish"])
    reader = await api.create_token([stream["id"]], ["subscribe"])
    ids = await api.publish(stream["id"], [{"data": 1}, {"data": 2}], publisher["token"])
    r = await api.client.post(
        messages_url(stream["id"]), params={"token": publisher["token"]}, json={"data": 3}
    )
    assert r.status_code == 201, r.text
    stored = await api.poll_all(stream["id"], reader["token"])
    assert [m["id"] for m in stored] == ids + r.json()["ids"]
    # a publish-only token cannot read
    r = await api.client.get(messages_url(stream["id"]), headers=bearer(publisher["token"]))
    assert_error(r, 403, "forbidden")


async def test_subscribe_only_token_cannot_publish(api: Api) -> None:
    stream = await api.create_stream()
    reader = await api.create_token([stream["id"]])
    r = await api.client.post(
        messages_url(stream["id"]), json={"data": 1}, headers=bearer(reader["token"])
    )
    assert_error(r, 403, "forbidden")
    assert (await api.poll(stream["id"], reader["token"]))["messages"] == []


async def test_a_token_never_reaches_another_stream(api: Api) -> None:
    mine, secret = await api.stream_and_token()
    other, _ = await api.stream_and_token()
    await api.publish(other, {"data": "secret"})
    r = await api.client.get(messages_url(other), headers=bearer(secret))
    assert_error(r, 403, "forbidden")
    r = await api.client.get(messages_url(other), params={"token": secret})
    assert_error(r, 403, "forbidden")
    r = await api.client.post(messages_url(other), json={"data": 1}, headers=bearer(secret))
    assert_error(r, 403, "forbidden")
    # nor can ids from it be used to read it through the own stream
    [other_id] = await api.publish(other, {"data": "x"})
    r = await api.client.get(messages_url(mine), params={"after": other_id}, headers=bearer(secret))
    assert_error(r, 404, "unknown_message_id")


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("bt_wrong"), bearer("test-admin-keyX"), {"Authorization": "Bearer"},
     {"Authorization": "Basic dGVzdDp0ZXN0"}, {"Authorization": "test-admin-key"}],
)  # fmt: skip
async def test_missing_or_invalid_credentials(api: Api, headers: dict[str, str]) -> None:
    stream_id, _ = await api.stream_and_token()
    r = await api.client.post(messages_url(stream_id), json={"data": 1}, headers=headers)
    assert_error(r, 401, "unauthorized")
    assert_error(
        await api.client.get(messages_url(stream_id), headers=headers), 401, "unauthorized"
    )
    r = await api.client.get(messages_url(stream_id), params={"token": "bt_wrong"})
    assert_error(r, 401, "unauthorized")


# -- polling ------------------------------------------------------------------------------


async def test_poll_token_in_the_query(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": 1}, {"data": 2}])
    r = await api.client.get(messages_url(stream_id), params={"token": secret})
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["messages"]] == ids


async def test_poll_envelopes(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    before = datetime.now(UTC) - timedelta(seconds=5)
    ids = await api.publish(stream_id, [{"data": {"n": 1}}, {"channel": "c", "data": 2}])
    after = datetime.now(UTC) + timedelta(seconds=5)
    page = await api.poll(stream_id, secret)
    [m] = page["messages"]
    assert m == {
        "id": ids[0],
        "stream": stream_id,
        "channel": "",
        "timestamp": m["timestamp"],
        "data": {"n": 1},
    }
    assert_envelope(m, stream_id)
    at = datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))
    assert before <= at <= after
    assert page["next"] == ids[0]


async def test_poll_empty_stream(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    assert await api.poll(stream_id, secret) == {"messages": [], "next": None}


async def test_poll_after_is_exclusive(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": i} for i in range(10)])
    page = await api.poll(stream_id, secret, after=ids[3])
    assert [m["id"] for m in page["messages"]] == ids[4:]
    page = await api.poll(stream_id, secret, after=ids[3].upper())
    assert [m["id"] for m in page["messages"]] == ids[4:]
    page = await api.poll(stream_id, secret, after=ids[-1])
    assert page == {"messages": [], "next": ids[-1]}  # nothing new: same cursor
    # new messages then appear after that cursor, exactly
    more = await api.publish(stream_id, [{"data": "x"}, {"data": "y"}])
    page = await api.poll(stream_id, secret, after=page["next"])
    assert [m["id"] for m in page["messages"]] == more


async def test_poll_after_an_unknown_id(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    await api.publish(stream_id, {"data": 1})
    r = await api.client.get(
        messages_url(stream_id),
        params={"after": "01890a5d-ac96-774b-bcce-b302099a8057"},
        headers=bearer(secret),
    )
    assert_error(r, 404, "unknown_message_id")


@pytest.mark.parametrize("after", ["abc", "123", "01890a5d-ac96-774b-bcce-b302099a805"])
async def test_poll_after_must_be_an_id(api: Api, after: str) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.get(
        messages_url(stream_id), params={"after": after}, headers=bearer(secret)
    )
    assert_error(r, 400, "invalid_argument", "after")


async def test_poll_replay_by_age(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": i} for i in range(5)])
    for age in ("1h", "2 hours", "30 MIN", "7d", "3600s", "1 day"):
        page = await api.poll(stream_id, secret, replay=age)
        assert [m["id"] for m in page["messages"]] == ids, age
    future = await api.poll(stream_id, secret, replay="0s")
    assert all(m["id"] in ids for m in future["messages"])


async def test_poll_replay_by_iso_date(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    for i in range(40):  # several requests: several distinct timestamps
        await api.publish(stream_id, [{"data": i}])
    stored = await api.poll_all(stream_id, secret)
    pivot = stored[len(stored) // 2]["timestamp"]
    expected = [m["id"] for m in stored if m["timestamp"] >= pivot]  # same format: sortable
    assert stored[len(stored) // 2]["id"] in expected  # at or after: inclusive

    at = datetime.fromisoformat(pivot.replace("Z", "+00:00"))
    spellings = [
        pivot,
        pivot.replace("Z", "+00:00"),
        pivot.removesuffix("Z"),  # no zone = UTC
        at.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat(timespec="milliseconds"),
        at.astimezone(timezone(timedelta(hours=-7))).isoformat(timespec="milliseconds"),
    ]
    for spelling in spellings:
        page = await api.poll(stream_id, secret, replay=spelling)
        assert [m["id"] for m in page["messages"]] == expected, spelling

    page = await api.poll(stream_id, secret, replay="2001-01-01T00:00:00Z")
    assert [m["id"] for m in page["messages"]] == [m["id"] for m in stored]
    page = await api.poll(stream_id, secret, replay="2999-01-01T00:00:00Z")
    assert page == {"messages": [], "next": None}


async def test_poll_replay_by_id(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": i} for i in range(6)])
    page = await api.poll(stream_id, secret, replay=ids[1])
    assert [m["id"] for m in page["messages"]] == ids[2:]
    page = await api.poll(stream_id, secret, replay=ids[1].upper())
    assert [m["id"] for m in page["messages"]] == ids[2:]


async def test_poll_replay_and_after_both_apply(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": i} for i in range(8)])
    page = await api.poll(stream_id, secret, replay="1h", after=ids[4])
    assert [m["id"] for m in page["messages"]] == ids[5:]
    page = await api.poll(stream_id, secret, replay=ids[2], after=ids[5])
    assert [m["id"] for m in page["messages"]] == ids[6:]
    page = await api.poll(stream_id, secret, replay=ids[5], after=ids[2])
    assert [m["id"] for m in page["messages"]] == ids[6:]
    page = await api.poll(stream_id, secret, replay="2999-01-01T00:00:00Z", after=ids[2])
    assert page["messages"] == []


async def test_poll_empty_arguments_are_absent(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": i} for i in range(3)])
    page = await api.poll(stream_id, secret, replay="", after="", limit="", channel="")
    assert [m["id"] for m in page["messages"]] == ids


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"limit": "10001"}, "limit"),
        ({"limit": "99999999999999999999"}, "limit"),
        ({"replay": "yesterday"}, "replay"),
        ({"replay": "5 fortnights"}, "replay"),
        ({"replay": "2024-13-45T00:00:00Z"}, "replay"),
        ({"channel": "not valid"}, "channel"),
        ({"channel": "x" * 65}, "channel"),
        ({"channel": "a/b"}, "channel"),
    ],
)
async def test_poll_bad_arguments(api: Api, params: dict[str, str], field: str) -> None:
    stream_id, secret = await api.stream_and_token()
    r = await api.client.get(messages_url(stream_id), params=params, headers=bearer(secret))
    assert_error(r, 400, "invalid_argument", field)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        pytest.param("replay", "99999999999999999999d", id="age-20-digits"),
        pytest.param("replay", "9" * 30 + "s", id="age-30-digits"),
        pytest.param("replay", "106751991167d", id="age-near-int64"),
        pytest.param("replay", "1" * 5000 + "s", id="age-5000-digits"),
        pytest.param("limit", "1" * 5000, id="limit-5000-digits"),
    ],
)
async def test_poll_huge_numbers_are_not_a_server_error(api: Api, param: str, value: str) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(stream_id, [{"data": 1}])
    r = await api.client.get(messages_url(stream_id), params={param: value}, headers=bearer(secret))
    if r.status_code == 200:  # an age older than everything: all of the history
        assert [m["id"] for m in r.json()["messages"]] == ids
    else:
        assert_error(r, 400, "invalid_argument", param)


async def test_poll_limits_and_paging_through_2500(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids: list[str] = []
    for start in range(0, 2500, 500):
        ids += await api.publish(stream_id, [{"data": i} for i in range(start, start + 500)])

    first = await api.poll(stream_id, secret)  # default limit: 1000
    assert len(first["messages"]) == 1000
    assert first["next"] == ids[999]

    pages: list[list[dict[str, Any]]] = []
    after: str | None = None
    while True:
        params = {"limit": 1000} if after is None else {"limit": 1000, "after": after}
        page = await api.poll(stream_id, secret, **params)
        if not page["messages"]:
            assert page["next"] == after  # an empty page keeps the cursor
            break
        pages.append(page["messages"])
        assert page["next"] == page["messages"][-1]["id"]
        after = page["next"]
    assert [len(p) for p in pages] == [1000, 1000, 500]
    everything = [m for p in pages for m in p]
    assert [m["id"] for m in everything] == ids
    assert [m["data"] for m in everything] == list(range(2500))

    whole = await api.poll(stream_id, secret, limit=10_000)
    assert [m["id"] for m in whole["messages"]] == ids
    small = await api.poll(stream_id, secret, limit=7, after=ids[100])
    assert [m["id"] for m in small["messages"]] == ids[101:108]


async def test_poll_pages_of_one_channel(api: Api) -> None:
    stream_id, secret = await api.stream_and_token()
    ids = await api.publish(
        stream_id, [{"channel": "odd" if i % 2 else "even", "data": i} for i in range(30)]
    )
    got: list[dict[str, Any]] = []
    page = await api.poll(stream_id, secret, channel="odd", limit=4)
    while page["messages"]:
        got += page["messages"]
        page = await api.poll(stream_id, secret, channel="odd", limit=4, after=page["next"])
    assert [m["data"] for m in got] == list(range(1, 30, 2))
    assert [m["id"] for m in got] == ids[1::2]


# -- retention ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trimming_server() -> Iterator[Server]:
    with running_server(env={"BLOOMR_TRIM_INTERVAL": "0.1"}) as srv:
        yield srv


async def test_retention_keeps_the_newest_max_messages(trimming_server: Server) -> None:
    async with open_client(trimming_server) as client:
        api = Api(trimming_server, client)
        stream_id, secret = await api.stream_and_token(retention={"max_messages": 5})
        ids = await api.publish(stream_id, [{"data": i} for i in range(12)])

        async def trimmed() -> bool:
            return len(await api.poll_all(stream_id, secret)) == 5

        await wait_until(trimmed)
        assert [m["id"] for m in await api.poll_all(stream_id, secret)] == ids[-5:]
        r = await client.get(
            messages_url(stream_id), params={"after": ids[0]}, headers=bearer(secret)
        )
        assert_error(r, 404, "unknown_message_id")  # trimmed away
        more = await api.publish(stream_id, {"data": "later"})
        await wait_until(trimmed)
        assert [m["id"] for m in await api.poll_all(stream_id, secret)] == ids[-4:] + more


# -- health and docs ----------------------------------------------------------------------


async def test_healthz(api: Api) -> None:
    r = await api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_openapi_document(api: Api) -> None:
    r = await api.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, methods in {
        "/api/streams": {"get", "post"},
        "/api/streams/{stream_id}": {"get", "patch", "delete"},
        "/api/tokens": {"get", "post"},
        "/api/tokens/{token_id}": {"delete"},
        "/api/streams/{stream_id}/messages": {"get", "post"},
        "/healthz": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    assert "PublishItem" in doc["components"]["schemas"]


async def test_docs_page(api: Api) -> None:
    r = await api.client.get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "openapi.json" in r.text


async def test_unknown_path_and_method(api: Api) -> None:
    assert_error(await api.client.get("/api/nothing", headers=api.admin), 404, "not_found")
    r = await api.client.put("/api/streams", json={}, headers=api.admin)
    assert_error(r, 405, "method_not_allowed")
