"""Idempotent publishing (SPEC §3, `Idempotency-Key`) against a real embedded server:
a repeat gets the first answer and stores and delivers nothing more, another body
under the key is refused, concurrent duplicates store once, and a retry after a
restart of the server on the same data directory still gets the first ids."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpkit import Api, assert_error, bearer, messages_url

from server import running_server
from sioclient import connect_and_wait

pytestmark = pytest.mark.timeout(60)


async def publish(
    client: httpx.AsyncClient, stream_id: str, secret: str, body: Any, key: str | bytes | None
) -> httpx.Response:
    headers = bearer(secret)
    if key is not None:
        headers["Idempotency-Key"] = key  # type: ignore[assignment]  # bytes: sent as is
    return await client.post(messages_url(stream_id), json=body, headers=headers)


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 201, response.text
    ids = response.json()["ids"]
    assert isinstance(ids, list)
    return ids


async def stored(api: Api, stream_id: str, secret: str, channel: str = "") -> list[Any]:
    return [m["data"] for m in await api.poll_all(stream_id, secret, channel=channel)]


async def test_a_repeat_answers_the_same_ids_and_stores_and_delivers_nothing_more(
    api: Api,
) -> None:
    stream_id, token = await api.stream_and_token()
    live = api.server.socket_url(stream=stream_id, token=token)
    watcher = await connect_and_wait(live)
    try:
        body = [{"data": 1}, {"channel": "progress", "data": {"pct": 50}}, {"data": 2}]
        first = ids_of(await publish(api.client, stream_id, token, body, "batch-1"))
        again = ids_of(await publish(api.client, stream_id, token, body, "batch-1"))
        assert again == first and len(first) == 3
        assert await stored(api, stream_id, token) == [1, 2]
        assert await stored(api, stream_id, token, "progress") == [{"pct": 50}]
        ids_of(await publish(api.client, stream_id, token, {"data": "after"}, None))
        await watcher.wait_messages(3)
        assert watcher.messages == [1, 2, "after"]  # the repeat was not delivered
    finally:
        await watcher.close()


async def test_the_same_request_written_otherwise_is_a_repeat(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    first = ids_of(await publish(api.client, stream_id, token, {"data": "x"}, "k"))
    same = [{"channel": "", "data": "x"}]  # the fingerprint is of the messages asked for
    assert ids_of(await publish(api.client, stream_id, token, same, "k")) == first
    assert await stored(api, stream_id, token) == ["x"]


async def test_the_same_key_with_another_body_is_refused(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    ids_of(await publish(api.client, stream_id, token, {"data": "a"}, "k"))
    refused = await publish(api.client, stream_id, token, {"data": "b"}, "k")
    assert_error(refused, 422, "idempotency_key_reused")
    assert await stored(api, stream_id, token) == ["a"]


async def test_keys_are_scoped_to_their_stream_and_work_with_the_admin_key(api: Api) -> None:
    s1, token = await api.stream_and_token()
    s2 = (await api.create_stream())["id"]
    headers = {**api.admin, "Idempotency-Key": "shared"}
    a = await api.client.post(messages_url(s1), json={"data": 1}, headers=headers)
    b = await api.client.post(messages_url(s2), json={"data": 1}, headers=headers)
    assert ids_of(a) != ids_of(b)
    again = await api.client.post(messages_url(s1), json={"data": 1}, headers=headers)
    assert ids_of(again) == ids_of(a)
    assert await stored(api, s1, token) == [1]


@pytest.mark.parametrize("key", ["", "a b", "x" * 256, b"\xc3\xa9t\xc3\xa9", "tab\there"], ids=repr)
async def test_a_malformed_key_is_refused(api: Api, key: str | bytes) -> None:
    stream_id, token = await api.stream_and_token()
    refused = await publish(api.client, stream_id, token, {"data": 1}, key)
    assert_error(refused, 400, "invalid_argument", "Idempotency-Key")
    assert await stored(api, stream_id, token) == []


async def test_keys_of_every_visible_character_and_the_longest_are_taken(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    for key in ("".join(map(chr, range(0x21, 0x7F))), "k" * 255, "1"):
        first = ids_of(await publish(api.client, stream_id, token, {"data": key}, key))
        assert ids_of(await publish(api.client, stream_id, token, {"data": key}, key)) == first
    assert len(await stored(api, stream_id, token)) == 3


async def test_bad_credentials_come_before_a_bad_key(api: Api) -> None:
    stream_id, _ = await api.stream_and_token()
    refused = await publish(api.client, stream_id, "bt_wrong", {"data": 1}, "")
    assert refused.status_code == 401


async def test_concurrent_duplicates_are_stored_once(api: Api) -> None:
    stream_id, token = await api.stream_and_token()
    body = [{"data": n} for n in range(50)]
    clients = [api.server.client() for _ in range(8)]
    try:
        answers = await asyncio.gather(
            *(publish(c, stream_id, token, body, "dup") for c in clients for _ in range(3))
        )
    finally:
        for client in clients:
            await client.aclose()
    assert len({tuple(ids_of(a)) for a in answers}) == 1
    assert await stored(api, stream_id, token) == list(range(50))


async def test_a_retry_after_a_restart_gets_the_first_ids(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = uuid.uuid4().hex
    with running_server(data_dir=data_dir) as first_run:
        stream_id, token = await first_run.stream_and_token()
        async with first_run.client() as client:
            first = ids_of(await publish(client, stream_id, token, {"data": "once"}, key))
    with running_server(data_dir=data_dir) as second_run:
        async with second_run.client() as client:
            again = ids_of(await publish(client, stream_id, token, {"data": "once"}, key))
            api = Api(second_run, client)
            assert again == first
            assert await stored(api, stream_id, token) == ["once"]
