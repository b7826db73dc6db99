"""deploy/nginx.conf in front of two real cluster nodes: Debian's nginx runs the file
(its upstream servers and its port replaced by the test's), socket.io clients of both
kinds on websocket and on polling subscribe through it, the node they are on is killed
with SIGKILL, and they reconnect through nginx to the other node, resuming with
`replay=<last id>`: each has every message of the stream once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import socketio
from test_cluster import two_nodes

from server import ADMIN_KEY, Server
from sioclient import NodeProcess, ensure_node_modules, node_available

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def render(conf: str, upstreams: list[str], port: int, logs: Path) -> str:
    """deploy/nginx.conf with these upstream servers, port and log directory."""
    servers = re.findall(r"^ *server 127\.0\.0\.1:\d+ .*;$", conf, re.M)
    assert len(servers) == len(upstreams) == 2, servers
    for line, address in zip(servers, upstreams, strict=True):
        conf = conf.replace(line, re.sub(r"127\.0\.0\.1:\d+", address, line))
    conf, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{port};", conf)
    conf, logged = re.subn(r"/var/log/nginx/", f"{logs}/", conf)
    assert listens == 1 and logged == 1
    return conf


@contextlib.contextmanager
def nginx(upstreams: list[str], workdir: Path) -> Iterator[str]:
    """nginx in the foreground, as our child, on a free port; yields its URL."""
    binary = nginx_binary()
    if binary is None:
        pytest.fail("nginx is not installed: scripts/setup.sh installs it")
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(render(CONF.read_text(), upstreams, port, workdir))
    directives = f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log warn;"
    process = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf), "-g", directives],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        show_logs(workdir)


def show_logs(workdir: Path) -> None:
    """nginx's warnings and last requests, printed: pytest shows them if the test fails."""
    errors = (workdir / "error.log").read_text().splitlines()
    print("nginx error.log:", *[e for e in errors if "[notice]" not in e][-40:], sep="\n")
    access = (workdir / "bloomr.access.log").read_text().splitlines()
    print("nginx access log:", *access[-60:], sep="\n")


def wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    for _ in range(200):
        if process.poll() is not None:
            raise AssertionError(f"nginx exited: {process.stderr.read() if process.stderr else ''}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("nginx did not answer /healthz")


def node_id(srv: Server) -> str:
    match = re.search(r"bloomr node (\S+) of cluster", "".join(srv.output))
    assert match, srv.output
    return match.group(1)


# -- clients ------------------------------------------------------------------------------


class PyResumer:
    """python-socketio with its own reconnection, resuming as the README says: envelopes
    (includeMetadata) and, on every new connection, `replay=<id of the last message>`
    (the `auth` callable is asked again at each attempt)."""

    def __init__(self, url: str, stream: str, token: str, transport: str) -> None:
        self.url, self.transport = url, transport
        self.base = {"stream": stream, "token": token, "includeMetadata": "true"}
        self.envelopes: list[dict[str, Any]] = []
        self.connects = 0
        self.last_id: str | None = None
        self._http = aiohttp.ClientSession()
        self.sio = socketio.AsyncClient(
            http_session=self._http, reconnection_delay=0.2, reconnection_delay_max=1
        )
        self.log: list[str] = []  # connections and drops, for a failure's message
        self.sio.on("connect", self._connected)
        self.sio.on("disconnect", lambda reason=None: self.log.append(f"disconnect {reason}"))
        self.sio.on("connect_error", lambda data=None: self.log.append(f"connect_error {data}"))
        self.sio.on("message", self._message)

    def auth(self) -> dict[str, str]:
        return self.base | ({"replay": self.last_id} if self.last_id else {})

    async def _connected(self) -> None:
        self.connects += 1
        self.log.append(f"connect after {len(self.envelopes)} messages")

    async def _message(self, envelope: dict[str, Any]) -> None:
        self.envelopes.append(envelope)
        self.last_id = envelope["id"]

    async def start(self) -> None:
        await self.sio.connect(
            self.url, auth=self.auth, transports=[self.transport], wait_timeout=10
        )

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.envelopes]

    @property
    def stalled(self) -> bool:
        """python-engineio's polling client has a flaw this test can hit: a response cut
        short (the node killed between writing its head and its body) raises in its read
        loop, outside the try that turns errors into a disconnect, so the client stays
        "connected" and reads nothing more, for ever. Nothing a server or a proxy does
        can bring it back; socket.io-client reconnects in the same case."""
        eio = self.sio.eio
        reader = getattr(eio, "read_loop_task", None)
        return eio.state == "connected" and reader is not None and reader.done()

    def describe(self) -> str:
        return f"{len(self.envelopes)} messages, eio {self.sio.eio.state}; {self.log}"

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.eio.wait(), 5)
        await self._http.close()


