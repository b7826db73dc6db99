"""The Socket.IO transport: Socket.IO v5 (default namespace) on bloomr's own
Engine.IO v4 server, built for fan-out.

Live messages to a websocket client that keeps up skip every queue and task: the
hub's delivery is encoded once into websocket frames (the same bytes for every client
with the same options) and written to each transport. A client that falls behind
(its transport pauses writing) gets its messages queued in its bounded Subscription
and written by its session task as the socket drains; past the bound it is a slow
consumer. Polling clients are served from the engine's outbox the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from ..auth import Authenticator
from ..config import Settings
from ..errors import BloomrError
from ..hub import Hub
from ..model import Message
from ..replay import merge_handshake
from ..streams import Streams
from ..subscription import Delivery
from .base import (
    WARNING_SECONDS,
    WebSocketHandler,
    WebSocketLink,
    WebSocketRefused,
    wait_at_most,
)
from .engineio import EngineConfig, EngineError, EngineServer, EngineSession
from .frames import event_packet, message_frames, message_packet
from .session import SHUTTING_DOWN, run_session, try_open_session

log = logging.getLogger("bloomr.transports")

# Bytes a polling client may have waiting before its session task waits for it to poll.
_POLL_HIGH_WATER = 256 * 1024


class SocketIOTransport:
    """`/socket.io/`: Engine.IO long-polling over HTTP, and websockets."""

    path = re.compile(r"/socket\.io(/|$)")
    websocket = True
    answers_cors = True  # Engine.IO answers CORS itself, as socket.io's server does
    openapi: dict[str, Any] = {}

    def __init__(self, hub: Hub, streams: Streams, auth: Authenticator, settings: Settings) -> None:
        self.hub = hub
        self.streams = streams
        self.auth = auth
        self.engine = EngineServer(self._open, EngineConfig(cors_origins=settings.cors_origins))
        self._connections: set[SocketIOConnection] = set()

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.engine.handle_http(scope, receive, send)

    def open_websocket(
        self, link: WebSocketLink, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> WebSocketHandler:
        try:
            return self.engine.attach_websocket(link, query, headers)
        except EngineError as exc:
            raise WebSocketRefused(exc.message) from None

    async def close(self) -> None:
        """Warn, then end each Engine.IO session by closing its transport (a websocket's
        close frame; a polling client's next poll is refused), with neither a Socket.IO
        DISCONNECT (`41`: socket.io-client would not reconnect, "io server disconnect")
        nor an Engine.IO CLOSE (`1`: python-socketio would not). socket.io-client sees
        "transport close" (websocket) or "transport error" (polling), python-socketio
        "transport error", and both reconnect by themselves."""
        connections = list(self._connections)
        tasks = [c.task for c in connections if c.task is not None]
        for connection in connections:
            connection.stop_session()  # nothing after the warning
        warned = [c for c in connections if c.warn_stopping()]
        # a polling client between two polls takes its warning with the next one
        await wait_at_most((c.session.drained(0) for c in warned), WARNING_SECONDS)
        self.engine.close_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _open(
        self, session: EngineSession, query: dict[str, str], headers: dict[str, str]
    ) -> SocketIOConnection:
        connection = SocketIOConnection(self, session, query)
        self._connections.add(connection)
        return connection


class SocketIOConnection:
    """One client: the Socket.IO layer of one Engine.IO session, and the session's
    `Client` (see `session.py`)."""

    __slots__ = ("transport", "session", "query", "task", "connected")

    def __init__(
        self, transport: SocketIOTransport, session: EngineSession, query: dict[str, str]
    ) -> None:
        self.transport = transport
        self.session = session
        self.query = query
        self.task: asyncio.Task[None] | None = None
        self.connected = False  # the client has its CONNECT reply

    # -- engine handler ---------------------------------------------------------------

    def on_message(self, data: str) -> None:
        kind = data[:1]
        if kind == "0":
            self._connect(data[1:])
        elif kind == "1":
            self.stop_session()
        # client events and acks (2, 3) mean nothing to bloomr

    def on_close(self, reason: str) -> None:
        self.stop_session()
        self.transport._connections.discard(self)

    def _connect(self, rest: str) -> None:
        namespace, auth_json = _split_namespace(rest)
        if namespace != "/":
            error = orjson.dumps({"message": "Invalid namespace"})
            self.session.send(b"44" + namespace.encode() + b"," + error)
            return
        if self.task is not None:
            return  # already connected
        try:
            auth = orjson.loads(auth_json) if auth_json else None
        except orjson.JSONDecodeError:
            self.session.send(b"44" + orjson.dumps({"message": "auth is not valid JSON"}))
            return
        args = merge_handshake(self.query, auth)
        self.task = asyncio.create_task(self._serve(args))

    async def _serve(self, args: dict[str, Any]) -> None:
        hub = self.transport.hub
        opened = await try_open_session(hub, self.transport.streams, self.transport.auth, args)
        try:
            sid = secrets.token_urlsafe(15)
            self.session.send(b"40" + orjson.dumps({"sid": sid}), end_poll=True)
            self.connected = True
        except BaseException:
            if not isinstance(opened, BloomrError):
                hub.unsubscribe(opened.sub)
            raise
        await run_session(hub, opened, self)

    def warn_stopping(self) -> bool:
        """Send `warning` `shutting_down`, if connected (True then)."""
        if self.connected:
            self.session.send(event_packet("warning", SHUTTING_DOWN))
        return self.connected

    def stop_session(self) -> None:
        """Cancel the session task (the client left, or the server is stopping)."""
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # -- session Client ---------------------------------------------------------------

    async def emit(self, event: str, payload: Any) -> None:
        self.session.send(event_packet(event, payload))

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None:
        session = self.session
        if session.ws is not None:
            session.ws.write(message_frames(messages, replayed, include_metadata))
        else:
            for message in messages:
                session.send(message_packet(message, replayed, include_metadata))

    @property
    def writable(self) -> bool:
        session = self.session
        if session.ws is not None:
            return session.ws.writable
        return session.outbox_bytes <= _POLL_HIGH_WATER

    async def drained(self) -> None:
        await self.session.drained(_POLL_HIGH_WATER)

    def live_sink(self, include_metadata: bool) -> _WebSocketSink | None:
        if self.session.ws is None:
            return None
        return _WebSocketSink(self.session, include_metadata)

    async def end(self, event: str, payload: dict[str, Any], hard: bool) -> None:
        self.task = None  # closing the session must not cancel the task doing it
        self.session.send(event_packet(event, payload))
        self.session.send(b"41")
        if hard:  # it stopped reading: what is still buffered will never be read
            self.session.close("slow consumer", abort=True)


class _WebSocketSink:
    """Live deliveries straight onto a websocket transport, as shared frames."""

    __slots__ = ("session", "key", "include_metadata")

    def __init__(self, session: EngineSession, include_metadata: bool) -> None:
        self.session = session
        self.include_metadata = include_metadata
        self.key = ("ws", include_metadata)

    @property
    def writable(self) -> bool:
        return self.session.writable

    def write(self, delivery: Delivery) -> None:
        ws = self.session.ws
        if ws is not None:
            ws.write(delivery.encoded(self.key, self._encode))

    def _encode(self, messages: list[Message]) -> bytes:
        return message_frames(messages, False, self.include_metadata)


def _split_namespace(rest: str) -> tuple[str, str]:
    """`/admin,{"a":1}` -> ("/admin", '{"a":1}'); `{"a":1}` -> ("/", '{"a":1}')."""
    if rest.startswith("/"):
        namespace, _, payload = rest.partition(",")
        return namespace, payload
    return "/", rest
