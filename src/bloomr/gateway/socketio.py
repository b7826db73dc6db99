"""The Socket.IO gateway on python-socketio (ASGI): the reference implementation of
the contract, kept beside the native one (`gateway/native.py`) to compare against.

Each connection runs one session task (`session.run_session`). The gateway never
touches the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qsl

import orjson
import socketio

from ..auth import Authenticator
from ..errors import BloomrError
from ..hub import Hub
from ..model import Message
from ..replay import merge_handshake
from ..streams import Streams
from .session import Opened, run_session, try_open_session

log = logging.getLogger("bloomr.gateway")

# Above this many packets waiting in Engine.IO's per-client queue, the session waits
# for the client to drain it; our own bounded Subscription queue then absorbs (and
# detects) a client that cannot keep up.
_HIGH_WATER = 256
_DISCONNECT_GRACE = 2.0


class _OrjsonJSON:
    """The `json` module python-socketio uses, backed by orjson. Pre-encoded message
    bodies travel as `orjson.Fragment`s, so they are never decoded and re-encoded."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        return orjson.loads(s)


class SocketIOGateway:
    def __init__(
        self, hub: Hub, streams: Streams, auth: Authenticator, cors_origins: str = "*"
    ) -> None:
        self.hub = hub
        self.streams = streams
        self.auth = auth
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            json=_OrjsonJSON,
            # the connect handler registers the subscriber before python-socketio confirms
            # the connection; refusals are confirmed too, then get `error` and a disconnect
            always_connect=False,
            cors_allowed_origins=cors_origins if cors_origins != "*" else "*",
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self._sessions: dict[str, asyncio.Task[None]] = {}

    def asgi_app(self) -> Any:
        return socketio.ASGIApp(self.sio, socketio_path="socket.io")

    @property
    def ws_protocol(self) -> None:
        return None  # websockets come through ASGI

    async def close(self) -> None:
        tasks = list(self._sessions.values())
        self._sessions.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- socket.io handlers -------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        args = merge_handshake(query, auth)
        opened = await try_open_session(self.hub, self.streams, self.auth, args)
        task = asyncio.create_task(self._session(sid, opened), name=f"sio-{sid}")
        self._sessions[sid] = task
        return True

    async def _on_disconnect(self, sid: str, *_: Any) -> None:
        task = self._sessions.pop(sid, None)
        if task is not None:
            task.cancel()

    # -- the session --------------------------------------------------------------------

    async def _session(self, sid: str, opened: Opened | BloomrError) -> None:
        # python-socketio queues its CONNECT reply right after this handler returns,
        # without yielding; one more turn of the loop makes sure it goes first
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            if not isinstance(opened, BloomrError):
                self.hub.unsubscribe(opened.sub)
            raise
        await run_session(self.hub, opened, _Client(self, sid))

    async def _end(self, sid: str, event: str, payload: dict[str, Any], hard: bool) -> None:
        """Emit why, then disconnect (the client learns the reason before it goes).
        `hard` also closes the Engine.IO connection: a client that stopped reading would
        otherwise hold its queue until the ping timeout."""
        self._sessions.pop(sid, None)  # our own disconnect must not cancel this task
        eio_sid = self.sio.manager.eio_sid_from_sid(sid, "/")
        try:
            await self.sio.emit(event, payload, to=sid)
            await asyncio.wait_for(self.sio.disconnect(sid), _DISCONNECT_GRACE)
            if hard and eio_sid is not None:
                await asyncio.wait_for(self.sio.eio.disconnect(eio_sid), _DISCONNECT_GRACE)
        except Exception:  # the client may already be gone
            log.debug("disconnecting %s failed", sid, exc_info=True)


class _Client:
    """A python-socketio connection as a session `Client`: emits one by one, waiting
    while Engine.IO's queue for it is long."""

    def __init__(self, gateway: SocketIOGateway, sid: str) -> None:
        self.gateway = gateway
        self.sio = gateway.sio
        self.sid = sid

    async def emit(self, event: str, payload: Any) -> None:
        await self.sio.emit(event, payload, to=self.sid)

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None:
        for message in messages:
            body = message.envelope_json(replayed) if include_metadata else message.data_json
            await self.emit("message", orjson.Fragment(body))

    def live_sink(self, include_metadata: bool) -> None:
        return None  # python-socketio owns the socket: every message goes through emit

    async def end(self, event: str, payload: dict[str, Any], hard: bool) -> None:
        await self.gateway._end(self.sid, event, payload, hard)

    def _queue(self) -> Any:
        eio_sid = self.sio.manager.eio_sid_from_sid(self.sid, "/")
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        return socket.queue if socket is not None else None

    @property
    def writable(self) -> bool:
        queue = self._queue()
        return queue is None or queue.qsize() <= _HIGH_WATER

    async def drained(self) -> None:
        queue = self._queue()
        if queue is not None:
            await queue.join()
