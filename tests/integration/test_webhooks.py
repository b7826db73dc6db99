"""Webhooks (SPEC §3) against a real `bloomr serve` and a real HTTP receiver in the test:
signed deliveries, batches under backlog, channel filtering, retries with the same
delivery id, the private-address guard, a restart mid-delivery, and deletes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from httpkit import Api, assert_envelope, assert_error, bearer, open_client, wait_until

from hookkit import Hit, Receiver, running_receiver
from server import ADMIN_KEY, Server, running_server

ALLOW = {"BLOOMR_WEBHOOK_ALLOW_PRIVATE": "1"}
STATE_KEYS = {
    "pending",
    "delivered",
    "dropped",
    "last_status",
    "last_error",
    "last_attempt_at",
    "last_delivery_at",
    "delivery_id",
    "attempts",
    "next_attempt_at",
}
HOOK_KEYS = {"id", "stream", "url", "channel", "created_at"} | STATE_KEYS


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as rec:
        yield rec


# -- servers and API helpers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hooks_server() -> Iterator[Server]:
    """A server whose webhooks may call 127.0.0.1 (where the receiver listens)."""
    with running_server(env=ALLOW) as srv:
        yield srv


@pytest.fixture
async def api(hooks_server: Server) -> AsyncIterator[Api]:
    async with open_client(hooks_server) as client:
        yield Api(hooks_server, client)


def hooks_url(stream_id: str, webhook_id: str = "") -> str:
    return f"/api/streams/{stream_id}/webhooks" + (f"/{webhook_id}" if webhook_id else "")


async def create_hook(api: Api, stream_id: str, **body: Any) -> dict[str, Any]:
    r = await api.client.post(hooks_url(stream_id), json=body, headers=api.admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def show_hook(api: Api, stream_id: str, webhook_id: str) -> dict[str, Any]:
    r = await api.client.get(hooks_url(stream_id, webhook_id), headers=api.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


def signed(hit: Hit, secret: str) -> bool:
    """What a receiver does (the README's snippet)."""
    timestamp = hit.headers["X-Bloomr-Timestamp"]
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + hit.body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + expected.hexdigest(), hit.headers["X-Bloomr-Signature"])


# -- the API -------------------------------------------------------------------------------


async def test_create_list_show_delete(api: Api, receiver: Receiver) -> None:
    stream = (await api.create_stream())["id"]
    hook = await create_hook(api, stream, url=receiver.url())
    assert set(hook) == HOOK_KEYS | {"secret"}
    assert hook["id"].startswith("wh_") and hook["stream"] == stream
    assert hook["url"] == receiver.url() and hook["channel"] == ""
    assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
    assert hook["pending"] == 0 and hook["delivered"] == 0 and hook["attempts"] == 0
    mine = await create_hook(api, stream, url=receiver.url("/b"), channel="errors", secret="s" * 8)
    assert mine["secret"] == "s" * 8 and mine["channel"] == "errors"

    r = await api.client.get(hooks_url(stream), headers=api.admin)
    assert r.status_code == 200
    listed = r.json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"], mine["id"]]
    assert all(set(h) == HOOK_KEYS for h in listed), "never the secret"
    shown = await show_hook(api, stream, hook["id"])
    assert set(shown) == HOOK_KEYS and shown["url"] == receiver.url()

    r = await api.client.delete(hooks_url(stream, hook["id"]), headers=api.admin)
    assert r.status_code == 204 and r.content == b""
    r = await api.client.get(hooks_url(stream, hook["id"]), headers=api.admin)
    assert_error(r, 404, "not_found")
    r = await api.client.delete(hooks_url(stream, hook["id"]), headers=api.admin)
    assert_error(r, 404, "not_found")
    r = await api.client.get(hooks_url(stream), headers=api.admin)
    assert [h["id"] for h in r.json()["webhooks"]] == [mine["id"]]


