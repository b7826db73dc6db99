"""The HTTP protocol: uvicorn's httptools protocol, publishing on the spot.

`PublishingHttp` publishes a request inside the callback that parsed it, when nothing
has to be waited for (a token in the cache, a cached stream, a store that commits at
once): no ASGI scope, no task, no turn of the loop between a request and its fan-out.
Anything else it hands on, untouched, to the ASGI app, whose `FastPublish`
(`api/fastpath.py`) does the same work with the same answers.

It reads uvicorn's internals, so uvicorn is pinned to the tested minor version and
`fast_path_gaps` checks, at start-up, that what it uses is still there; if not, the
server runs uvicorn's own protocol (`check_fast_path`). What the ASGI path applies it
applies too: the body limit (a body over it goes to the ASGI app, whose `BodyLimit`
answers 413), uvicorn's `limit_concurrency` (over it, uvicorn answers 503), the access
log (when uvicorn's is on) and a graceful shutdown (a publish being read is answered
before its connection closes)."""

from __future__ import annotations

import http
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from ..api.context import Context
from ..api.fastpath import HANDED_OVER, JSON_TYPE, PUBLISH_PATH, PublishRequest, failure
from ..api.messages import parse_publish_body, published_body
from ..auth import check_access, check_publish_channels
from ..bounds import Bounds
from ..credentials import secret_of
from ..faults import retry_after
from ..model import Message
from .bounded import BoundedHttp, bounded_http

log = logging.getLogger("bloomr")

Headers = Sequence[tuple[bytes, bytes]]


