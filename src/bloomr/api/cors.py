"""CORS for the HTTP API (SPEC §3). The client endpoints (polling, SSE, publish), which
take bearer tokens and never cookies, answer any origin; the admin API answers the
origins given with `--cors-origin` (none by default; `*` for any). Socket.IO's Engine.IO
transport answers CORS itself (`transports/engineio.py`).

A plain ASGI wrapper, outside everything that writes responses by hand (the publish
fast path, the body limit), so that every answer, errors included, carries the headers."""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# polling and publish (`/messages`), server-sent events (`/events`)
_CLIENT_PATH = re.compile(r"/api/streams/[^/]+/(?:messages|events)/?")

ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = b"Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
EXPOSE_HEADERS = b"Retry-After"
MAX_AGE = b"600"


def allowed_origin(path: str, origin: str, admin_origins: Iterable[str]) -> bytes | None:
    """The `Access-Control-Allow-Origin` value for a request from `origin` to `path`,
    or None when that origin may not read the answer."""
    if _CLIENT_PATH.fullmatch(path):
        return b"*"
    origins = set(admin_origins)
    if "*" in origins:
        return b"*"
    if origin in origins:
        return origin.encode("latin-1")
    return None


class Cors:
    def __init__(self, app: ASGIApp, admin_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.admin_origins = frozenset(admin_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        allow = allowed_origin(scope["path"], origin, self.admin_origins)
        if allow is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"access-control-allow-origin", allow)]
        if allow != b"*":
            headers.append((b"vary", b"Origin"))
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            await _preflight(send, headers)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [*headers, (b"access-control-expose-headers", EXPOSE_HEADERS)]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(send: Send, headers: list[tuple[bytes, bytes]]) -> None:
    headers = headers + [
        (b"access-control-allow-methods", ALLOW_METHODS),
        (b"access-control-allow-headers", ALLOW_HEADERS),
        (b"access-control-max-age", MAX_AGE),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
