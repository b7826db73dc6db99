"""The web dashboard (SPEC §8): static files served by `bloomr serve`, no build step.

`/` answers the dashboard's page to browsers (`Accept: text/html`) and goes on to the
HTTP API for everyone else; `/dashboard/<file>` serves the page's modules, styles and
the vendored socket.io-client. The files are read once, at start: nothing outside this
package's `static/` folder can be named by a request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
PREFIX = "/dashboard/"
_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".md": b"text/plain; charset=utf-8",
    ".LICENSE": b"text/plain; charset=utf-8",
}
# everything the page loads comes from this server: it works offline, and an injected
# script could not call out
_CSP = (
    b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    content_type: bytes
    etag: bytes


def load_files(root: Path = STATIC) -> dict[str, _File]:
    """Every servable file under `root`, by its path relative to it."""
    files = {}
    for path in sorted(root.rglob("*")):
        kind = _TYPES.get(path.suffix)
        if path.is_file() and kind is not None:
            body = path.read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:16].encode() + b'"'
            files[path.relative_to(root).as_posix()] = _File(body, kind, etag)
    return files


def wants_html(scope: Scope) -> bool:
    """A browser navigating here: API clients (`*/*`, JSON) get the API's answer."""
    for name, value in scope["headers"]:
        if name == b"accept":
            return b"text/html" in value
    return False


class Dashboard:
    """ASGI: the dashboard's files, in front of `app` (the HTTP API)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.files = load_files()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
        else:
            await _send_file(scope, send, found)

    def _match(self, scope: Scope) -> _File | None:
        if scope["method"] not in ("GET", "HEAD"):
            return None
        path: str = scope["path"]
        if path == "/":
            return self.files["index.html"] if wants_html(scope) else None
        if path.startswith(PREFIX):
            return self.files.get(path.removeprefix(PREFIX))
        return None


async def _send_file(scope: Scope, send: Send, file: _File) -> None:
    headers = [
        (b"content-type", file.content_type),
        (b"etag", file.etag),
        # revalidated on every load (a 304 costs nothing): an upgrade is seen at once
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", _CSP),
        # public files: a page elsewhere may import the vendored socket.io-client
        (b"access-control-allow-origin", b"*"),
    ]
    status, body = 200, file.body
    if any(k == b"if-none-match" and file.etag in v for k, v in scope["headers"]):
        status, body = 304, b""
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
