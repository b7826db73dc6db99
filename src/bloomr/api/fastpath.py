"""The publish endpoint's fast paths. Same work, same answers, same errors as the
route in `api/messages.py`: they call its own `publish_body` (or its parts); only the
HTTP plumbing differs.

- `PublishingHttp`, uvicorn's httptools protocol, publishes a request on the spot,
  inside the callback that parsed it, when nothing has to be waited for (a token in
  the cache, a cached stream, a store that commits at once): no ASGI scope, no task,
  no turn of the loop between a request and its fan-out. Anything else it hands on,
  untouched, to the ASGI app.
- `FastPublish`, in the ASGI app, publishes the rest without FastAPI's per-request
  machinery (dependency solving, middleware wrappers, response classes)."""

from __future__ import annotations

import http
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl

import httptools
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..auth import Principal, check_access
from ..faults import PUBLISH_QUEUE_WAIT, RETRY_AFTER_SECONDS, as_error
from ..model import Draft, Message, Stream
from .context import Context
from .messages import parse_publish_body, publish_body, published_body

_PUBLISH_PATH = re.compile(r"/api/streams/([^/]+)/messages/?")
_JSON = (b"content-type", b"application/json")
Headers = Sequence[tuple[bytes, bytes]]


class FastPublish:
    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PUBLISH_PATH.fullmatch(scope["path"])
            if match is not None:
                await self._publish(match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _publish(self, stream_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            handed: _Request | None = scope.get(_HANDED_OVER)
            if handed is not None:  # authorized and parsed already, in PublishingHttp
                hub, wait = self.ctx.hub, PUBLISH_QUEUE_WAIT
                messages = await hub.publish(handed.stream, handed.drafts, wait)
                await _respond(send, 201, published_body(messages))
                return
            caller = await self.ctx.auth.identify(_secret(scope))
            raw = await _body(receive)
            if raw is None:
                return  # the client went away
            await _respond(send, 201, await publish_body(self.ctx, caller, stream_id, raw))
        except Exception as exc:
            await _respond(send, *_failure(exc))


def _secret(scope: Scope) -> str | None:
    return _secret_of(scope["headers"], scope["query_string"])


def _secret_of(headers: Headers, query_string: bytes) -> str | None:
    """`Authorization: Bearer <secret>`, else `?token=`, as `api/deps.py` reads them."""
    for name, value in headers:
        if name == b"authorization":
            kind, _, secret = bytes(value).decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and secret.strip():
                return secret.strip()
    if not query_string:
        return None
    query: dict[str, str] = dict(parse_qsl(query_string.decode("latin-1")))
    return query.get("token")


def _failure(exc: Exception) -> tuple[int, bytes]:
    """The answer to a publish that failed with `exc` (an unexpected error is logged with
    its traceback and answered as `internal`; a backend's failure as `unavailable`)."""
    error = as_error(exc, "publish")
    return error.status, orjson.dumps({"error": error.payload()})


async def _body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *_retry_after(status)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# -- inside the HTTP protocol --------------------------------------------------------


@dataclass(slots=True)
class _Request:
    caller: Principal
    stream: Stream
    chunks: list[bytes] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)  # once parsed


# the scope key of a request handed over already parsed: FastPublish does not parse the
# body (a batch too big to store on the spot) a second time
_HANDED_OVER = "bloomr.publish"


class PublishingHttp(HttpToolsProtocol):  # type: ignore[misc]
    """One HTTP connection. Bound to a node by `publishing_http`."""

    ctx: ClassVar[Context]
    max_body: ClassVar[int]
    _publish: _Request | None = None  # the request being read is published here

    def on_headers_complete(self) -> None:
        self._publish = self._intercept()
        if self._publish is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._publish is None:
            super().on_body(body)
        else:
            self._publish.chunks.append(body)

    def on_message_complete(self) -> None:
        request, self._publish = self._publish, None
        if request is None:
            super().on_message_complete()
            return
        body = b"".join(request.chunks)
        try:
            messages = self._publish_now(request, body)
        except Exception as exc:
            self._respond(*_failure(exc))
            return
        if messages is None:
            cast(dict[str, Any], self.scope)[_HANDED_OVER] = request
            self._hand_over(body)
            return
        self._respond(201, published_body(messages))

    def _intercept(self) -> _Request | None:
        """A publish this protocol can take: one the route would accept without waiting
        for anything. Pipelined requests, `Expect: 100-continue`, chunked or oversized
        bodies, HTTP/1.0, connections closing after the request, and cache misses go
        the usual way."""
        parser = self.parser
        if parser.get_method() != b"POST" or parser.should_upgrade():
            return None
        if not self.ctx.hub.publishes_on_the_spot:
            return None
        if parser.get_http_version() != "1.1" or not parser.should_keep_alive():
            return None  # answered the usual way, with the headers that closing needs
        if self.expect_100_continue:
            return None
        if any(name == b"origin" for name, _ in self.headers):
            return None  # a browser on another origin: the ASGI path adds the CORS headers
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # the request before it is still being answered
        url = httptools.parse_url(self.url)
        match = _PUBLISH_PATH.fullmatch(url.path.decode("latin-1"))
        length = _declared_length(self.headers)
        if match is None or length is None or length > self.max_body:
            return None
        secret = _secret_of(self.headers, url.query or b"")
        if secret is None:
            return None
        caller = self.ctx.auth.identify_cached(secret)
        stream = self.ctx.streams.cached(match.group(1))
        if caller is None or stream is None:
            return None
        return _Request(caller, stream)

    def _publish_now(self, request: _Request, body: bytes) -> list[Message] | None:
        check_access(request.caller, request.stream.id, "publish")
        request.drafts = parse_publish_body(body)
        if not request.drafts:
            return []
        return self.ctx.hub.try_publish_now(request.stream, request.drafts)

    def _hand_over(self, body: bytes) -> None:
        """Give the request, as parsed, to uvicorn and the ASGI app (the parser has not
        moved on: its URL and headers are still this request's)."""
        super().on_headers_complete()
        if body:
            super().on_body(body)
        super().on_message_complete()

    def _respond(self, status: int, body: bytes) -> None:
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        for name, value in (*self.server_state.default_headers, _JSON, *_retry_after(status)):
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.on_response_complete()  # uvicorn's bookkeeping: keep-alive, next request


def _retry_after(status: int) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", b"%d" % RETRY_AFTER_SECONDS)] if status == 503 else []


def _declared_length(headers: Headers) -> int | None:
    """Content-Length, when it alone frames the body."""
    length = None
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and length is not None):
            return None
        if name == b"content-length":
            if not value.isdigit():
                return None
            length = int(value)
    return length


def publishing_http(ctx: Context, max_body: int) -> type[PublishingHttp]:
    """A protocol class bound to one node, for `uvicorn.Config(http=...)`."""
    return type("BoundPublishingHttp", (PublishingHttp,), {"ctx": ctx, "max_body": max_body})
