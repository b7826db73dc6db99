"""Engine.IO v4, server side: sessions over HTTP long-polling and websocket, the
polling -> websocket upgrade, and the server's ping.

Polling requests arrive as ASGI HTTP requests (`handle_http`); websockets arrive as a
raw connection (`attach_websocket`, from the server's websocket protocol), so that
packets for a websocket session are written straight to its socket as ready-made frames.
The layer above (Socket.IO) sees a session as `send(packet)` plus a `Handler`."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from ..credentials import client_address
from ..faults import retry_after
from .base import WebSocketHandler, WebSocketLink
from .frames import ws_frame

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0", "1", "2", "3", "4", "5", "6"
SEPARATOR = b"\x1e"
# python-engineio's client refuses a payload of more than 16 packets (its
# max_decode_packets); the rest waits for the next poll, which comes at once.
_POLL_MAX_PACKETS = 16
_END_POLL = b""  # an outbox marker, by identity: the polling response ends here
_TEXT = [(b"content-type", b"text/plain; charset=UTF-8")]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    max_payload: int = 1_000_000
    cors_origins: str = "*"
    # Everything queued for one session (a websocket's send buffer, a polling outbox:
    # pongs and replies included) counts against this; past it the session is closed.
    max_backlog: int = 16 * 1024 * 1024
    connect_timeout: float = 10.0  # to complete the layer above's handshake
    max_unconnected: int = 1000  # sessions that have not completed it, at most


class Handler(Protocol):
    """The layer above, one per session."""

    def on_message(self, data: str) -> None: ...
    def on_close(self, reason: str) -> None: ...


OpenHandler = Callable[["EngineSession", dict[str, str], dict[str, str]], Handler]


class EngineError(Exception):
    """A request Engine.IO refuses. The body keeps the reference server's numeric
    `{code, message}` (clients written against it read them) and adds bloomr's own
    `error` object, so the one error shape is there too; a 503 says `Retry-After`."""

    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self) -> bytes:
        error = {"code": _ERROR_CODES[self.status], "message": self.message}
        return orjson.dumps({"code": self.code, "message": self.message, "error": error})


# bloomr's code for each status an Engine.IO refusal is answered with
_ERROR_CODES = {400: "invalid_argument", 413: "payload_too_large", 503: "unavailable"}


class EngineSession:
    __slots__ = (
        "sid", "server", "handler", "ws", "probe", "outbox", "outbox_bytes",
        "closed", "_poll", "_polled", "_ping_timer", "_pong_timer", "_connect_timer",
        "address",
    )  # fmt: skip

    def __init__(self, server: EngineServer, sid: str, address: str | None = None) -> None:
        self.sid = sid
        self.address = address  # the client's (failed authentications count per address)
        self.server = server
        self.handler: Handler | None = None
        self.ws: WebSocketLink | None = None  # the transport, once on websocket
        self.probe: WebSocketLink | None = None  # a websocket being upgraded to
        self.outbox: list[bytes] = []  # packets waiting for the next poll
        self.outbox_bytes = 0
        self.closed = False
        self._poll: asyncio.Future[None] | None = None
        self._polled = asyncio.Event()
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._connect_timer: asyncio.TimerHandle | None = None  # until `connected()`

    # -- sending ----------------------------------------------------------------------

    def send(self, packet: bytes, *, end_poll: bool = False) -> None:
        """Send one Engine.IO packet (its type byte first). `end_poll` makes it the
        last packet of its polling response: some clients (python-socketio's) drop a
        namespace DISCONNECT that arrives in the same payload as the CONNECT reply."""
        if self.closed:
            return
        if self.ws is not None:
            self.write_frames(ws_frame(packet))
        else:
            self.outbox.append(packet)
            self.outbox_bytes += len(packet)
            if end_poll:
                self.outbox.append(_END_POLL)
            self._wake_poll()
            self._check_backlog(self.outbox_bytes)

    def write_frames(self, frames: bytes) -> None:
        """Write websocket frames already built (the session is on websocket)."""
        ws = self.ws
        if ws is None or self.closed:
            return
        ws.write(frames)
        self._check_backlog(ws.buffered)

    def _check_backlog(self, queued: int) -> None:
        """A client that lets more than the backlog pile up (say, by sending pings with
        large payloads and never reading the pongs) is cut off."""
        if queued > self.server.config.max_backlog:
            self.close("slow consumer", abort=True, announce=False)

    @property
    def writable(self) -> bool:
        return not self.closed and self.ws is not None and self.ws.writable

    async def drained(self, high_water: int) -> None:
        """Wait while this client's outgoing buffer is full."""
        if self.ws is not None:
            if not self.ws.writable:
                await self.ws.drained()
            return
        while self.outbox_bytes > high_water and not self.closed and self.ws is None:
            self._polled.clear()
            await self._polled.wait()

    # -- polling ----------------------------------------------------------------------

    async def poll(self) -> bytes:
        """The body of a long-polling GET: the waiting packets, or the next ones."""
        if self._poll is not None:
            self.close("transport error")
            raise EngineError(3, "Bad request")
        if not self.outbox and not self.closed:
            self._poll = asyncio.get_running_loop().create_future()
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._poll,
                        self.server.config.ping_interval + self.server.config.ping_timeout,
                    )
            finally:
                self._poll = None
        packets = self._take_for_poll()
        self._polled.set()
        return SEPARATOR.join(packets) if packets else NOOP.encode()

    def _take_for_poll(self) -> list[bytes]:
        try:
            end = self.outbox.index(_END_POLL, 0, _POLL_MAX_PACKETS + 1)
        except ValueError:
            end = min(len(self.outbox), _POLL_MAX_PACKETS)
            packets, self.outbox = self.outbox[:end], self.outbox[end:]
        else:
            packets, self.outbox = self.outbox[:end], self.outbox[end + 1 :]
        self.outbox_bytes -= sum(len(p) for p in packets)
        return packets

    def _wake_poll(self) -> None:
        if self._poll is not None and not self._poll.done():
            self._poll.set_result(None)

    def receive_payload(self, body: bytes) -> None:
        for packet in body.split(SEPARATOR):
            if packet:
                self.receive(packet.decode("utf-8", "replace"), None)

    # -- receiving --------------------------------------------------------------------

    def receive(self, packet: str, link: WebSocketLink | None) -> None:
        kind, data = packet[:1], packet[1:]
        if kind == MESSAGE:
            if self.handler is not None:
                self.handler.on_message(data)
        elif kind == PONG:
            self._pong()
        elif kind == PING:
            reply = (PONG + data).encode()
            if link is not None and link is self.probe:
                link.write(ws_frame(reply))
                if link.buffered > self.server.config.max_backlog:
                    link.close(abort=True)  # pinged and never read: the probe is dropped
                self.send(NOOP.encode())  # ends the pending poll so the client can pause it
            else:
                self.send(reply)
        elif kind == UPGRADE and link is not None and link is self.probe:
            self.use_websocket(link)
        elif kind == CLOSE:
            self.close("client close")

    def use_websocket(self, link: WebSocketLink) -> None:
        """From now on send over `link`, starting with whatever waited for a poll."""
        self.probe = None
        self.ws = link
        packets = [p for p in self.outbox if p is not _END_POLL]
        self.outbox, self.outbox_bytes = [], 0
        if packets:
            self.write_frames(b"".join(ws_frame(p) for p in packets))
        self._wake_poll()
        self._polled.set()

    # -- liveness ---------------------------------------------------------------------

    def start_pinging(self) -> None:
        loop = asyncio.get_running_loop()
        self._ping_timer = loop.call_later(self.server.config.ping_interval, self._ping)

    def _ping(self) -> None:
        self.send(PING.encode())
        loop = asyncio.get_running_loop()
        self._pong_timer = loop.call_later(
            self.server.config.ping_timeout, self.close, "ping timeout"
        )

    def _pong(self) -> None:
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self.start_pinging()

    def await_connect(self) -> None:
        """The layer above's handshake must complete within the configured time."""
        loop = asyncio.get_running_loop()
        timeout = self.server.config.connect_timeout
        self._connect_timer = loop.call_later(timeout, self.close, "connect timeout")
        self.server.unconnected.add(self.sid)

    def connected(self) -> None:
        """The layer above completed its handshake."""
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.server.unconnected.discard(self.sid)

    # -- closing ----------------------------------------------------------------------

    def close(self, reason: str, abort: bool = False, announce: bool = True) -> None:
        """End the session; `abort` drops the connection without flushing its buffer.
        `announce` sends the CLOSE packet first; without it, the client sees its
        transport end, as when a server goes away."""
        if self.closed:
            return
        if announce:
            self.send(CLOSE.encode())
        self.closed = True
        for timer in (self._ping_timer, self._pong_timer, self._connect_timer):
            if timer is not None:
                timer.cancel()
        self.server.sessions.pop(self.sid, None)
        self.server.unconnected.discard(self.sid)
        self._wake_poll()
        self._polled.set()
        for link in (self.ws, self.probe):
            if link is not None:
                link.close(abort)
        if self.handler is not None:
            self.handler.on_close(reason)

    def link_closed(self, link: WebSocketLink) -> None:
        if link is self.probe:
            self.probe = None
        elif link is self.ws:
            self.close("transport close", abort=True)


