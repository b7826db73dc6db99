"""Socket.IO clients for the integration tests: python-socketio's AsyncClient that
records every event in arrival order, and the Node socket.io-client scripts in
tests/node run as subprocesses that print one JSON line per event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import socketio

NODE_DIR = Path(__file__).parent / "node"
TRANSPORTS = ("websocket", "polling")


@dataclass
class Event:
    name: str
    data: Any = None


class _AsyncClient(socketio.AsyncClient):  # type: ignore[misc]
    async def _handle_disconnect(self, namespace: str | None) -> None:
        # python-socketio ignores a DISCONNECT packet that arrives before `connect()` has
        # resumed (it checks `self.connected`, which only `connect()` sets). Over polling
        # the server's refusal (CONNECT, error, DISCONNECT) can arrive that fast; let
        # `connect()` finish first so the disconnect is seen, as socket.io-client sees it.
        for _ in range(200):
            if self.connected:
                break
            await asyncio.sleep(0.005)
        await super()._handle_disconnect(namespace)


class Recorder:
    """One python-socketio AsyncClient (reconnection off) recording every event.

    `events` holds `Event(name, payload)` in the order the client saw them:
    connect, message, warning, error, replay_end, disconnect (payload: the reason; not
    recorded when we close the client ourselves)."""

    def __init__(self) -> None:
        # our own HTTP session, closed in close(): engine.io leaves its own one open
        # on some server-side disconnects (a ResourceWarning, an error in this suite)
        self._http = aiohttp.ClientSession()
        self.sio = _AsyncClient(reconnection=False, http_session=self._http)
        self.events: list[Event] = []
        self._by_name: dict[str, list[Any]] = defaultdict(list)
        self._changed = asyncio.Event()
        self._closing = False
        for name in ("message", "warning", "error", "replay_end"):
            self.sio.on(name, self._recorder(name))

        async def on_connect() -> None:
            self._add(Event("connect"))

        async def on_disconnect(reason: Any = None) -> None:
            if not self._closing:  # only what the server did is recorded
                self._add(Event("disconnect", reason))

        self.sio.on("connect", on_connect)
        self.sio.on("disconnect", on_disconnect)

    def _recorder(self, name: str) -> Callable[..., Any]:
        async def handler(*args: Any) -> None:
            self._add(Event(name, args[0] if args else None))

        return handler

    def _add(self, event: Event) -> None:
        self.events.append(event)
        self._by_name[event.name].append(event.data)
        self._changed.set()

    async def connect(
        self,
        url: str,
        *,
        auth: dict[str, Any] | None = None,
        transport: str = "websocket",
    ) -> Recorder:
        await self.sio.connect(url, auth=auth, transports=[transport], wait_timeout=10)
        return self

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.disconnect(), 5)
        # wait for the engine.io client's tasks, which close its aiohttp session
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sio.eio.wait(), 5)
        await self._http.close()

    # -- what was received ------------------------------------------------------------

    def named(self, name: str) -> list[Any]:
        """The payloads of the `name` events, in order (a copy)."""
        return list(self._by_name.get(name, ()))

    def count(self, name: str) -> int:
        return len(self._by_name.get(name, ()))

    @property
    def messages(self) -> list[Any]:
        return self.named("message")

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return self.named("warning")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self.named("error")

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.events]

    @property
    def disconnected(self) -> bool:
        return self.count("disconnect") > 0

    # -- waiting ----------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Wait until `predicate()` holds (checked after every event)."""

        async def wait() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s; events so far: {self.summary()}"
            ) from None

    async def wait_event(self, name: str, timeout: float = 10) -> Any:
        await self.wait_until(lambda: self.count(name) > 0, timeout)
        return self._by_name[name][0]

    async def wait_messages(self, count: int, timeout: float = 10) -> list[Any]:
        await self.wait_until(lambda: self.count("message") >= count, timeout)
        return self.messages

    async def wait_disconnect(self, timeout: float = 10) -> Any:
        return await self.wait_event("disconnect", timeout)

    def summary(self, limit: int = 20) -> str:
        shown = [(e.name, e.data) for e in self.events[:limit]]
        more = len(self.events) - limit
        return repr(shown) + (f" ... and {more} more" if more > 0 else "")


@contextlib.asynccontextmanager
async def connected(
    url: str, *, auth: dict[str, Any] | None = None, transport: str = "websocket"
) -> AsyncIterator[Recorder]:
    """A connected Recorder, always closed afterwards."""
    client = Recorder()
    try:
        await client.connect(url, auth=auth, transport=transport)
        yield client
    finally:
        await client.close()


async def connect_and_wait(
    url: str, *, auth: dict[str, Any] | None = None, transport: str = "websocket"
) -> Recorder:
    """Connect and wait for `replay_end` (or the session's end). Close it yourself."""
    client = Recorder()
    try:
        await client.connect(url, auth=auth, transport=transport)
        await client.wait_until(
            lambda: client.count("replay_end") > 0 or client.disconnected, timeout=30
        )
    except BaseException:
        await client.close()
        raise
    return client


async def refused(
    url: str, *, auth: dict[str, Any] | None = None, transport: str = "websocket"
) -> dict[str, Any]:
    """Connect where the server must refuse: assert the connection completes, `error`
    comes, then the server disconnects, and nothing else; return the error payload."""
    async with connected(url, auth=auth, transport=transport) as client:
        await client.wait_disconnect(timeout=10)
        assert client.names == ["connect", "error", "disconnect"], client.summary()
        reason = client.named("disconnect")[0]
        assert reason == client.sio.reason.SERVER_DISCONNECT, client.summary()
        error: dict[str, Any] = client.errors[0]
        assert isinstance(error.get("message"), str) and error["message"], error
        return error


