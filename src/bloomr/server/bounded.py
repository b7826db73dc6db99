"""uvicorn's httptools protocol with the node's bounds on what a client may make it
hold (SPEC §3 "Availability and limits"): a request head of at most `max_head_bytes`
(431), a request's head and body within `request_timeout` (408, then closed: a
slowloris connection never lives long), at most `max_per_address` connections per
client address (429), and the HTTP layer's own refusals in the JSON error shape.

httptools keeps a header it has not finished reading in its own buffer, so the head is
measured here, as the bytes arrive, not in the parser's callbacks."""

from __future__ import annotations

import asyncio
import http
from typing import Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..bounds import Bounds
from ..errors import BloomrError
from ..throttle import ConnectionCount


class BoundedHttp(HttpToolsProtocol):  # type: ignore[misc]
    """One HTTP connection. Bound to a node by `bounded_http` (or a subclass's)."""

    bounds: ClassVar[Bounds]
    addresses: ClassVar[ConnectionCount]
    _head_open = True  # the next bytes are a request head
    _head_bytes = 0
    _turns = 0  # heads and requests read so far (were the bytes fed all head?)
    _deadline: asyncio.TimerHandle | None = None
    _address: str | None = None
    _counted = False  # this connection counts against its address
    _refused = False  # over the address's limit: answered 429 at its first request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = None if not self.client else str(self.client[0])
        self._counted = self.addresses.acquire(self._address)
        self._refused = not self._counted
        self._arm()  # a new connection has the same time to send its first request

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._uncount()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._refuse(BloomrError("rate_limited", "too many connections from this address"))
            return
        if self._head_open and self._deadline is None:
            self._arm()
        turns = self._turns
        super().data_received(data)
        all_head = self._turns == turns and self._head_open
        if all_head and self.parser is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.bounds.max_head_bytes:
                limit = self.bounds.max_head_bytes
                self._refuse(BloomrError("header_too_large", f"request head is over {limit} bytes"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self.head_done()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.request_read()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        """The websocket protocol takes the connection, and its place in the count."""
        self._disarm()
        super().handle_websocket_upgrade()
        protocol: Any = self.transport.get_protocol()
        if self._counted and hasattr(protocol, "on_lost"):
            address, addresses = self._address, self.addresses
            protocol.on_lost = lambda: addresses.release(address)
            self._counted = False

    def send_400_response(self, msg: str) -> None:
        self._refuse(BloomrError("invalid_argument", "invalid HTTP request"))

    # -- the bounds -------------------------------------------------------------------

    def head_done(self) -> None:
        """The head is read (call again harmlessly): the body's turn, same deadline."""
        if self._head_open:
            self._turns += 1
        self._head_open = False
        self._head_bytes = 0
        if self.parser is not None and self.parser.should_upgrade():
            self._disarm()

    def request_read(self) -> None:
        """The whole request is in: no deadline while the app answers it."""
        self._disarm()
        self._turns += 1
        self._head_open = True

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.bounds.request_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        """The request did not arrive in time: 408 if it had begun and nothing answers
        it yet, then the connection is closed either way."""
        self._deadline = None
        began = not self._head_open or self._head_bytes > 0
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if began and not answering:
            timeout = self.bounds.request_timeout
            self._refuse(BloomrError("request_timeout", f"request not received in {timeout:g} s"))
        else:
            self.transport.close()

    def _refuse(self, error: BloomrError) -> None:
        """Answer `error` (JSON, as every error of bloomr's) and close the connection."""
        body = orjson.dumps({"error": error.payload()})
        status = error.status
        head = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-type: application/json\r\nconnection: close\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        if not self.transport.is_closing():
            self.transport.write(b"".join(head) + body)
            self.transport.close()
        self._disarm()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.addresses.release(self._address)


def bounded_http(bounds: Bounds) -> type[BoundedHttp]:
    """A protocol class bound to one node's bounds, for `uvicorn.Config(http=...)`."""
    attrs = {"bounds": bounds, "addresses": ConnectionCount(bounds.max_per_address)}
    return type("BoundBoundedHttp", (BoundedHttp,), attrs)
