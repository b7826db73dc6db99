"""The Socket.IO gateway: the original service's contract on python-socketio (ASGI).

Each connection runs one session task: authorize, register with the hub, send the
warnings and the replay, `replay_end`, then live messages until the client leaves or
the hub ends the subscription. The gateway never touches the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import parse_qsl

import orjson
import socketio

from ..auth import Authenticator, check_access
from ..errors import BloomrError, warning
from ..hub import Hub
from ..model import Message, Stream, now_ms
from ..replay import merge_handshake, parse_credentials, parse_subscribe_options
from ..subscription import SlowConsumer, Subscription, SubscriptionClosed

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
    def __init__(self, hub: Hub, auth: Authenticator, cors_origins: str = "*") -> None:
        self.hub = hub
        self.auth = auth
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            json=_OrjsonJSON,
            always_connect=True,  # complete the connection so `error` can be emitted
            cors_allowed_origins=cors_origins if cors_origins != "*" else "*",
            logger=False,
            engineio_logger=False,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self._sessions: dict[str, asyncio.Task[None]] = {}

    def asgi_app(self) -> Any:
        return socketio.ASGIApp(self.sio, socketio_path="socket.io")

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
        self._sessions[sid] = asyncio.create_task(self._session(sid, args), name=f"sio-{sid}")
        return True

    async def _on_disconnect(self, sid: str, *_: Any) -> None:
        task = self._sessions.pop(sid, None)
        if task is not None:
            task.cancel()

    # -- the session --------------------------------------------------------------------

    async def _session(self, sid: str, args: dict[str, Any]) -> None:
        sub: Subscription | None = None
        try:
            stream, token_id, expires_at = await self._authorize(args)
            channel, replay, include_metadata = parse_subscribe_options(args, now_ms())
            sub = self.hub.subscribe(stream.id, channel, token_id, expires_at)
            sender = _Sender(self.sio, sid, include_metadata)
            await self._replay_then_live(sub, stream, replay, sender)
        except BloomrError as exc:
            await self._end(sid, "error", exc.payload())
        except SubscriptionClosed as exc:
            await self._end(sid, "error", exc.error.payload())
        except SlowConsumer:
            payload = warning(
                "slow_consumer",
                "this client fell too far behind and is disconnected; reconnect with "
                "replay=<last id> to catch up",
            )
            await self._end(sid, "warning", payload, hard=True)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("socket.io session failed")
            await self._end(sid, "error", {"code": "internal", "message": "internal error"})
        finally:
            if sub is not None:
                self.hub.unsubscribe(sub)

    async def _authorize(self, args: dict[str, Any]) -> tuple[Stream, str | None, str | None]:
        """One answer, `unauthorized`, for every reason a client may not subscribe."""
        stream_id, secret = parse_credentials(args)
        try:
            principal = await self.auth.identify(secret)
            check_access(principal, stream_id, "subscribe")
        except BloomrError as exc:
            raise BloomrError("unauthorized", exc.message) from None
        stream = await self.hub.stream(stream_id)
        if stream is None:
            raise BloomrError("unauthorized", "unknown stream or token not valid for it")
        token = principal.token
        return stream, principal.token_id, token.expires_at if token else None

    async def _replay_then_live(
        self, sub: Subscription, stream: Stream, replay: Any, sender: _Sender
    ) -> None:
        plan = await self.hub.plan_replay(sub, stream, replay)
        for payload in plan.warnings:
            await sender.emit("warning", payload)
        for message in plan.messages:
            await sender.message(message, replayed=True)
        last_id = plan.messages[-1].id if plan.messages else None
        await sender.emit("replay_end", {"count": len(plan.messages), "lastId": last_id})
        sub.go_live(plan.head_seq)
        while True:
            for message in await sub.next_batch():
                await sender.message(message, replayed=False)

    async def _end(self, sid: str, event: str, payload: dict[str, Any], hard: bool = False) -> None:
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


class _Sender:
    """Emits to one client, waiting while Engine.IO's queue for it is long."""

    def __init__(self, sio: socketio.AsyncServer, sid: str, include_metadata: bool) -> None:
        self.sio = sio
        self.sid = sid
        self.include_metadata = include_metadata

    async def emit(self, event: str, payload: Any) -> None:
        await self.sio.emit(event, payload, to=self.sid)
        await self._drain()

    async def message(self, message: Message, replayed: bool) -> None:
        body = message.envelope_json(replayed) if self.include_metadata else message.data_json
        await self.emit("message", orjson.Fragment(body))

    async def _drain(self) -> None:
        eio_sid = self.sio.manager.eio_sid_from_sid(self.sid, "/")
        socket = self.sio.eio.sockets.get(eio_sid) if eio_sid else None
        if socket is not None and socket.queue.qsize() > _HIGH_WATER:
            await socket.queue.join()
