"""The native Socket.IO gateway: Socket.IO v5 (default namespace) on bloomr's own
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
import secrets
from typing import Any

import orjson

from ..auth import Authenticator
from ..errors import BloomrError
from ..hub import Hub
from ..model import Message
from ..replay import merge_handshake
from ..streams import Streams
from ..subscription import Delivery
from .engineio import EngineConfig, EngineServer, EngineSession
from .frames import event_packet, message_frames, message_packet
from .session import run_session, try_open_session
from .wsconn import EngineWebSocket, protocol_class

log = logging.getLogger("bloomr.gateway")

# Bytes a polling client may have waiting before its session task waits for it to poll.
_POLL_HIGH_WATER = 256 * 1024


class NativeGateway:
    def __init__(
        self, hub: Hub, streams: Streams, auth: Authenticator, cors_origins: str = "*"
    ) -> None:
        self.hub = hub
        self.streams = streams
        self.auth = auth
        self.engine = EngineServer(self._open, EngineConfig(cors_origins=cors_origins))
        self._connections: set[SocketIOConnection] = set()

    def asgi_app(self) -> Any:
        return self.engine.handle_http

    @property
    def ws_protocol(self) -> type[EngineWebSocket]:
        return protocol_class(self.engine)

    async def close(self) -> None:
        tasks = [c.task for c in self._connections if c.task is not None]
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

    __slots__ = ("gateway", "session", "query", "task")

    def __init__(self, gateway: NativeGateway, session: EngineSession, query: dict[str, str]):
        self.gateway = gateway
        self.session = session
        self.query = query
        self.task: asyncio.Task[None] | None = None

    # -- engine handler ---------------------------------------------------------------

    def on_message(self, data: str) -> None:
        kind = data[:1]
        if kind == "0":
            self._connect(data[1:])
        elif kind == "1":
            self._stop()
        # client events and acks (2, 3) mean nothing to bloomr

    def on_close(self, reason: str) -> None:
        self._stop()
        self.gateway._connections.discard(self)

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
        hub = self.gateway.hub
        opened = await try_open_session(hub, self.gateway.streams, self.gateway.auth, args)
        try:
            sid = secrets.token_urlsafe(15)
            self.session.send(b"40" + orjson.dumps({"sid": sid}), end_poll=True)
        except BaseException:
            if not isinstance(opened, BloomrError):
                hub.unsubscribe(opened.sub)
            raise
        await run_session(hub, opened, self)

    def _stop(self) -> None:
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