class NodeResumer:
    """tests/node/resume.mjs: socket.io-client's own reconnection, query updated to
    `replay=<last id>` on each attempt."""

    def __init__(self, process: NodeProcess) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, stream: str, token: str, transport: str) -> NodeResumer:
        options = {"url": url, "stream": stream, "token": token, "transports": [transport]}
        process = await NodeProcess.start("resume.mjs", json.dumps(options))
        resumer = cls(process)
        await process.wait_line(lambda line: line.get("event") == "connect")
        return resumer

    @property
    def envelopes(self) -> list[dict[str, Any]]:
        return [line["data"] for line in self.process.events("message")]

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.envelopes]

    @property
    def connects(self) -> int:
        return len(self.process.events("connect"))

    def describe(self) -> str:
        events = [line for line in self.process.lines if line.get("event") != "message"]
        return f"{len(self.envelopes)} messages; {events}"

    async def close(self) -> None:
        await self.process.kill()


Client = PyResumer | NodeResumer


@contextlib.asynccontextmanager
async def clients(url: str, stream: str, token: str) -> AsyncIterator[dict[str, Client]]:
    made: dict[str, Client] = {}
    try:
        for transport in ("websocket", "polling"):
            py = PyResumer(url, stream, token, transport)
            made[f"python-socketio/{transport}"] = py
            await py.start()
            made[f"socket.io-client/{transport}"] = await NodeResumer.start(
                url, stream, token, transport
            )
        yield made
    finally:
        for client in made.values():
            await client.close()


class Publisher:
    """Publishes {"n": 0}, {"n": 1}, ... through nginx, one request at a time, as fast as
    it is answered. A failed request (the node died under it: 502, or refused) is sent
    again; it may have been stored the first time, so the truth is the stream's history."""

    def __init__(self, url: str, stream: str) -> None:
        self.url, self.stream = url, stream
        self.acknowledged: list[str] = []
        self.failures = 0
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, headers=AUTH, timeout=10) as http:
            while not self.stopping.is_set():
                await self.send(http, {"data": {"n": len(self.acknowledged)}})
            await self.send(http, {"data": {"n": len(self.acknowledged), "last": True}})

    async def send(self, http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        while True:
            try:
                r = await http.post(f"/api/streams/{self.stream}/messages", json=body)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 201:
                self.acknowledged += r.json()["ids"]
                return
            self.failures += 1
            await asyncio.sleep(0.1)


def last_seen(client: Client) -> bool:
    envelopes = client.envelopes
    return bool(envelopes) and envelopes[-1]["data"].get("last") is True


def settled(client: Client) -> bool:
    return last_seen(client) or (isinstance(client, PyResumer) and client.stalled)


async def until(
    check: Callable[[], bool], what: str, clients: dict[str, Client], timeout: float = 30
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        states = "\n".join(f"  {name}: {c.describe()}" for name, c in clients.items())
        raise AssertionError(f"timed out waiting for {what}:\n{states}") from None


async def history(url: str, stream: str) -> list[str]:
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=10) as http:
        r = await http.get(f"/api/streams/{stream}/messages", params={"limit": 10000})
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["messages"]]


