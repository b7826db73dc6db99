"""Websocket connections, as uvicorn's `ws` protocol class: the one websocket
protocol of the server, handing each connection to the transport of its path.

uvicorn parses the HTTP request and hands an upgrade over to this asyncio protocol.
The handshake and incoming frames (masked, and rare: pongs and the Socket.IO
connect) go through the `websockets` library's sans-I/O parser; outgoing frames are
written by the transport straight to the socket, already built, so one broadcast
frame costs each client a `transport.write` and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, ClassVar, cast
from urllib.parse import parse_qsl

import orjson
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from ..errors import BloomrError
from ..transports import Transports
from ..transports.base import WebSocketHandler, WebSocketRefused

log = logging.getLogger("bloomr.transports")

_MAX_INCOMING = 1 << 20
_GOING_AWAY = 1001


class WebSocket(asyncio.Protocol):
    """One websocket connection; a `WebSocketLink` for its transport. Subclassed per
    server by `protocol_class(transports)`."""

    transports: ClassVar[Transports]
    on_lost: Callable[[], None] | None = None  # the HTTP protocol's, once upgraded

    def __init__(self, config: Any, server_state: Any, app_state: Any = None, **_: Any) -> None:
        self._connections: set[Any] = server_state.connections
        self._conn = ServerProtocol(max_size=_MAX_INCOMING)
        self._transport: asyncio.Transport | None = None
        self._handler: WebSocketHandler | None = None
        self._writable = True
        self._drain: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        for event in self._conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        if self.on_lost is not None:
            self.on_lost()
        self._writable = False
        self._wake_drain()
        handler, self._handler = self._handler, None
        if handler is not None:
            handler.on_closed()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake_drain()

    # -- uvicorn ----------------------------------------------------------------------

    def shutdown(self) -> None:
        """uvicorn is stopping: close as a server going away."""
        self._send_close(_GOING_AWAY)

    # -- WebSocketLink ----------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def address(self) -> str | None:
        peer = None if self._transport is None else self._transport.get_extra_info("peername")
        return str(peer[0]) if peer else None

    @property
    def buffered(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def drained(self) -> None:
        if self._writable:
            return
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain)

    def close(self, abort: bool = False) -> None:
        self._handler = None
        if abort:
            if self._transport is not None:
                self._transport.abort()
            return
        self._send_close(1000)

    # -- internals --------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        path, _, query_string = request.path.partition("?")
        transport = self.transports.for_websocket(path)
        if transport is None:
            self._reject(404, "Not Found")
            return
        response = self._conn.accept(request)
        if response.status_code != 101:
            self._conn.send_response(_as_json(response))
            self._flush()
            self._close_transport()
            return
        self._conn.send_response(response)
        self._flush()
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.raw_items()}
        try:
            self._handler = transport.open_websocket(self, path, query, headers)
        except WebSocketRefused as exc:
            log.debug("websocket refused: %s", exc)
            self._send_close(1008, str(exc))

    def _reject(self, status: int, text: str) -> None:
        self._conn.send_response(_as_json(self._conn.reject(status, text)))
        self._flush()
        self._close_transport()

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT or frame.opcode is Opcode.CONT:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                if self._handler is not None:
                    self._handler.on_text(data.decode("utf-8", "replace"))
        elif frame.opcode is Opcode.CLOSE:
            self._close_transport_later()
        # pings are answered by the sans-I/O protocol itself; binary frames are ignored

    def _flush(self) -> None:
        output = self._conn.data_to_send()
        if output:
            self.write(b"".join(output))
        if self._conn.close_expected() and self._conn.state is State.CLOSED:
            self._close_transport()

    def _send_close(self, code: int, reason: str = "") -> None:
        if self._conn.state is State.OPEN:
            self._conn.send_close(code, reason)
            self._flush()
        self._close_transport_later()

    def _close_transport_later(self) -> None:
        # give the peer a moment to echo the close frame, then drop the connection
        # (aborting it if its buffer still has not drained a moment later)
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, self._close_transport)
        loop.call_later(5.0, self._abort)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _close_transport(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)


def _as_json(response: Response) -> Response:
    """A refused handshake in bloomr's JSON error shape (websockets writes plain text)."""
    code = {404: "not_found", 426: "invalid_argument"}.get(response.status_code)
    error = BloomrError(code or "invalid_argument", response.reason_phrase)
    body = orjson.dumps({"error": error.payload()})
    headers = Headers((k, v) for k, v in response.headers.raw_items() if k.lower() not in _FRAMING)
    headers["Content-Type"] = "application/json"
    headers["Content-Length"] = str(len(body))
    return dataclasses.replace(response, headers=headers, body=body)


_FRAMING = ("content-type", "content-length")


def protocol_class(transports: Transports) -> type[WebSocket]:
    """A protocol class bound to one node's transports, for `uvicorn.Config(ws=...)`."""
    return type("BoundWebSocket", (WebSocket,), {"transports": transports})
