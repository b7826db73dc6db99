"""The Socket.IO transport: Socket.IO v5 (default namespace) on bloomr's own
Engine.IO v4 server, built for fan-out.

Connection state recovery (socket.io >= 4.6) is backed by the durable history: the
CONNECT reply carries a signed `pid` (`resume.py`: no process keeps anything), every
`message` event carries the message id as its last argument (the offset), and a client
that reconnects with `{pid, offset}` gets exactly what followed (`session.open_session`).
python-socketio's client knows nothing of it and calls a `message` handler with every
argument, so a one-argument handler would break on the offset: clients are recognised
by the handshake URL python-engineio writes (`transport=` before `EIO=`; socket.io-client
writes `EIO=` first) and get no offsets and no pid; the handshake key `recovery`
(`true`/`false`) decides for any client.

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
from ..replay import merge_handshake, parse_bool
from ..resume import PidSigner
from ..streams import Streams
from ..subscription import Delivery, SlowConsumer
from .base import (
    WARNING_SECONDS,
    WebSocketHandler,
    WebSocketLink,
    WebSocketRefused,
    wait_at_most,
)
from .engineio import EngineConfig, EngineError, EngineServer, EngineSession
from .frames import event_packet, message_frames, message_packet
from .session import SHUTTING_DOWN, Opened, open_session, run_session

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
        bounds = self.bounds = settings.bounds
        config = EngineConfig(
            cors_origins=settings.cors_origins,
            max_backlog=settings.backlog_bytes,
            connect_timeout=bounds.connect_timeout,
            max_unconnected=bounds.max_unconnected,
        )
        self.engine = EngineServer(self._open, config)
        self._connections: set[SocketIOConnection] = set()
        self._signer: PidSigner | None = None

    @property
    def signer(self) -> PidSigner:
        """Signs pids with the deployment's admin key hash, which every node has (a
        cluster node learns it when it connects, after it is built)."""
        if self._signer is None:
            self._signer = PidSigner(self.auth.admin_key_hash)
        return self._signer

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

    __slots__ = ("transport", "session", "query", "task", "connected", "offsets")

    def __init__(
        self, transport: SocketIOTransport, session: EngineSession, query: dict[str, str]
    ) -> None:
        self.transport = transport
        self.session = session
        self.query = query
        self.task: asyncio.Task[None] | None = None
        self.connected = False  # the client has its CONNECT reply
        self.offsets = False  # messages carry their id as a last argument (recovery)

    # -- engine handler ---------------------------------------------------------------

    def on_message(self, data: str) -> None:
        kind = data[:1]
        if kind == "0":
            self._connect(data[1:])
        elif kind == "1" and _split_namespace(data[1:])[0] == "/":
            self.stop_session()  # a DISCONNECT for another namespace leaves this one be
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
        self.session.connected()
        try:
            auth = orjson.loads(auth_json) if auth_json else None
        except orjson.JSONDecodeError:
            self.session.send(b"44" + orjson.dumps({"message": "auth is not valid JSON"}))
            return
        args = merge_handshake(self.query, auth)
        self.task = asyncio.create_task(self._serve(args))

    async def _serve(self, args: dict[str, Any]) -> None:
        transport, hub = self.transport, self.transport.hub
        opened: Opened | BloomrError
        try:
            self.offsets = wants_recovery(args, self.query)
        except BloomrError as exc:
            opened = exc
        else:
            signer = transport.signer if self.offsets else None
            opened = await open_session(
                hub, transport.streams, transport.auth, args, signer, self.session.address
            )
        try:
            reply: dict[str, str] = {"sid": secrets.token_urlsafe(15)}
            if not isinstance(opened, BloomrError) and opened.pid is not None:
                reply["pid"] = opened.pid
            self.session.send(b"40" + orjson.dumps(reply), end_poll=True)
            self.connected = True
        except BaseException:
            if not isinstance(opened, BloomrError):
                hub.unsubscribe(opened.sub)
            raise
        await run_session(hub, opened, self, self.transport.bounds.stall_timeout)

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
        self._check_open()

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None:
        session, offsets = self.session, self.offsets
        if session.ws is not None:
            session.write_frames(message_frames(messages, replayed, include_metadata, offsets))
        else:
            for message in messages:
                session.send(message_packet(message, replayed, include_metadata, offsets))
        self._check_open()

    def _check_open(self) -> None:
        """The engine closed the session while this task wrote (its backlog overflowed):
        end the session here, as nothing else will cancel it."""
        if self.session.closed:
            raise SlowConsumer()

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
        return _WebSocketSink(self.session, include_metadata, self.offsets)

    async def end(self, event: str, payload: dict[str, Any], hard: bool) -> None:
        self.task = None  # closing the session must not cancel the task doing it
        self.session.send(event_packet(event, payload))
        self.session.send(b"41")
        if hard:  # it stopped reading: what is still buffered will never be read
            self.session.close("slow consumer", abort=True)

    async def cut(self) -> None:
        self.task = None
        self.session.close("resume cut short", announce=False)  # no CLOSE: it reconnects


class _WebSocketSink:
    """Live deliveries straight onto a websocket transport, as shared frames."""

    __slots__ = ("session", "key", "include_metadata", "offsets")

    def __init__(self, session: EngineSession, include_metadata: bool, offsets: bool) -> None:
        self.session = session
        self.include_metadata = include_metadata
        self.offsets = offsets
        self.key = ("ws", include_metadata, offsets)

    @property
    def writable(self) -> bool:
        return self.session.writable

    def write(self, delivery: Delivery) -> None:
        if self.session.ws is not None:
            self.session.write_frames(delivery.encoded(self.key, self._encode))

    def _encode(self, messages: list[Message]) -> bytes:
        return message_frames(messages, False, self.include_metadata, self.offsets)


def wants_recovery(args: dict[str, Any], handshake: dict[str, str]) -> bool:
    """Whether a client gets connection state recovery (a pid, offsets): the `recovery`
    handshake key if given, else every client but python-socketio's, whose Engine.IO
    handshake URL puts `transport` before `EIO`."""
    if args.get("recovery") is not None:
        return parse_bool(args["recovery"], "recovery")
    keys = list(handshake)
    return not (
        "transport" in keys and "EIO" in keys and keys.index("transport") < keys.index("EIO")
    )


def _split_namespace(rest: str) -> tuple[str, str]:
    """`/admin,{"a":1}` -> ("/admin", '{"a":1}'); `{"a":1}` -> ("/", '{"a":1}')."""
    if rest.startswith("/"):
        namespace, _, payload = rest.partition(",")
        return namespace, payload
    return "/", rest