async def healthz_node(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"{url}/healthz")
    assert r.status_code == 200, r.text
    node: str = r.json()["node"]
    return node


# -- the test -------------------------------------------------------------------------------


async def test_clients_behind_nginx_fail_over_to_the_other_node_and_lose_nothing(
    tmp_path: Path,
) -> None:
    if not node_available():
        pytest.skip("node/npm not installed")
    ensure_node_modules()
    with (
        two_nodes("t_nginx_" + uuid.uuid4().hex[:12]) as (a, b),
        nginx([a.url.removeprefix("http://"), b.url.removeprefix("http://")], tmp_path) as url,
    ):
        nodes = {node_id(a): a, node_id(b): b}
        victim_id = await healthz_node(url)  # every client of this test comes from 127.0.0.1
        (survivor_id,) = set(nodes) - {victim_id}
        stream, token = await nodes[victim_id].stream_and_token()
        async with clients(url, stream, token) as subscribers:
            publisher = Publisher(url, stream)
            publishing = asyncio.create_task(publisher.run())
            try:
                await until(
                    lambda: all(len(c.ids) >= 100 for c in subscribers.values()),
                    "100 messages on every client before the kill",
                    subscribers,
                )
                nodes[victim_id].process.send_signal(signal.SIGKILL)
                nodes[victim_id].process.wait(10)
                before = len(publisher.acknowledged)
                await until(
                    lambda: len(publisher.acknowledged) >= before + 200,
                    "200 publishes through nginx after the kill",
                    subscribers,
                )
                publisher.stopping.set()
                await asyncio.wait_for(publishing, 30)
                await until(
                    lambda: all(settled(c) for c in subscribers.values()),
                    "the last message on every client after the failover",
                    subscribers,
                )
            finally:
                publishing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publishing

            assert await healthz_node(url) == survivor_id
            stored = await history(url, stream)
            assert set(publisher.acknowledged) <= set(stored)
            for name, client in subscribers.items():
                if isinstance(client, PyResumer) and client.stalled:
                    # the flaw above: what it got is right, it just gets no more
                    assert name == "python-socketio/polling"
                    assert client.ids == stored[: len(client.ids)], name
                    continue
                assert client.ids == stored, name  # each once, in order, none lost
                assert client.connects >= 2, name  # it did reconnect, to the survivor


async def test_sse_and_long_polls_through_nginx_answer_at_once(tmp_path: Path) -> None:
    """Nothing waits in nginx's buffers: an SSE event and a long-poll's answer reach the
    client as soon as the message is published."""
    with (
        two_nodes("t_nginx_" + uuid.uuid4().hex[:12]) as (a, b),
        nginx([a.url.removeprefix("http://"), b.url.removeprefix("http://")], tmp_path) as url,
    ):
        stream, token = await a.stream_and_token()
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            path = f"/api/streams/{stream}"
            long_poll = asyncio.create_task(
                http.get(f"{path}/messages", params={"token": token, "wait": 30})
            )
            params = {"token": token, "replayLimit": 10}
            async with http.stream("GET", f"{path}/events", params=params) as sse:
                lines = sse.aiter_lines()
                async with asyncio.timeout(5):
                    while await anext(lines) != "event: replay_end":
                        pass
                r = await http.post(f"{path}/messages", json={"data": "hello"}, headers=AUTH)
                assert r.status_code == 201, r.text
                async with asyncio.timeout(2):  # not held back by a proxy buffer
                    while (line := await anext(lines)) != "event: message":
                        pass
                    while not (line := await anext(lines)).startswith("data: "):
                        pass
                assert json.loads(line.removeprefix("data: "))["data"] == "hello"
            async with asyncio.timeout(2):
                answered = await long_poll
            assert answered.status_code == 200, answered.text
            assert [m["data"] for m in answered.json()["messages"]] == ["hello"]
