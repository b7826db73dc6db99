"""A real `bloomr serve` process for integration tests, and small HTTP helpers.

`running_server()` starts the real command line on a free port (port 0, the server
prints the one it bound) in a fresh data dir, and always stops it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ADMIN_KEY = "test-admin-key"
_TLS = ssl.create_default_context()
_URL_RE = re.compile(r"bloomr listening on (http://\S+)")


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    admin_key: str = ADMIN_KEY
    output: list[str] = field(default_factory=list)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        # one shared TLS context: httpx builds a new one (~50 ms) per client otherwise,
        # though the test server speaks plain HTTP
        kwargs.setdefault("verify", _TLS)
        return httpx.AsyncClient(base_url=self.url, timeout=30, **kwargs)

    @contextlib.asynccontextmanager
    async def _using(self, client: httpx.AsyncClient | None) -> AsyncIterator[httpx.AsyncClient]:
        """The caller's client if it has one (httpkit.Api), else a fresh one."""
        if client is not None:
            yield client
            return
        async with self.client() as fresh:
            yield fresh

    async def create_stream(
        self, client: httpx.AsyncClient | None = None, **fields: Any
    ) -> dict[str, Any]:
        async with self._using(client) as c:
            r = await c.post("/api/streams", json=fields, headers=self.admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def create_token(
        self,
        streams: list[str],
        scopes: list[str] | None = None,
        client: httpx.AsyncClient | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"streams": streams, **fields}
        if scopes is not None:
            body["scopes"] = scopes
        async with self._using(client) as c:
            r = await c.post("/api/tokens", json=body, headers=self.admin)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def stream_and_token(
        self, client: httpx.AsyncClient | None = None, **fields: Any
    ) -> tuple[str, str]:
        """A new stream and a subscribe+publish token for it."""
        stream = await self.create_stream(client, **fields)
        token = await self.create_token([stream["id"]], ["subscribe", "publish"], client)
        return stream["id"], token["token"]

    async def publish(
        self,
        stream_id: str,
        items: Any,
        secret: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> list[str]:
        headers = {"Authorization": f"Bearer {secret}"} if secret else self.admin
        async with self._using(client) as c:
            r = await c.post(f"/api/streams/{stream_id}/messages", json=items, headers=headers)
        assert r.status_code == 201, r.text
        ids = r.json()["ids"]
        assert isinstance(ids, list)
        return ids

    def socket_url(self, **query: Any) -> str:
        from urllib.parse import urlencode

        return f"{self.url}/?{urlencode(query)}" if query else f"{self.url}/"


def _read_url(process: subprocess.Popen[str], output: list[str]) -> str:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)
        match = _URL_RE.search(line)
        if match:
            return match.group(1)
    raise RuntimeError("bloomr serve exited before listening:\n" + "".join(output))


def _drain(process: subprocess.Popen[str], output: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        output.append(line)


@contextlib.contextmanager
def running_server(
    *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
) -> Iterator[Server]:
    """Start `bloomr serve --port 0` and stop it (SIGTERM, then SIGKILL) afterwards.
    Synchronous on purpose: usable from session fixtures and from async tests alike."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bloomr-")))
        full_env = {**os.environ, "BLOOMR_ADMIN_KEY": ADMIN_KEY, **(env or {})}
        command = [sys.executable, "-m", "bloomr", "serve", "--port", "0"]
        command += ["--data-dir", str(data_dir), *args]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env
        )
        output: list[str] = []
        drain = threading.Thread(target=_drain, args=(process, output), daemon=True)
        try:
            url = _read_url(process, output)
            drain.start()
            yield Server(url=url, data_dir=data_dir, process=process, output=output)
        finally:
            stop(process)
            if drain.is_alive():
                drain.join(5)
            if process.stdout is not None:
                process.stdout.close()  # else a ResourceWarning (an error here) at exit


def stop(process: subprocess.Popen[str], timeout: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
