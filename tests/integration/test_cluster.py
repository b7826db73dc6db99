"""Cluster mode end to end: two real `bloomr serve --redis --database` nodes sharing
one Redis and one PostgreSQL under a cluster name of their own (keys and schema
removed afterwards), real Socket.IO, HTTP and SSE clients, real scripts."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest

from backends import PG_DSN, REDIS_URL, PgSchema, delete_redis_prefix, drop_schema
from server import Server, running_server
from sioclient import (
    NodeProcess,
    Publisher,
    check_handover,
    connect_and_wait,
    connected,
    ensure_node_modules,
    node_available,
    numbers,
    poll_messages,
)

TTL = 2.0  # seconds: short leases, so that a failover takes a few seconds
ENV = {
    "BLOOMR_LEASE_TTL": str(TTL),
    "BLOOMR_SCRIPT_GRACE": "1",
    "BLOOMR_WEBHOOK_ALLOW_PRIVATE": "1",
}

pytestmark = pytest.mark.timeout(90)


def cluster_args(name: str) -> list[str]:
    return ["--redis", REDIS_URL, "--database", PG_DSN, "--cluster-name", name]


async def forget_cluster(name: str) -> None:
    """Delete the cluster's Redis keys and drop its PostgreSQL schema."""
    await delete_redis_prefix(name)
    await drop_schema(PgSchema(PG_DSN, name))


@contextlib.contextmanager
def two_nodes(name: str) -> Iterator[tuple[Server, Server]]:
    try:
        with (
            running_server(*cluster_args(name), env=ENV) as a,
            running_server(*cluster_args(name), env=ENV) as b,
        ):
            yield a, b
    finally:  # on a thread of its own: usable from async tests too
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, forget_cluster(name)).result()


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[Server, Server]]:
    with two_nodes("t_cluster_" + uuid.uuid4().hex[:12]) as pair:
        yield pair


