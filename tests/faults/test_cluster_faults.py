"""Two real cluster nodes on a private Redis and a private PostgreSQL that are flushed,
restarted, frozen and stopped for real (SPEC §3 "Availability and limits", §5 "Cluster
faults"): a lost history is noticed (`history_reset`, then every new message), a backend
that is down or frozen is answered 503 `unavailable` with Retry-After, a connecting
socket gets `error` `unavailable` within 5 s, /healthz names the failing part, tokens
already seen keep working through a PostgreSQL outage, everything recovers by itself,
and no acknowledged message is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from faultkit import PrivatePostgres, PrivateRedis, private_postgres, private_redis

from server import Server, running_server
from sioclient import Recorder, connect_and_wait, poll_messages, refused

pytestmark = pytest.mark.timeout(60)

ENV = {"BLOOMR_LEASE_TTL": "2", "BLOOMR_SCRIPT_GRACE": "0.5"}
ANSWER_WITHIN = 5.0  # seconds: SPEC, for a connecting socket


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        yield pg


@pytest.fixture
def redis() -> Iterator[PrivateRedis]:
    with private_redis() as redis:
        yield redis


Cluster = tuple[Server, Server]


@contextlib.contextmanager
def two_nodes(redis: PrivateRedis, pg: PrivatePostgres, name: str) -> Iterator[Cluster]:
    args = ["--redis", redis.url, "--database", pg.dsn, "--cluster-name", name]
    with running_server(*args, env=ENV) as a, running_server(*args, env=ENV) as b:
        yield a, b


_names = iter(range(1_000_000))


@pytest.fixture
def nodes(redis: PrivateRedis, pg: PrivatePostgres) -> Iterator[Cluster]:
    with two_nodes(redis, pg, f"faults{next(_names)}") as pair:
        yield pair


# -- helpers ----------------------------------------------------------------------------------


async def publish(
    srv: Server, http: httpx.AsyncClient, stream_id: str, n: int, secret: str = ""
) -> httpx.Response:
    """Five messages, `{"n": n}` to `{"n": n + 4}`, with the admin key or `secret`."""
    headers = {"Authorization": f"Bearer {secret}"} if secret else srv.admin
    items = [{"data": {"n": n + i}} for i in range(5)]
    return await http.post(f"/api/streams/{stream_id}/messages", json=items, headers=headers)


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable", r.text
    assert int(r.headers["retry-after"]) >= 1


async def publish_until_taken(
    srv: Server, http: httpx.AsyncClient, stream_id: str, n: int, timeout: float = 15
) -> list[str]:
    """Publish one batch, retrying 503s (each one a proper `unavailable`) until it is
    taken: a node recovers by itself."""
    deadline = time.monotonic() + timeout
    while True:
        r = await publish(srv, http, stream_id, n)
        if r.status_code == 201:
            return list(r.json()["ids"])
        assert_unavailable(r)
        assert time.monotonic() < deadline, "the node never recovered"
        await asyncio.sleep(0.2)


async def publish_range(
    srv: Server, http: httpx.AsyncClient, stream_id: str, start: int, stop: int
) -> list[str]:
    """Batches `start`, `start + 5`, ... before `stop`, each until it is taken."""
    acked: list[str] = []
    for n in range(start, stop, 5):
        acked += await publish_until_taken(srv, http, stream_id, n)
    return acked


async def healthz(srv: Server) -> tuple[int, dict[str, Any]]:
    async with srv.client() as http:
        r = await http.get("/healthz")
    return r.status_code, dict(r.json())


async def until_healthy(srv: Server, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while (answer := await healthz(srv))[0] != 200:
        assert time.monotonic() < deadline, f"never healthy again: {answer}"
        await asyncio.sleep(0.2)


def ids(client: Recorder) -> list[str]:
    return [m["id"] for m in client.messages]


def reset_warnings_at(client: Recorder) -> list[int]:
    """How many messages came before each `history_reset` warning."""
    at, seen = [], 0
    for event in client.events:
        if event.name == "message":
            seen += 1
        elif event.name == "warning" and event.data["code"] == "history_reset":
            at.append(seen)
    return at


async def stored_ids(srv: Server, stream_id: str, token: str) -> list[str]:
    """What HTTP polling gets of the stream's history."""
    page = await poll_messages(srv, stream_id, token, limit=10000)
    return [m["id"] for m in page["messages"]]


def acked_are_stored(stored: list[str], acked: list[str]) -> bool:
    """Every acknowledged id is stored, in order (a publish answered 503 may be too)."""
    kept = set(acked)
    return [i for i in stored if i in kept] == acked


async def refused_in_time(url: str) -> dict[str, Any]:
    """A socket connecting now gets `error` then a disconnect, within ANSWER_WITHIN."""
    started = time.monotonic()
    error = await refused(url)
    assert time.monotonic() - started < ANSWER_WITHIN + 0.5, "answered too late"
    return error


