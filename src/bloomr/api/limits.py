"""In front of the HTTP API (Socket.IO has its own): credentials checked before a body
is read, then a request-body size limit, then the body's JSON checked once."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import Authenticator
from ..credentials import client_address, secret_of
from ..errors import BloomrError
from .errors import retry_after
from .fastpath import HANDED_OVER, PUBLISH_PATH
from .jsonbody import check_json

_NO_BODY = ("GET", "HEAD", "OPTIONS", "DELETE")


class BodyLimit:
    """Reads the body up front (it is bounded anyway) so an oversized one is refused
    with 413 before any route sees it, whether or not Content-Length was sent; and
    before that, a request without valid credentials is refused (401, or 429 for an
    address that failed too often) without reading its body at all."""

    def __init__(self, app: ASGIApp, max_bytes: int, auth: Authenticator) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        try:
            await self._check_credentials(scope)
        except BloomrError as exc:
            await send_error(send, exc)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        if PUBLISH_PATH.fullmatch(scope["path"]) is None:  # a publish reads its own
            try:
                check_json(bytes(body))
            except BloomrError as exc:
                await send_error(send, exc)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _check_credentials(self, scope: Scope) -> None:
        """Every API route that takes a body needs credentials (the route then checks
        what they allow); a publish handed over by the HTTP protocol was checked."""
        if not scope["path"].startswith("/api/") or scope.get(HANDED_OVER) is not None:
            return
        secret = secret_of(scope["headers"], scope["query_string"])
        await self.auth.identify(secret, client_address(scope))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def inner() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return inner


def error_headers(error: BloomrError) -> list[tuple[bytes, bytes]]:
    """The headers of an error answer: JSON, and `Retry-After` when it says when."""
    headers = [(b"content-type", b"application/json")]
    for name, value in (retry_after(error) or {}).items():
        headers.append((name.lower().encode(), value.encode()))
    return headers


async def send_error(send: Send, error: BloomrError) -> None:
    body = orjson.dumps({"error": error.payload()})
    headers: list[Any] = error_headers(error)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, max_bytes: int) -> None:
    # No `connection: close`: the server then reads and drops the rest of the body, so
    # a client that sends all of it before reading (httpx, requests) is not reset and
    # sees this answer; one that waited for it sees it at once.
    await send_error(
        send, BloomrError("payload_too_large", f"request body is over {max_bytes} bytes")
    )