# -- Node -------------------------------------------------------------------------------


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def ensure_node_modules() -> None:
    """`npm ci` in tests/node unless the pinned socket.io-client is already installed."""
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/socket.io-client"]["version"]
    installed = NODE_DIR / "node_modules" / "socket.io-client" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"npm ci failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}")


class NodeProcess:
    """A node script from tests/node printing one JSON object per line on stdout, read
    continuously into `lines` (so the script never blocks on a full pipe)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        self._changed = asyncio.Event()
        self._eof = False
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, script: str, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_DIR / script),
            *args,
            cwd=NODE_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})},
            limit=1 << 24,
        )
        return cls(process)

    @classmethod
    async def client(cls, **options: Any) -> NodeProcess:
        """tests/node/client.mjs with these options (url, query, auth, transports,
        count, stopOnField, timeoutMs)."""
        return await cls.start("client.mjs", json.dumps(options))

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            async for raw in self.process.stdout:
                self.lines.append(json.loads(raw))
                self._changed.set()
        finally:
            self._eof = True
            self._changed.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    @property
    def names(self) -> list[str]:
        return [line.get("event", "?") for line in self.lines]

    async def wait_line(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15
    ) -> dict[str, Any]:
        """The first line (already read or to come) satisfying `predicate`."""

        async def wait() -> dict[str, Any]:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                if self._eof:
                    raise AssertionError(f"node ended first: {await self._describe()}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out: {await self._describe()}") from None

    async def finish(self, timeout: float = 15) -> int:
        """Wait for the exit (reading everything); return the exit code."""
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"node did not exit: {await self._describe()}") from None
        await self._read_stderr()
        return code

    async def _read_stderr(self) -> None:
        if self.process.stderr is not None and self.process.returncode is not None:
            self.stderr += (await self.process.stderr.read()).decode(errors="replace")

    async def _describe(self) -> str:
        await self._read_stderr()
        shown = self.lines[:10]
        return f"lines: {shown} (+{len(self.lines) - len(shown)}); stderr: {self.stderr[-2000:]}"

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        await self._read_stderr()


class Publisher:
    """Publishes `{"n": 0}`, `{"n": 1}`, ... on "" in batches of 1-5, each batch with
    one "errors" message that "" subscribers must never see, as fast as the server
    takes them, until `stopping` is set; `finish()` then publishes the last number
    with `"last": true`."""

    def __init__(self, srv: Any, stream_id: str, seed: int = 2024) -> None:
        self.srv = srv
        self.stream_id = stream_id
        self.ids: list[str] = []  # ids[n] is the id of message n
        self.stopping = asyncio.Event()
        self._progress = asyncio.Event()
        self._rng = random.Random(seed)

    async def run(self) -> None:
        async with self.srv.client() as http:
            while not self.stopping.is_set():
                start = len(self.ids)
                size = self._rng.randint(1, 5)
                items: list[dict[str, Any]] = [
                    {"data": {"n": n}} for n in range(start, start + size)
                ]
                errors_at = self._rng.randint(0, size)
                items.insert(errors_at, {"channel": "errors", "data": f"noise {start}"})
                r = await http.post(
                    f"/api/streams/{self.stream_id}/messages", json=items, headers=self.srv.admin
                )
                assert r.status_code == 201, r.text
                ids = r.json()["ids"]
                self.ids += ids[:errors_at] + ids[errors_at + 1 :]
                self._progress.set()

    async def reach(self, count: int) -> None:
        """Wait until `count` numbered messages are published."""
        while len(self.ids) < count:
            self._progress.clear()
            await self._progress.wait()

    async def finish(self) -> int:
        """Publish the last number, flagged `"last": true`; return it."""
        last = len(self.ids)
        async with self.srv.client() as http:
            r = await http.post(
                f"/api/streams/{self.stream_id}/messages",
                json={"data": {"n": last, "last": True}},
                headers=self.srv.admin,
            )
            assert r.status_code == 201, r.text
            self.ids += r.json()["ids"]
        return last


def check_handover(how: str, envelopes: list[dict[str, Any]], ids: list[str], last: int) -> int:
    """One subscriber's envelopes (includeMetadata) after a hand-over: a contiguous run
    of numbers ending at `last`, the ids as published, replayed ones first. Returns
    how many were replayed."""
    got = numbers(envelopes)
    assert got, f"{how}: nothing received"
    assert got == list(range(got[0], last + 1)), f"{how}: not contiguous: {got}"
    assert [e["id"] for e in envelopes] == ids[got[0] :], how
    assert all(e["channel"] == "" for e in envelopes), how
    flags = [e["replayed"] for e in envelopes]
    replayed = flags.count(True)
    assert flags == [True] * replayed + [False] * (len(flags) - replayed), how
    return replayed


# -- HTTP helpers for the Socket.IO tests ----------------------------------------------


async def poll_messages(srv: Any, stream_id: str, token: str, **params: Any) -> dict[str, Any]:
    """`GET /api/streams/{id}/messages` -> `{messages, next}`."""
    async with srv.client() as http:
        r = await http.get(
            f"/api/streams/{stream_id}/messages",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


async def admin_delete(srv: Any, path: str) -> None:
    async with srv.client() as http:
        r = await http.delete(path, headers=srv.admin)
        assert r.status_code in (200, 204), r.text


def numbers(messages: list[Any]) -> list[int]:
    """The `n` of each message: `{"n": ...}` data, or envelopes around such data."""
    return [m["data"]["n"] if "replayed" in m else m["n"] for m in messages]