async def wait_for(check: Any, timeout: float, what: str) -> Any:
    """Poll an async check until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover


# -- fan-out and replay ------------------------------------------------------------------


async def test_publish_on_a_reaches_clients_on_both_nodes_once_in_order(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    on_a = await connect_and_wait(a.socket_url(stream=stream_id, token=token))
    on_b = await connect_and_wait(b.socket_url(stream=stream_id, token=token))
    try:
        for start in range(0, 200, 20):
            await a.publish(stream_id, [{"data": {"n": n}} for n in range(start, start + 20)])
        await on_a.wait_messages(200)
        await on_b.wait_messages(200)
        await asyncio.sleep(0.2)  # nothing more may come
        assert numbers(on_a.messages) == list(range(200))
        assert numbers(on_b.messages) == list(range(200))
        assert on_b.errors == [] and not on_b.disconnected
    finally:
        await on_a.close()
        await on_b.close()


async def test_replay_on_b_of_a_messages_by_count_and_by_id(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    ids = await a.publish(stream_id, [{"data": {"n": n}} for n in range(30)])
    by_count = await connect_and_wait(b.socket_url(stream=stream_id, token=token, replayLimit=10))
    by_id = await connect_and_wait(b.socket_url(stream=stream_id, token=token, replay=ids[24]))
    try:
        assert numbers(by_count.messages) == list(range(20, 30))
        assert numbers(by_id.messages) == list(range(25, 30))
        await a.publish(stream_id, {"data": {"n": 30}})
        await by_count.wait_messages(11)
        await by_id.wait_messages(6)
        assert numbers(by_count.messages) == list(range(20, 31))
        assert numbers(by_id.messages) == list(range(25, 31))
    finally:
        await by_count.close()
        await by_id.close()


async def test_hand_over_on_b_while_a_publishes(nodes: tuple[Server, Server]) -> None:
    """Clients connect to B with a replay while A publishes without pause: each gets a
    contiguous run, replayed then live, no gap, no duplicate."""
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    publisher = Publisher(a, stream_id)
    task = asyncio.create_task(publisher.run())
    clients = []
    try:
        await publisher.reach(50)
        for replay in (20, 100, 5000):
            url = b.socket_url(
                stream=stream_id, token=token, replayLimit=replay, includeMetadata="true"
            )
            clients.append(await connect_and_wait(url))
            await publisher.reach(len(publisher.ids) + 30)
        publisher.stopping.set()
        await task
        last = await publisher.finish()
        for client in clients:
            await client.wait_until(
                lambda c=client: any(m["data"].get("last") for m in c.messages), timeout=20
            )
            replayed = check_handover("cluster", client.messages, publisher.ids, last)
            assert replayed > 0
    finally:
        publisher.stopping.set()
        with contextlib.suppress(Exception):
            await task
        for client in clients:
            await client.close()


async def test_http_polling_and_sse_on_b_see_a_messages(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    ids = await a.publish(stream_id, [{"data": n} for n in range(5)])
    page = await poll_messages(b, stream_id, token)
    assert [m["id"] for m in page["messages"]] == ids

    async with b.client() as http:
        waiter = asyncio.create_task(
            http.get(
                f"/api/streams/{stream_id}/messages",
                params={"after": ids[-1], "wait": 10},
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        await asyncio.sleep(0.3)  # the long poll is waiting on B
        (live,) = await a.publish(stream_id, {"data": "live"})
        r = await waiter
        assert [m["id"] for m in r.json()["messages"]] == [live]

        events: list[dict[str, Any]] = []
        url = f"/api/streams/{stream_id}/events"
        params = {"token": token, "replayLimit": 3}
        async with http.stream("GET", url, params=params) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            published = False
            async with asyncio.timeout(10):
                async for line in lines:
                    if line.startswith("event: replay_end") and not published:
                        published = True
                        await a.publish(stream_id, {"data": "sse"})
                    if line.startswith("data: ") and '"replayed"' in line:
                        events.append(json.loads(line[6:]))
                        if events[-1]["data"] == "sse":
                            break
    assert [e["data"] for e in events] == [3, 4, "live", "sse"]


# -- tokens and streams --------------------------------------------------------------------


async def test_token_from_a_works_on_b_and_its_revocation_ends_b_sessions(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    stream = await a.create_stream()
    token = await a.create_token([stream["id"]])
    client = await connect_and_wait(b.socket_url(stream=stream["id"], token=token["token"]))
    try:
        assert client.errors == [] and not client.disconnected
        async with a.client() as http:
            r = await http.delete(f"/api/tokens/{token['id']}", headers=a.admin)
            assert r.status_code == 204
        await client.wait_disconnect(timeout=1.0)
        assert client.errors[0]["code"] == "token_revoked"
    finally:
        await client.close()


async def test_deleting_a_stream_on_a_ends_sessions_on_b(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    client = await connect_and_wait(b.socket_url(stream=stream_id, token=token))
    try:
        async with a.client() as http:
            r = await http.delete(f"/api/streams/{stream_id}", headers=a.admin)
            assert r.status_code == 204
        await client.wait_disconnect(timeout=1.0)
        assert client.errors[0]["code"] == "stream_deleted"
    finally:
        await client.close()
    async with b.client() as http:
        r = await http.get(f"/api/streams/{stream_id}", headers=b.admin)
        assert r.status_code == 404


async def test_stream_updates_on_a_reach_b_cache(nodes: tuple[Server, Server]) -> None:
    """B serves a stream from its cache; turning history off on A changes B's answers."""
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    await b.publish(stream_id, {"data": "cached on b"}, token)
    async with a.client() as http:
        r = await http.patch(
            f"/api/streams/{stream_id}", json={"store_history": False}, headers=a.admin
        )
        assert r.status_code == 200

    async def history_off_on_b() -> bool:
        client = await connect_and_wait(b.socket_url(stream=stream_id, token=token, replay="1h"))
        await client.close()
        return any(w["code"] == "history_disabled" for w in client.warnings)

    await wait_for(history_off_on_b, 3, "B never learned of the update")