@contextlib.asynccontextmanager
async def watched(nodes: Cluster) -> AsyncIterator[tuple[str, str, list[Recorder]]]:
    """A new stream, a token for it and a live subscriber with envelopes on each node
    (closed afterwards)."""
    stream_id, token = await nodes[0].stream_and_token()
    clients: list[Recorder] = []
    try:
        for srv in nodes:
            url = srv.socket_url(stream=stream_id, token=token, includeMetadata=1)
            clients.append(await connect_and_wait(url))
        yield stream_id, token, clients
    finally:
        for client in clients:
            await client.close()


class SseReader:
    """A live server-sent events client: message ids, and where `history_reset` came."""

    def __init__(self, srv: Server, stream_id: str, token: str) -> None:
        self.srv, self.stream_id, self.token = srv, stream_id, token
        self.ids: list[str] = []
        self.reset_at: list[int] = []
        self._changed = asyncio.Event()
        self._live = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._live.wait(), 10)

    async def _read(self) -> None:
        path = f"/api/streams/{self.stream_id}/events"
        async with (
            self.srv.client() as http,
            http.stream("GET", path, params={"token": self.token}) as response,
        ):
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    self._on(event, json.loads(line[len("data: ") :]))

    def _on(self, event: str, data: Any) -> None:
        if event == "replay_end":
            self._live.set()
        elif event == "message":
            self.ids.append(data["id"])
        elif event == "warning" and data["code"] == "history_reset":
            self.reset_at.append(len(self.ids))
        self._changed.set()

    async def until(self, predicate: Any, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- Redis loses its history ------------------------------------------------------------------


async def test_a_flushed_redis_is_noticed_and_every_new_message_arrives(
    nodes: Cluster, redis: PrivateRedis
) -> None:
    a, b = nodes
    async with watched(nodes) as (stream_id, token, clients):
        sse = SseReader(b, stream_id, token)
        await sse.start()
        try:
            async with a.client() as http_a, b.client() as http_b:
                old: list[str] = []
                for n in range(0, 30, 5):
                    old += (await publish(a, http_a, stream_id, n)).json()["ids"]
                for client in clients:
                    await client.wait_messages(30)

                redis.flush()  # the history is gone; seqs start over at 1
                new: list[str] = []
                for n in range(0, 100, 5):  # from both nodes
                    srv, http = (a, http_a) if n % 10 else (b, http_b)
                    new += await publish_until_taken(srv, http, stream_id, n)
                for client in clients:
                    await client.wait_messages(130)
                    assert ids(client) == old + new, client.summary()  # none stalled, none lost
                    assert reset_warnings_at(client) == [30]  # warned once, where it happened
                    assert client.errors == [] and not client.disconnected
                await sse.until(lambda: len(sse.ids) >= 130)
                assert sse.ids == old + new  # SSE too: warned at the reset, nothing lost
                assert sse.reset_at == [30]

                # old ids are not held any more
                r = await http_b.get(
                    f"/api/streams/{stream_id}/messages",
                    params={"after": old[-1]},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_message_id"
                late = await connect_and_wait(
                    b.socket_url(stream=stream_id, token=token, replay=old[3])
                )
                try:
                    assert [w["code"] for w in late.warnings] == ["unknown_message_id"]
                    assert len(late.messages) == 100  # the newest held, i.e. the new history
                finally:
                    await late.close()
        finally:
            await sse.stop()


async def test_a_redis_back_from_an_older_snapshot_is_noticed_and_every_new_message_arrives(
    nodes: Cluster, redis: PrivateRedis
) -> None:
    """The same epochs, their seqs gone back: nodes must not take the new messages for
    ones they delivered already (they did until the seqs passed where they were)."""
    a, b = nodes
    async with watched(nodes) as (stream_id, token, clients):
        async with a.client() as http:
            acked = await publish_range(a, http, stream_id, 0, 20)
            redis.save()  # the snapshot Redis comes back from
            acked += await publish_range(a, http, stream_id, 20, 40)  # lost with the restart
            for client in clients:
                await client.wait_messages(40)

            redis.stop()
            redis.start()  # loads the snapshot: 20 messages, the same epoch
            acked += await publish_range(a, http, stream_id, 40, 100)
            for client in clients:
                await client.wait_messages(len(acked), timeout=15)
                assert ids(client) == acked, client.summary()  # none skipped, none twice
                assert reset_warnings_at(client) == [40]
                assert client.errors == [] and not client.disconnected
            stored = await stored_ids(b, stream_id, token)
            assert stored == acked[:20] + acked[40:]  # what the snapshot held, then the new


async def test_redis_restarted_empty_fails_fast_then_recovers_with_a_reset(
    nodes: Cluster, redis: PrivateRedis
) -> None:
    a, b = nodes
    async with watched(nodes) as (stream_id, token, clients):
        async with a.client() as http:
            acked = await publish_range(a, http, stream_id, 0, 20)
            for client in clients:
                await client.wait_messages(20)

            redis.stop()
            started = time.monotonic()
            assert_unavailable(await publish(a, http, stream_id, -1))
            assert time.monotonic() - started < 2  # down, not slow: fails fast
            status, doc = await healthz(b)
            assert status == 503 and doc["redis"] != "ok" and doc["postgresql"] == "ok", doc
            error = await refused_in_time(
                b.socket_url(stream=stream_id, token=token, replayLimit=5)
            )
            assert error["code"] == "unavailable"

            redis.start()  # without its data
            acked += await publish_range(a, http, stream_id, 20, 120)
            await until_healthy(a)
            await until_healthy(b)
            for client in clients:
                await client.wait_messages(len(acked), timeout=15)
                assert ids(client) == acked, client.summary()
                assert reset_warnings_at(client) == [20]


async def test_a_frozen_redis_is_answered_in_time_and_loses_nothing(
    nodes: Cluster, redis: PrivateRedis
) -> None:
    a, b = nodes
    async with watched(nodes) as (stream_id, token, clients):
        async with a.client() as http:
            acked = await publish_range(a, http, stream_id, 0, 20)

            redis.freeze()
            try:
                started = time.monotonic()

                async def in_flight(n: int) -> httpx.Response:
                    await asyncio.sleep((n - 1000) / 1000)  # one behind the other
                    return await publish(a, http, stream_id, n)

                answers = await asyncio.gather(*(in_flight(n) for n in range(1000, 1500, 100)))
                assert time.monotonic() - started < ANSWER_WITHIN  # every one answered
                for r in answers:  # outcome unknown: one may land after the thaw
                    assert_unavailable(r)
                started = time.monotonic()
                status, doc = await healthz(b)
                assert time.monotonic() - started < ANSWER_WITHIN
                assert status == 503 and doc["redis"] != "ok", doc
                url = b.socket_url(stream=stream_id, token=token, replayLimit=5)
                assert (await refused_in_time(url))["code"] == "unavailable"
            finally:
                redis.thaw()

            acked += await publish_range(a, http, stream_id, 20, 60)
            await until_healthy(b)
            for client in clients:
                await client.wait_until(lambda c=client: acked[-1] in ids(c), timeout=15)
                got = ids(client)
                assert [i for i in got if i in set(acked)] == acked  # all, in order
                assert len(got) == len(set(got))  # none twice
                assert reset_warnings_at(client) == []
            assert acked_are_stored(await stored_ids(b, stream_id, token), acked)


# -- PostgreSQL stops ---------------------------------------------------------------------------


async def test_postgresql_stopped_503_seen_tokens_still_work_then_recovery(
    nodes: Cluster, pg: PrivatePostgres
) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    unseen = (await a.create_token([stream_id], ["subscribe", "publish"]))["token"]
    url = a.socket_url(stream=stream_id, token=token, includeMetadata=1)
    watcher = await connect_and_wait(url)
    async with a.client() as http:
        r = await publish(a, http, stream_id, 0, secret=token)  # a has seen the token
        assert r.status_code == 201, r.text
        acked = list(r.json()["ids"])
        pg.stop()
        try:
            await asyncio.sleep(1.2)  # past the token cache's 1 s freshness
            for n in range(5, 30, 5):  # honoured from the cache through the outage
                r = await publish(a, http, stream_id, n, secret=token)
                assert r.status_code == 201, r.text
                acked += r.json()["ids"]
            assert_unavailable(await http.get("/api/streams", headers=a.admin))
            assert_unavailable(await publish(a, http, stream_id, -1, secret=unseen))
            r = await http.post("/api/tokens", json={"streams": [stream_id]}, headers=a.admin)
            assert_unavailable(r)
            status, doc = await healthz(a)
            assert status == 503 and doc["postgresql"] != "ok" and doc["redis"] == "ok", doc
            error = await refused_in_time(a.socket_url(stream=stream_id, token=unseen))
            assert error["code"] == "unavailable"
        finally:
            pg.start()
        await until_healthy(a)
        await until_healthy(b)
        r = await http.get("/api/streams", headers=a.admin)
        assert r.status_code == 200, r.text
        acked += await publish_until_taken(a, http, stream_id, 30)
        r = await publish(a, http, stream_id, 35, secret=unseen)  # read from the store now
        assert r.status_code == 201, r.text
        acked += r.json()["ids"]
        await watcher.wait_until(lambda: len(watcher.messages) >= len(acked), timeout=10)
        assert ids(watcher) == acked
        assert await stored_ids(b, stream_id, token) == acked  # and polls get them all
        assert watcher.errors == [] and not watcher.disconnected
        await watcher.close()
