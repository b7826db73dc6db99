"""The publish fast path inside uvicorn's HTTP protocol (`server/http.py`) keeps what
the ASGI path has: uvicorn's access log when it is on, uvicorn's `limit_concurrency`,
and it turns itself off (one log line) on a uvicorn whose internals it does not find.

These options are not `bloomr serve` flags, so the node runs here in-process, on the
configuration `bloomr serve` uses plus the option under test, with real clients."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
import websockets
from httpkit import bearer

from bloomr.app import Bloomr
from bloomr.config import Settings
from bloomr.server import _bind, server_config
from bloomr.server import http as server_http
from server import Server

pytestmark = pytest.mark.timeout(60)

ADMIN_KEY = "protocols-admin-key"


@contextlib.asynccontextmanager
async def serving(data_dir: Path, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A node served by uvicorn in this process with `options`; a client on it."""
    settings = Settings(data_dir=data_dir, port=0)
    server = uvicorn.Server(server_config(settings, Bloomr(settings, ADMIN_KEY), **options))
    sock = _bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=url, headers=bearer(ADMIN_KEY)) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def new_stream(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/streams", json={"name": "protocols"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def publish(client: httpx.AsyncClient, stream_id: str, data: Any) -> httpx.Response:
    return await client.post(f"/api/streams/{stream_id}/messages", json={"data": data})


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_every_publish_is_in_the_access_log_whichever_path_served_it(
    tmp_path: Path,
) -> None:
    records = Records()
    async with serving(tmp_path, access_log=True, log_level="info") as client:
        access = logging.getLogger("uvicorn.access")
        access.addHandler(records)
        try:
            stream_id = await new_stream(client)
            for n in range(4):
                assert (await publish(client, stream_id, n)).status_code == 201
            # a connection closing after its request goes the ASGI way
            url = f"/api/streams/{stream_id}/messages"
            r = await client.post(url, json={"data": 4}, headers={"connection": "close"})
            assert r.status_code == 201
        finally:
            access.removeHandler(records)
    lines = [(r.getMessage(), r.funcName) for r in records.records]
    posts = [(m, f) for m, f in lines if '"POST /api/streams/' in m]
    path = f"/api/streams/{stream_id}/messages"
    assert len(posts) == 5, lines
    assert all(m.endswith(f'"POST {path} HTTP/1.1" 201') for m, _ in posts), posts
    assert {f for _, f in posts} == {"send", "_log_access"}  # uvicorn's, and the fast path's


async def test_the_fast_path_keeps_uvicorns_concurrency_limit(tmp_path: Path) -> None:
    async with serving(tmp_path, limit_concurrency=2) as client:
        stream_id = await new_stream(client)
        for n in range(3):  # one connection: under the limit, cached after the first
            assert (await publish(client, stream_id, n)).status_code == 201
        url = urlsplit(str(client.base_url))
        assert url.hostname is not None and url.port is not None
        _, idle = await asyncio.open_connection(url.hostname, url.port)
        try:
            await client.get("/healthz")  # the idle connection is counted by now
            r = await publish(client, stream_id, "over")
            assert r.status_code == 503, r.text  # as uvicorn answers any request over it
        finally:
            idle.close()
            await idle.wait_closed()


async def test_the_fast_path_finds_what_it_uses_in_this_uvicorn(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, port=0)
    config = server_config(settings, Bloomr(settings, ADMIN_KEY))
    assert server_http.fast_path_gaps(config) == []
    assert server_http.check_fast_path(config)


async def test_the_fast_path_turns_off_in_one_line_when_uvicorn_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Changed(uvicorn.protocols.http.httptools_impl.HttpToolsProtocol):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            del self.limit_concurrency  # as if a later uvicorn had renamed it

    monkeypatch.setattr(server_http, "HttpToolsProtocol", Changed)
    settings = Settings(data_dir=tmp_path, port=0)
    config = server_config(settings, Bloomr(settings, ADMIN_KEY))
    assert server_http.fast_path_gaps(config) == ["limit_concurrency"]
    with caplog.at_level(logging.WARNING, logger="bloomr"):
        assert not server_http.check_fast_path(config)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bloomr"]
    assert line.startswith("publish fast path off:") and "limit_concurrency" in line


@pytest.mark.parametrize("path", ["/other", "/api/streams/x/events", "/socket.iox/"])
async def test_a_websocket_outside_every_transports_paths_is_not_found(
    server: Server, path: str
) -> None:
    url = server.url.replace("http://", "ws://") + path + "?EIO=4&transport=websocket"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, open_timeout=5)
    assert refused.value.response.status_code == 404


async def test_a_websocket_on_the_socketio_path_reaches_its_transport(server: Server) -> None:
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, open_timeout=5) as ws:
        opened = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(opened, str) and opened.startswith('0{"sid":')