async def test_healthz_reports_both_backends(nodes: tuple[Server, Server]) -> None:
    for srv in nodes:
        async with srv.client() as http:
            r = await http.get("/healthz")
        assert r.status_code == 200
        doc = r.json()
        assert (doc["status"], doc["postgresql"], doc["redis"]) == ("ok", "ok", "ok")


# -- Node's socket.io-client ------------------------------------------------------------------


async def test_node_client_on_b_receives_what_a_publishes(nodes: tuple[Server, Server]) -> None:
    if not node_available():
        pytest.skip("node/npm not installed")
    ensure_node_modules()
    a, b = nodes
    stream_id, token = await a.stream_and_token()
    await a.publish(stream_id, [{"data": {"n": n}} for n in range(3)])
    client = await NodeProcess.client(
        url=b.url + "/", query={"stream": stream_id, "token": token, "replayLimit": 3}, count=6
    )
    try:
        await client.wait_line(lambda line: line.get("event") == "replay_end")
        await a.publish(stream_id, [{"data": {"n": n}} for n in range(3, 6)])
        assert await client.finish() == 0
    finally:
        await client.kill()
    assert [m["data"] for m in client.events("message")] == [{"n": n} for n in range(6)]


# -- scripts ----------------------------------------------------------------------------------

# marked with this run's own id: other test runs on the machine have tickers too
TICKER = f"""# a ticker of test run {uuid.uuid4().hex}
import itertools, os, time
for i in itertools.count():
    print(os.getpid(), i, flush=True)
    time.sleep(0.1)
"""


