"""A real HTTP webhook receiver for tests: an aiohttp server on 127.0.0.1 recording
every request bloomr's webhooks make."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TIMEOUT = 15  # seconds for any awaited delivery


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float  # monotonic, when the request arrived

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["messages"])

    @property
    def delivery(self) -> str:
        return self.headers["X-Bloomr-Delivery"]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 recording every request. It answers `status` (or the
    next of `script` while there is one), after `gate` opens when a gate is set."""

    status: int = 200
    script: list[int] = field(default_factory=list)
    gate: asyncio.Event | None = None
    hits: list[Hit] = field(default_factory=list)
    arrived: int = 0  # requests received, answered or not
    base: str = ""
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        body = await request.read()
        self.arrived += 1
        self._changed.set()
        if self.gate is not None:
            await self.gate.wait()
        status = self.script.pop(0) if self.script else self.status
        self.hits.append(Hit(request.path, dict(request.headers), body, status, arrived))
        self._changed.set()
        return web.Response(status=status, text="ok" if status < 300 else "down")

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    def at(self, path: str = "/hook") -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def delivered(self, path: str = "/hook") -> list[dict[str, Any]]:
        """The messages of every acknowledged request, in arrival order."""
        return [m for h in self.at(path) if h.ok for m in h.messages]

    async def until(self, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._changed.clear()
                await self._changed.wait()

    def first_seen(self, path: str = "/hook") -> list[str]:
        """The ids delivered, each at its first delivery (at least once: a batch may come
        again)."""
        return list(dict.fromkeys(m["id"] for m in self.delivered(path)))


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.base = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        if rec.gate is not None:
            rec.gate.set()
        await runner.cleanup()
