"""Headless Chromium for the end-to-end tests: Debian's `chromium` driven by Playwright
(never `playwright install`: its browser downloads are not needed and may be
impossible), and a small static web server, on another origin than bloomr, for the
pages that test CORS and the README's browser example."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from server import Server

CHROMIUM = Path(os.environ.get("BLOOMR_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VENDOR = Path(__file__).parents[2] / "src/bloomr/dashboard/static/vendor"
TIMEOUT_MS = 15_000


def require_chromium() -> None:
    """Skip where Chromium is missing, except in CI (scripts/setup.sh installs it)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def browser_context() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, closed afterwards."""
    require_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with (
        tempfile.TemporaryDirectory(prefix="bloomr-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_site(files: dict[str, str | bytes], host: str = "localhost") -> Iterator[str]:
    """Serve `files` (name -> content, plus the vendored socket.io-client as
    `socket.io.esm.min.js`) at http://<host>:<port>; yields that origin."""
    with tempfile.TemporaryDirectory(prefix="bloomr-site-") as root:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            (Path(root) / name).write_bytes(data)
        vendored = (VENDOR / "socket.io.esm.min.js").read_bytes()
        (Path(root) / "socket.io.esm.min.js").write_bytes(vendored)
        handler = partial(_Quiet, directory=root)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://{host}:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- plain (synchronous) HTTP helpers: Playwright's sync API owns this thread's loop ----


def admin_client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=server.admin, timeout=10)


def new_stream(server: Server, **fields: Any) -> dict[str, Any]:
    with admin_client(server) as c:
        r = c.post("/api/streams", json=fields)
    assert r.status_code == 201, r.text
    return dict(r.json())


def new_token(server: Server, streams: list[str], scopes: list[str]) -> str:
    with admin_client(server) as c:
        r = c.post("/api/tokens", json={"streams": streams, "scopes": scopes})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def stream_and_token(server: Server) -> tuple[str, str]:
    """A new stream and a subscribe+publish token for it."""
    stream_id = new_stream(server)["id"]
    return stream_id, new_token(server, [stream_id], ["subscribe", "publish"])


def publish(server: Server, stream_id: str, items: Any) -> list[str]:
    with admin_client(server) as c:
        r = c.post(f"/api/streams/{stream_id}/messages", json=items)
    assert r.status_code == 201, r.text
    return list(r.json()["ids"])