async def test_unknown_things_and_bad_bodies(api: Api, receiver: Receiver) -> None:
    stream, token = await api.stream_and_token()
    other = (await api.create_stream())["id"]
    hook = await create_hook(api, stream, url=receiver.url())
    c, admin = api.client, api.admin
    assert_error(await c.get(hooks_url("NoSuchStrm"), headers=admin), 404, "not_found")
    assert_error(
        await c.post(hooks_url("NoSuchStrm"), json={"url": receiver.url()}, headers=admin),
        404,
        "not_found",
    )
    assert_error(await c.get(hooks_url(stream, "wh_nope"), headers=admin), 404, "not_found")
    # a webhook is found only under its own stream
    assert_error(await c.get(hooks_url(other, hook["id"]), headers=admin), 404, "not_found")
    assert_error(await c.delete(hooks_url(other, hook["id"]), headers=admin), 404, "not_found")
    for body, field_name in [
        ({}, "url"),
        ({"url": receiver.url(), "events": ["x"]}, "events"),
        ({"url": "ftp://example.com/x"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": 5}, "url"),
        ({"url": receiver.url(), "channel": "bad channel!"}, "channel"),
        ({"url": receiver.url(), "secret": "short"}, "secret"),
    ]:
        r = await c.post(hooks_url(stream), json=body, headers=admin)
        assert_error(r, 422, "validation_failed", field=field_name)
    assert_error(await c.get(hooks_url(stream)), 401, "unauthorized")
    assert_error(await c.get(hooks_url(stream), headers=bearer(token)), 403, "forbidden")


# -- delivery --------------------------------------------------------------------------------


async def test_one_message_is_one_signed_request(api: Api, receiver: Receiver) -> None:
    stream, token = await api.stream_and_token()
    hook = await create_hook(api, stream, url=receiver.url())
    [message_id] = await api.publish(stream, {"data": {"hello": "world"}})
    await receiver.until(lambda: len(receiver.hits) >= 1)
    [hit] = receiver.hits
    assert hit.headers["Content-Type"] == "application/json"
    assert abs(int(hit.headers["X-Bloomr-Timestamp"]) - time.time()) < 60
    assert hit.delivery
    assert signed(hit, hook["secret"])
    assert not signed(hit, "whsec_wrong")
    [envelope] = hit.messages
    assert_envelope(envelope, stream)
    assert envelope["id"] == message_id and envelope["data"] == {"hello": "world"}
    # the same envelope as HTTP polling gives
    polled = (await api.poll(stream, token))["messages"]
    assert hit.body == json.dumps({"messages": polled}, separators=(",", ":")).encode()

    async def recorded() -> bool:
        state = await show_hook(api, stream, hook["id"])
        return bool(state["delivered"] == 1)

    await wait_until(recorded)
    state = await show_hook(api, stream, hook["id"])
    assert state["pending"] == 0 and state["last_status"] == 200 and state["last_error"] is None
    assert state["last_delivery_at"] is not None and state["delivery_id"] is None


async def test_a_backlog_is_sent_in_ordered_batches_of_at_most_100(
    api: Api, receiver: Receiver
) -> None:
    stream = (await api.create_stream())["id"]
    hook = await create_hook(api, stream, url=receiver.url())
    receiver.gate = asyncio.Event()  # the receiver is slow: it holds the first request
    ids = await api.publish(stream, {"data": 0})
    await receiver.until(lambda: receiver.arrived == 1)
    for start in range(1, 250, 25):  # while the first request is held
        ids += await api.publish(stream, [{"data": i} for i in range(start, min(start + 25, 250))])
    assert len(ids) == 250

    async def all_pending() -> bool:
        return bool((await show_hook(api, stream, hook["id"]))["pending"] == 250)

    await wait_until(all_pending)
    receiver.gate.set()
    await receiver.until(lambda: len(receiver.delivered()) >= 250)
    assert [m["id"] for m in receiver.delivered()] == ids
    assert [m["data"] for m in receiver.delivered()] == list(range(250))
    sizes = [len(h.messages) for h in receiver.hits]
    assert sizes == [1, 100, 100, 49], sizes
    assert all(h.ok for h in receiver.hits)
    assert len({h.delivery for h in receiver.hits}) == 4
    assert all(signed(h, hook["secret"]) for h in receiver.hits)


async def test_channels_are_filtered(api: Api, receiver: Receiver) -> None:
    stream = (await api.create_stream())["id"]
    await create_hook(api, stream, url=receiver.url("/stdout"))
    await create_hook(api, stream, url=receiver.url("/progress"), channel="progress")
    await api.publish(
        stream,
        [
            {"data": 1},
            {"channel": "progress", "data": 2},
            {"channel": "errors", "data": 3},
            {"data": 4},
        ],
    )
    await api.publish(stream, {"channel": "progress", "data": 5})
    await receiver.until(
        lambda: len(receiver.delivered("/stdout") + receiver.delivered("/progress")) >= 4
    )
    assert [m["data"] for m in receiver.delivered("/stdout")] == [1, 4]
    assert [m["data"] for m in receiver.delivered("/progress")] == [2, 5]
    for message in receiver.delivered("/progress"):
        assert_envelope(message, stream, "progress")


async def test_a_stream_without_history_still_delivers(api: Api, receiver: Receiver) -> None:
    stream, token = await api.stream_and_token(store_history=False)
    await create_hook(api, stream, url=receiver.url())
    ids = await api.publish(stream, [{"data": "a"}, {"data": "b"}])
    await receiver.until(lambda: len(receiver.delivered()) >= 2)
    assert [m["id"] for m in receiver.delivered()] == ids
    assert (await api.poll(stream, token))["messages"] == []  # nothing stored


async def test_only_messages_published_while_the_webhook_exists(
    api: Api, receiver: Receiver
) -> None:
    stream = (await api.create_stream())["id"]
    await api.publish(stream, {"data": "before"})
    await create_hook(api, stream, url=receiver.url())
    await api.publish(stream, {"data": "after"})
    await receiver.until(lambda: len(receiver.delivered()) >= 1)
    assert [m["data"] for m in receiver.delivered()] == ["after"]


async def test_a_failed_request_is_retried_with_the_same_id_and_body(
    api: Api, receiver: Receiver
) -> None:
    receiver.script = [500, 500]
    stream = (await api.create_stream())["id"]
    hook = await create_hook(api, stream, url=receiver.url())
    await api.publish(stream, {"data": "x"})
    await receiver.until(lambda: len(receiver.hits) >= 1)

    async def failure_recorded() -> bool:
        state = await show_hook(api, stream, hook["id"])
        return bool(state["attempts"] >= 1)

    await wait_until(failure_recorded)
    state = await show_hook(api, stream, hook["id"])
    assert state["last_status"] == 500 and state["last_error"] == "HTTP 500: down"
    assert state["pending"] == 1 and state["next_attempt_at"] is not None
    assert state["delivery_id"] == receiver.hits[0].delivery

    await receiver.until(lambda: len(receiver.hits) >= 3)
    first, second, third = receiver.hits
    assert [h.status for h in receiver.hits] == [500, 500, 200]
    assert first.delivery == second.delivery == third.delivery
    assert first.body == second.body == third.body
    assert all(signed(h, hook["secret"]) for h in receiver.hits)
    assert 0.6 <= second.at - first.at <= 2.0, second.at - first.at  # ~1 s, jittered
    assert 1.3 <= third.at - second.at <= 3.5, third.at - second.at  # ~2 s, jittered

    async def delivered() -> bool:
        return bool((await show_hook(api, stream, hook["id"]))["delivered"] == 1)

    await wait_until(delivered)
    state = await show_hook(api, stream, hook["id"])
    assert state["attempts"] == 0 and state["last_status"] == 200 and state["last_error"] is None


# -- deletes ---------------------------------------------------------------------------------


async def test_deleting_a_webhook_stops_its_deliveries(api: Api, receiver: Receiver) -> None:
    stream = (await api.create_stream())["id"]
    gone = await create_hook(api, stream, url=receiver.url("/gone"))
    await create_hook(api, stream, url=receiver.url("/stays"))
    await api.publish(stream, {"data": 1})
    await receiver.until(lambda: len(receiver.delivered("/gone")) == 1)
    r = await api.client.delete(hooks_url(stream, gone["id"]), headers=api.admin)
    assert r.status_code == 204
    await api.publish(stream, {"data": 2})
    await api.publish(stream, {"data": 3})
    await receiver.until(lambda: len(receiver.delivered("/stays")) == 3)
    assert [m["data"] for m in receiver.delivered("/gone")] == [1]


async def test_deleting_the_stream_deletes_its_webhooks(
    api: Api, receiver: Receiver, hooks_server: Server
) -> None:
    receiver.status = 500  # failing: the webhook would retry about 1 s later
    stream = (await api.create_stream())["id"]
    hook = await create_hook(api, stream, url=receiver.url())
    await api.publish(stream, {"data": 1})
    await receiver.until(lambda: len(receiver.hits) == 1)
    r = await api.client.delete(f"/api/streams/{stream}", headers=api.admin)
    assert r.status_code == 204
    assert_error(await api.client.get(hooks_url(stream), headers=api.admin), 404, "not_found")

    def rows() -> tuple[int, int]:
        db = sqlite3.connect(f"file:{hooks_server.data_dir / 'bloomr.db'}?mode=ro", uri=True)
        try:
            hooks = db.execute("SELECT count(*) FROM webhooks WHERE stream_id = ?", (stream,))
            outbox = db.execute(
                "SELECT count(*) FROM webhook_outbox WHERE webhook_id = ?", (hook["id"],)
            )
            return int(hooks.fetchone()[0]), int(outbox.fetchone()[0])
        finally:
            db.close()

    async def gone() -> bool:
        return rows() == (0, 0)

    await wait_until(gone)
    await asyncio.sleep(1.5)  # past the retry that was due (at most 1.2 s after the failure)
    assert len(receiver.hits) == 1


# -- store faults ----------------------------------------------------------------------------

OUTAGE_SECONDS = 4.0
OUTAGE = (
    "CREATE TRIGGER outage BEFORE INSERT ON webhook_outbox"
    " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
)


async def test_an_outbox_that_cannot_be_written_refuses_the_publish(
    receiver: Receiver,
) -> None:
    """SPEC §5 "Cluster faults", issue 12: the outbox is written in the publish's own
    transaction, so a publish is acknowledged only with its webhook deliveries stored.
    The fault is the database's own: a trigger added from another connection makes it
    refuse every outbox insert. Publishes to the webhook's stream are refused meanwhile
    (all or none: nothing of them is stored or delivered), another stream's are not, and
    every acknowledged message reaches the webhook, in order."""
    with running_server(env=ALLOW) as srv:
        async with open_client(srv) as client:
            api = Api(srv, client)
            stream = (await api.create_stream())["id"]
            quiet = (await api.create_stream())["id"]  # no webhook
            await create_hook(api, stream, url=receiver.url())
            await api.publish(stream, {"data": 0})
            await receiver.until(lambda: len(receiver.delivered()) == 1)
            db = sqlite3.connect(srv.data_dir / "bloomr.db", timeout=10)
            try:
                db.execute(OUTAGE)
                db.commit()
                for i in range(100, 103):
                    r = await client.post(
                        f"/api/streams/{stream}/messages", json={"data": i}, headers=api.admin
                    )
                    assert r.status_code >= 500, r.text
                await api.publish(quiet, [{"data": n} for n in range(3)])
            finally:
                db.execute("DROP TRIGGER IF EXISTS outage")
                db.commit()
                db.close()
            for i in range(1, 31, 3):
                await api.publish(stream, [{"data": n} for n in range(i, i + 3)])
            await receiver.until(lambda: len(receiver.delivered()) >= 31)
            await asyncio.sleep(0.3)  # a refused publish that was delivered would be here
            assert [m["data"] for m in receiver.delivered()] == list(range(31))


async def test_a_node_killed_right_after_its_201_loses_no_delivery(
    receiver: Receiver, tmp_path: Path
) -> None:
    """Issue 12: SIGKILL right after the last publish was answered 201, then a restart on
    the same data directory: every acknowledged message reaches the webhook, in order
    (at least once: a batch in flight may come twice, never out of order)."""
    with running_server(env=ALLOW, data_dir=tmp_path) as srv:
        async with open_client(srv) as client:
            api = Api(srv, client)
            stream = (await api.create_stream())["id"]
            await create_hook(api, stream, url=receiver.url())
            await create_hook(api, stream, url=receiver.url("/progress"), channel="progress")

            async def publisher(k: int) -> list[str]:
                ids: list[str] = []
                for i in range(25):
                    batch = [{"data": [k, i, j]} for j in range(4)]
                    batch.append({"channel": "progress", "data": [k, i, 4]})
                    ids += await api.publish(stream, batch)
                return ids

            acknowledged = [
                i for ids in await asyncio.gather(*map(publisher, range(4))) for i in ids
            ]
            srv.process.send_signal(signal.SIGKILL)  # right after the last 201
            srv.process.wait(10)
    expected = sorted(acknowledged)  # ids grow with seqs: the stream's order
    assert len(expected) == 500
    with running_server(env=ALLOW, data_dir=tmp_path):

        def first_seen(path: str) -> list[str]:
            return list(dict.fromkeys(m["id"] for m in receiver.delivered(path)))

        await receiver.until(lambda: len(receiver.first_seen("/hook")) >= 400, timeout=30)
        await receiver.until(lambda: len(receiver.first_seen("/progress")) >= 100, timeout=30)
    progress = {m["id"] for m in receiver.delivered("/progress")}
    assert receiver.first_seen("/hook") == [i for i in expected if i not in progress]
    assert receiver.first_seen("/progress") == [i for i in expected if i in progress]


# -- the private-address guard ---------------------------------------------------------------


async def test_private_urls_are_refused_without_the_flag() -> None:
    with running_server(env={"BLOOMR_WEBHOOK_ALLOW_PRIVATE": ""}) as srv:
        async with open_client(srv) as client:
            api = Api(srv, client)
            stream = (await api.create_stream())["id"]
            for url in [
                "http://127.0.0.1:8080/hook",
                "http://localhost/hook",
                "http://[::1]/hook",
                "http://10.1.2.3/hook",
                "http://172.16.0.1/",
                "http://192.168.0.10/",
                "http://169.254.169.254/latest/meta-data/",
                "http://0.0.0.0/",
                "http://[fe80::1]/",
                "http://[fd00::1]/",
                "http://[::ffff:127.0.0.1]/",
            ]:
                r = await client.post(hooks_url(stream), json={"url": url}, headers=api.admin)
                error = assert_error(r, 422, "validation_failed", field="url")
                assert "private" in error["message"], error
            r = await client.get(hooks_url(stream), headers=api.admin)
            assert r.json() == {"webhooks": []}


# -- restarts --------------------------------------------------------------------------------


async def test_delivery_state_survives_a_restart(receiver: Receiver, tmp_path: Path) -> None:
    """Receiver down, publish, stop bloomr; start it again with the receiver up: every
    message is acknowledged once, in order; the batch that was in flight is sent again
    under its delivery id."""
    receiver.status = 503
    with running_server(env=ALLOW, data_dir=tmp_path) as srv:
        async with open_client(srv) as client:
            api = Api(srv, client)
            stream = (await api.create_stream())["id"]
            hook = await create_hook(api, stream, url=receiver.url())
            ids = await api.publish(stream, {"data": 0})
            await receiver.until(lambda: len(receiver.hits) >= 1)
            for i in range(1, 6):
                ids += await api.publish(stream, {"data": i})
            ids += await api.publish(stream, [{"data": i} for i in range(6, 10)])

            async def all_pending() -> bool:
                return bool((await show_hook(api, stream, hook["id"]))["pending"] == 10)

            await wait_until(all_pending)
    interrupted = receiver.hits[-1]
    failed = len(receiver.hits)
    receiver.status = 200
    # the flag instead of the environment variable, this time
    with running_server(
        "--webhook-allow-private", env={"BLOOMR_WEBHOOK_ALLOW_PRIVATE": ""}, data_dir=tmp_path
    ) as srv:
        await receiver.until(lambda: len(receiver.delivered()) >= 10)
        async with open_client(srv) as client:
            api = Api(srv, client)

            async def settled() -> bool:
                state = await show_hook(api, stream, hook["id"])
                return bool(state["delivered"] == 10 and state["pending"] == 0)

            await wait_until(settled)
    assert [m["id"] for m in receiver.delivered()] == ids
    assert all(h.ok for h in receiver.hits[failed:])
    resent = receiver.hits[failed]
    assert resent.delivery == interrupted.delivery and resent.body == interrupted.body
    assert [m["data"] for m in resent.messages] == [0]
    assert signed(resent, hook["secret"])


# -- the command line ------------------------------------------------------------------------


async def test_cli_create_list_delete(hooks_server: Server, receiver: Receiver) -> None:
    stream = (await hooks_server.create_stream())["id"]
    env = {"BLOOMR_URL": hooks_server.url, "BLOOMR_ADMIN_KEY": ADMIN_KEY, "PATH": ""}

    def bloomr(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bloomr", "webhooks", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)

    made = bloomr("create", stream, receiver.url(), "--channel", "progress")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("whsec_") and "created webhook wh_" in made.stderr
    listed = bloomr("list", stream, "--json")
    [hook] = json.loads(listed.stdout)["webhooks"]
    assert hook["channel"] == "progress" and "secret" not in hook
    table = bloomr("list", stream).stdout
    assert hook["id"] in table and receiver.url() in table
    deleted = bloomr("delete", stream, hook["id"])
    assert deleted.returncode == 0 and f"deleted webhook {hook['id']}" in deleted.stdout
    missing = bloomr("delete", stream, hook["id"])
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: not_found") and "Traceback" not in missing.stderr
    refused = bloomr("create", stream, "ftp://example.com/")
    assert refused.returncode == 1 and "validation_failed" in refused.stderr