class PublishingHttp(BoundedHttp):
    """One HTTP connection. Bound to a node by `publishing_http`."""

    ctx: ClassVar[Context]
    max_body: ClassVar[int]
    _publish: PublishRequest | None = None  # the request being read is published here
    _closing = False  # the server is stopping: answer, then close

    def on_headers_complete(self) -> None:
        self.head_done()
        self._publish = self._intercept()
        if self._publish is None:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._publish is None:
            super().on_body(body)
        else:
            self._publish.chunks.append(body)

    def on_message_complete(self) -> None:
        self.request_read()
        request, self._publish = self._publish, None
        if request is None:
            super().on_message_complete()
            return
        body = b"".join(request.chunks)
        try:
            messages = self._publish_now(request, body)
        except Exception as exc:
            self._respond(*failure(exc))
            return
        if messages is None:
            cast(dict[str, Any], self.scope)[HANDED_OVER] = request
            self._hand_over(body)
            return
        self._respond(201, published_body(messages))

    def shutdown(self) -> None:
        """uvicorn is stopping: a publish still being read gets its answer first (uvicorn
        would close a connection it sees no request on)."""
        if self._publish is None:
            super().shutdown()
        else:
            self._closing = True

    def _intercept(self) -> PublishRequest | None:
        """A publish this protocol can take: one the route would accept without waiting
        for anything. Pipelined requests, `Expect: 100-continue`, chunked or oversized
        bodies, HTTP/1.0, connections closing after the request, requests over uvicorn's
        concurrency limit and cache misses go the usual way."""
        parser = self.parser
        if parser.get_method() != b"POST" or parser.should_upgrade():
            return None
        if not self.ctx.hub.publishes_on_the_spot:
            return None
        if parser.get_http_version() != "1.1" or not parser.should_keep_alive():
            return None  # answered the usual way, with the headers that closing needs
        if self.expect_100_continue:
            return None
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # the request before it is still being answered
        if self.limit_concurrency is not None and self._over_limit(self.limit_concurrency):
            return None  # uvicorn answers 503
        url = httptools.parse_url(self.url)
        match = PUBLISH_PATH.fullmatch(url.path.decode("latin-1"))
        length = _declared_length(self.headers)
        if match is None or length is None or length > self.max_body:
            return None  # over the limit: BodyLimit answers 413, from the one error table
        secret = secret_of(self.headers, url.query or b"")
        if secret is None:
            return None
        caller = self.ctx.auth.identify_cached(secret)
        stream = self.ctx.streams.cached(match.group(1))
        if caller is None or stream is None:
            return None
        return PublishRequest(caller, stream)

    def _over_limit(self, limit: int) -> bool:
        """uvicorn's own test in `on_headers_complete`."""
        return len(self.connections) >= limit or len(self.tasks) >= limit

    def _publish_now(self, request: PublishRequest, body: bytes) -> list[Message] | None:
        check_access(request.caller, request.stream.id, "publish")
        request.drafts = parse_publish_body(body)
        check_publish_channels(request.caller, request.drafts)
        if not request.drafts:
            return []
        return self.ctx.hub.try_publish_now(request.stream, request.drafts)

    def _hand_over(self, body: bytes) -> None:
        """Give the request, as parsed, to uvicorn and the ASGI app (the parser has not
        moved on: its URL and headers are still this request's)."""
        super().on_headers_complete()
        if self._closing:
            self.cycle.keep_alive = False
        if body:
            super().on_body(body)
        super().on_message_complete()

    def _respond(self, status: int, body: bytes) -> None:
        closing = self._closing
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        for name, value in (*self.server_state.default_headers, JSON_TYPE, *retry_after(status)):
            head += (name, b": ", value, b"\r\n")
        if closing:
            head.append(b"connection: close\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        if self.access_log:
            self._log_access(status)
        if closing:
            self.transport.close()
        self.on_response_complete()  # uvicorn's bookkeeping: keep-alive, next request

    def _log_access(self, status: int) -> None:
        """The line uvicorn's access log writes for a response (`RequestResponseCycle`)."""
        client = f"{self.client[0]}:{self.client[1]}" if self.client else ""
        url = self.url.decode("latin-1")
        self.access_logger.info('%s - "%s %s HTTP/%s" %d', client, "POST", url, "1.1", status)


_NOT_HERE = frozenset({b"transfer-encoding", b"origin", b"idempotency-key"})


def _declared_length(headers: Headers) -> int | None:
    """Content-Length, when it alone frames the body; None too for a request from a
    browser on another origin (`Origin`), whose answer needs the ASGI path's CORS
    headers, and for one with an `Idempotency-Key` (`Hub.publish_once`, on that path)."""
    length = None
    for name, value in headers:
        if name in _NOT_HERE or (name == b"content-length" and length is not None):
            return None
        if name == b"content-length":
            if not value.isdigit():
                return None
            length = int(value)
    return length


def publishing_http(ctx: Context, max_body: int, bounds: Bounds) -> type[PublishingHttp]:
    """A protocol class bound to one node, for `uvicorn.Config(http=...)`."""
    attrs = {"ctx": ctx, "max_body": max_body}
    return type("BoundPublishingHttp", (bounded_http(bounds), PublishingHttp), attrs)


# -- the start-up check ----------------------------------------------------------------

# What PublishingHttp uses of uvicorn's protocol, beyond the asyncio.Protocol methods.
_PROTOCOL_NAMES = (
    "on_message_begin", "on_headers_complete", "on_body", "on_message_complete",
    "on_response_complete", "shutdown", "parser", "url", "headers", "scope",
    "expect_100_continue", "cycle", "transport", "server_state", "limit_concurrency",
    "connections", "tasks", "access_log", "access_logger", "client",
)  # fmt: skip
_PARSER_NAMES = ("get_method", "should_upgrade", "get_http_version", "should_keep_alive")
_CYCLE_NAMES = ("response_complete", "keep_alive")


def fast_path_gaps(config: Any) -> list[str]:
    """What PublishingHttp needs and this uvicorn's protocol lacks (empty: all there).
    Builds one unconnected protocol from the loaded `config`, as uvicorn would."""
    try:
        probe = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        probe.on_message_begin()  # the per-request state exists from here on
    except Exception as exc:
        return [f"HttpToolsProtocol({exc!r})"]
    gaps = [name for name in _PROTOCOL_NAMES if not hasattr(probe, name)]
    if hasattr(probe, "parser"):
        gaps += [f"parser.{n}" for n in _PARSER_NAMES if not hasattr(probe.parser, n)]
    if hasattr(probe, "server_state") and not hasattr(probe.server_state, "default_headers"):
        gaps.append("server_state.default_headers")
    assigned = RequestResponseCycle.__init__.__code__.co_names
    gaps += [f"RequestResponseCycle.{n}" for n in _CYCLE_NAMES if n not in assigned]
    return gaps


def check_fast_path(config: Any) -> bool:
    """True when the fast path can run on this uvicorn; else one log line says why not."""
    gaps = fast_path_gaps(config)
    if gaps:
        log.warning(
            "publish fast path off: this uvicorn's HTTP protocol lacks %s (the ASGI path "
            "serves every publish)",
            ", ".join(gaps),
        )
    return not gaps