def command() -> list[str]:
    import sys

    return [sys.executable, "-c", TICKER]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed and waiting to be reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def ticker_pids() -> set[int]:
    """The processes running TICKER on this machine, as the OS lists them."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if len(argv) > 2 and argv[1] == b"-c" and argv[2] == TICKER.encode():
                pids.add(int(entry))
    return pids


async def script_of(srv: Server, stream_id: str) -> dict[str, Any]:
    async with srv.client() as http:
        r = await http.get(f"/api/streams/{stream_id}", headers=srv.admin)
    assert r.status_code == 200, r.text
    script: dict[str, Any] = r.json()["script"]
    return script


async def control(srv: Server, stream_id: str, action: str) -> dict[str, Any]:
    async with srv.client() as http:
        r = await http.post(f"/api/streams/{stream_id}/{action}", headers=srv.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


@contextlib.asynccontextmanager
async def ticker_stream(srv: Server) -> AsyncIterator[tuple[str, str]]:
    stream_id, token = await srv.stream_and_token(command=command())
    try:
        yield stream_id, token
    finally:
        async with srv.client() as http:
            await http.delete(f"/api/streams/{stream_id}", headers=srv.admin)


async def test_a_script_runs_on_one_node_and_stops_through_the_other(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    async with ticker_stream(a) as (stream_id, token):
        on_a = await connect_and_wait(a.socket_url(stream=stream_id, token=token))
        on_b = await connect_and_wait(b.socket_url(stream=stream_id, token=token))
        try:
            started = (await control(a, stream_id, "start"))["script"]
            assert started["state"] == "running", started
            pid = started["pid"]
            await on_a.wait_messages(10)
            await on_b.wait_messages(10)
            await asyncio.sleep(TTL)  # a few reconcile rounds on both nodes
            assert ticker_pids() == {pid}
            seen_on_b = await script_of(b, stream_id)
            assert (seen_on_b["state"], seen_on_b["pid"]) == ("running", pid)
            assert seen_on_b["node"] == started["node"]
            assert on_a.messages[:10] == on_b.messages[:10]
            assert all(m.startswith(f"{pid} ") for m in on_b.messages)

            stopped = await control(b, stream_id, "stop")
            assert stopped["enabled"] is False
            assert stopped["script"]["state"] == "stopped", stopped
            await wait_for(lambda: _async(not alive(pid)), 5, "the script still runs")
            assert ticker_pids() == set()
            assert (await script_of(a, stream_id))["state"] == "stopped"

            # started through B now: still exactly one process, restart reaches its node
            again = (await control(b, stream_id, "start"))["script"]
            assert again["state"] == "running"
            restarted = (await control(a, stream_id, "restart"))["script"]
            assert restarted["state"] == "running" and restarted["pid"] != again["pid"]
            await asyncio.sleep(TTL)
            assert ticker_pids() == {restarted["pid"]}
            await control(a, stream_id, "stop")
            await wait_for(lambda: _async(not ticker_pids()), 5, "the script still runs")
        finally:
            await on_a.close()
            await on_b.close()


async def _async(value: Any) -> Any:
    return value


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_failover_a_killed_node_script_runs_on_the_other_and_nothing_is_lost() -> None:
    with two_nodes("t_failover_" + uuid.uuid4().hex[:12]) as (a, b):
        stream_id, token = await a.stream_and_token(command=command())
        started = (await control(a, stream_id, "start"))["script"]
        owner, other = (a, b) if started["node"] == (await _health(a))["node"] else (b, a)
        old_pid = started["pid"]
        acked = await other.publish(stream_id, [{"data": n} for n in range(50)], token)
        acked += await owner.publish(stream_id, [{"data": n} for n in range(50, 100)], token)

        owner.process.send_signal(signal.SIGKILL)
        owner.process.wait(5)
        # its script died with it (issue 12: it used to run on, orphaned, and then twice)
        await wait_for(lambda: _async(not alive(old_pid)), 2, "the orphan still runs")

        async def running_elsewhere() -> Any:
            script = await script_of(other, stream_id)
            return script if script["state"] == "running" and script["pid"] != old_pid else None

        script = await wait_for(running_elsewhere, TTL + 5, "no takeover")
        assert script["node"] == (await _health(other))["node"]
        await asyncio.sleep(1)
        assert ticker_pids() == {script["pid"]}
        page = await poll_messages(other, stream_id, token, limit=10000)
        stored = [m["id"] for m in page["messages"]]
        assert [i for i in stored if i in set(acked)] == acked  # all there, in order
        await control(other, stream_id, "stop")
        await wait_for(lambda: _async(not ticker_pids()), 5, "the script still runs")


async def test_a_node_that_loses_a_script_lease_stops_the_script_at_once() -> None:
    """The lease keeper's rule on a real store: the lease of a running script is given
    to another owner in PostgreSQL (as after a pause longer than the ttl); the node
    stops the script at its next renewal, and nobody starts it while the other holds it."""
    name = "t_lost_" + uuid.uuid4().hex[:12]
    try:
        with running_server(*cluster_args(name), env=ENV) as srv:
            stream_id, _ = await srv.stream_and_token(command=command())
            pid = (await control(srv, stream_id, "start"))["script"]["pid"]
            assert alive(pid)
            conn = await asyncpg.connect(PG_DSN, server_settings={"search_path": name})
            try:
                taken = await conn.execute(
                    "UPDATE leases SET owner = 'ghost', expires_at = now() + interval '60 s'"
                    " WHERE key = $1",
                    f"script:{stream_id}",
                )
                assert taken == "UPDATE 1"
            finally:
                await conn.close()
            # next renewal (ttl/5) + the grace period (1 s) + slack
            await wait_for(lambda: _async(not alive(pid)), TTL / 5 + 1 + 2, "it still runs")
            await asyncio.sleep(TTL)  # several reconcile rounds: the ghost holds it
            assert ticker_pids() == set()
    finally:
        await forget_cluster(name)


async def _health(srv: Server) -> dict[str, Any]:
    async with srv.client() as http:
        r = await http.get("/healthz")
    return dict(r.json())


async def test_a_generated_admin_key_is_printed_once_and_works_on_every_node() -> None:
    name = "t_adminkey_" + uuid.uuid4().hex[:12]
    env = {**ENV, "BLOOMR_ADMIN_KEY": ""}
    try:
        with running_server(*cluster_args(name), env=env) as a:
            printed = [line for line in a.output if line.startswith("admin key")]
            assert len(printed) == 1, a.output
            key = printed[0].rsplit(" ", 1)[1].strip()
            with running_server(*cluster_args(name), env=env) as b:
                assert not any(line.startswith("admin key") for line in b.output), b.output
                for srv in (a, b):
                    srv.admin_key = key
                    async with srv.client() as http:
                        assert (
                            await http.get("/api/streams", headers=srv.admin)
                        ).status_code == 200
                        wrong = {"Authorization": "Bearer nope"}
                        assert (await http.get("/api/streams", headers=wrong)).status_code == 401
    finally:
        await forget_cluster(name)


async def test_a_webhook_made_on_a_gets_b_messages_once_in_order(
    nodes: tuple[Server, Server],
) -> None:
    from aiohttp import web

    a, b = nodes
    got: list[Any] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        got.extend(m["data"] for m in (await request.json())["messages"])
        arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        stream_id, token = await a.stream_and_token()
        async with a.client() as http:
            r = await http.post(
                f"/api/streams/{stream_id}/webhooks",
                json={"url": f"http://127.0.0.1:{port}/hook"},
                headers=a.admin,
            )
            assert r.status_code == 201, r.text
        for n in range(0, 30, 3):
            await b.publish(stream_id, [{"data": n + i} for i in range(3)], token)
        async with asyncio.timeout(10):
            while len(got) < 30:
                arrived.clear()
                await arrived.wait()
        await asyncio.sleep(0.5)  # nothing more may come
        assert got == list(range(30))
    finally:
        await runner.cleanup()


# -- occupancy (SPEC §7) -------------------------------------------------------------------


async def _occupancy(node: Server, stream_id: str) -> dict[str, Any]:
    async with node.client() as http:
        r = await http.get(f"/api/streams/{stream_id}/occupancy", headers=node.admin)
        assert r.status_code == 200, r.text
        return dict(r.json())


async def test_occupancy_counts_subscribers_on_every_node_and_forgets_a_dead_one() -> None:
    with two_nodes("t_occupancy_" + uuid.uuid4().hex[:12]) as (a, b):
        stream_id, token = await a.stream_and_token()
        both = {"total": 3, "channels": {"": 2, "errors": 1}}

        async def seen_everywhere(expected: dict[str, Any]) -> bool:
            return all([await _occupancy(n, stream_id) == expected for n in (a, b)])

        async with (
            connected(a.socket_url(stream=stream_id, token=token)),
            connected(b.socket_url(stream=stream_id, token=token), transport="polling"),
            connected(b.socket_url(stream=stream_id, token=token, channel="errors")),
        ):
            await wait_for(lambda: seen_everywhere(both), 5, "occupancy not summed")
        empty = {"total": 0, "channels": {}}
        await wait_for(lambda: seen_everywhere(empty), 5, "closed sessions still counted")

        # a node killed with its subscribers: they stop counting after the lease ttl
        async with connected(a.socket_url(stream=stream_id, token=token, channel="errors")):
            on_b = await connect_and_wait(b.socket_url(stream=stream_id, token=token))
            try:
                at_a = {"total": 2, "channels": {"": 1, "errors": 1}}
                await wait_for(lambda: seen_everywhere(at_a), 5, "not counted")
                b.process.send_signal(signal.SIGKILL)
                b.process.wait(5)
                only_a = {"total": 1, "channels": {"errors": 1}}

                async def forgotten() -> bool:
                    return await _occupancy(a, stream_id) == only_a

                await wait_for(forgotten, TTL + 3, "a dead node's subscribers still count")
            finally:
                await on_b.close()