class _WebSocketEnd:
    """A session's side of one of its websockets (its transport, or a probe)."""

    __slots__ = ("session", "link")

    def __init__(self, session: EngineSession, link: WebSocketLink) -> None:
        self.session = session
        self.link = link

    def on_text(self, data: str) -> None:
        self.session.receive(data, self.link)

    def on_closed(self) -> None:
        self.session.link_closed(self.link)


class EngineServer:
    def __init__(self, on_open: OpenHandler, config: EngineConfig | None = None) -> None:
        self.on_open = on_open
        self.config = config or EngineConfig()
        self.sessions: dict[str, EngineSession] = {}
        self.unconnected: set[str] = set()  # sessions whose handshake above is pending

    def _open(
        self,
        query: dict[str, str],
        headers: dict[str, str],
        upgrades: list[str],
        address: str | None,
    ) -> EngineSession:
        if len(self.unconnected) >= self.config.max_unconnected:
            raise EngineError(3, "Too many sessions waiting to connect", status=503)
        sid = secrets.token_urlsafe(15)
        session = EngineSession(self, sid, address)
        self.sessions[sid] = session
        handshake = {
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": int(self.config.ping_interval * 1000),
            "pingTimeout": int(self.config.ping_timeout * 1000),
            "maxPayload": self.config.max_payload,
        }
        session.send(OPEN.encode() + orjson.dumps(handshake))
        session.handler = self.on_open(session, query, headers)
        session.await_connect()
        session.start_pinging()
        return session

    def close_all(self) -> None:
        """The server is stopping: end every session without a CLOSE packet. After a
        CLOSE (reason "server disconnect") python-socketio does not reconnect; after
        its transport ends (a websocket closed, a poll refused) every client does."""
        for session in list(self.sessions.values()):
            session.close("server shutting down", announce=False)

    # -- websocket --------------------------------------------------------------------

    def attach_websocket(
        self, link: WebSocketLink, query: dict[str, str], headers: dict[str, str]
    ) -> WebSocketHandler:
        """A websocket opened: a new session, or the upgrade of a polling one."""
        _check_version(query)
        sid = query.get("sid")
        if sid is None:
            session = self._open(query, headers, [], link.address)
            session.use_websocket(link)
            return _WebSocketEnd(session, link)
        found = self.sessions.get(sid)
        if found is None:
            raise EngineError(1, "Session ID unknown")
        if found.ws is not None or found.probe is not None:
            raise EngineError(3, "Bad request")
        found.probe = link
        return _WebSocketEnd(found, link)

    # -- HTTP long-polling ------------------------------------------------------------

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        cors = self._cors(headers.get("origin"))
        if scope["type"] != "http":
            return
        if scope["method"] == "OPTIONS":
            await _respond(send, 204, b"", cors + _PREFLIGHT)
            return
        try:
            body = await self._polling(scope, receive, headers)
        except EngineError as exc:
            head = cors + [(b"content-type", b"application/json"), *retry_after(exc.status)]
            await _respond(send, exc.status, exc.body(), head)
            return
        await _respond(send, 200, body, cors + _TEXT)

    async def _polling(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> bytes:
        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        _check_version(query)
        if query.get("transport") != "polling":
            raise EngineError(0, "Transport unknown")
        sid = query.get("sid")
        method = scope["method"]
        if sid is None:
            if method != "GET":
                raise EngineError(2, "Bad handshake method")
            session = self._open(query, headers, ["websocket"], client_address(scope))
            return await session.poll()
        session_ = self.sessions.get(sid)
        if session_ is None:
            raise EngineError(1, "Session ID unknown")
        if session_.ws is not None:
            raise EngineError(3, "Bad request")
        if method == "GET":
            return await session_.poll()
        if method == "POST":
            session_.receive_payload(await _read_body(receive, self.config.max_payload))
            return b"ok"
        raise EngineError(2, "Bad request method")

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        allowed = self.config.cors_origins
        if allowed != "*" and origin not in allowed.split(","):
            return []
        if origin:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin"),
            ]
        return [(b"access-control-allow-origin", b"*")]


_PREFLIGHT = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type, authorization"),
    (b"access-control-max-age", b"86400"),
]


def _check_version(query: dict[str, str]) -> None:
    if query.get("EIO") != "4":
        raise EngineError(5, "Unsupported protocol version")


async def _read_body(receive: Receive, limit: int) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise EngineError(3, "Bad request")
        body += message.get("body", b"")
        if len(body) > limit:
            raise EngineError(3, "Payload too large", status=413)
        if not message.get("more_body", False):
            return bytes(body)


async def _respond(send: Send, status: int, body: bytes, headers: list[Any]) -> None:
    headers = headers + [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
