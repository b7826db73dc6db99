"""Server-sent events: the socket's contract over plain HTTP (`EventSource`).

Same arguments as the socket; `Last-Event-ID` resumes strictly after that id. Each
message is an SSE `message` event whose `id` is the message id and whose `data` is the
envelope; `warning`, `replay_end` and `error` are named events with the socket's
payloads. Errors before the stream starts are ordinary HTTP errors.

The subscriber's life is `session.run_session`, as on Socket.IO. Its writes go to a
buffer that one writer task sends; the session waits while more than `_HIGH_WATER`
bytes are unsent, so a client that stops reading is cut off as a slow consumer when
its subscription's backlog overflows."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.types import Receive, Scope, Send

from ..auth import Authenticator, check_access, check_channel, require_stream
from ..config import Settings
from ..credentials import client_address, secret_of
from ..errors import HTTP_STATUS, BloomrError
from ..faults import retry_after
from ..hub import Hub
from ..model import Message, now_ms
from ..replay import AfterId, ReplayRequest, parse_message_id, parse_subscribe_options
from ..streams import Streams
from .base import (
    WARNING_SECONDS,
    WebSocketHandler,
    WebSocketLink,
    WebSocketRefused,
    wait_at_most,
)
from .session import SHUTTING_DOWN, Opened, run_session

KEEPALIVE_SECONDS = 15.0
_HIGH_WATER = 256 * 1024  # bytes not yet sent before the session waits for the client
_FINISH_SECONDS = 5.0  # for the last events to go out once the session has ended
_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_KEEPALIVE = {"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True}


def sse(event: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + data + b"\n\n"


def _message(message: Message, replayed: bool) -> bytes:
    return sse("message", message.envelope_json(replayed), message.id)


def _named(event: str, payload: Any) -> bytes:
    return sse(event, orjson.dumps(payload))


def _resume(request: ReplayRequest | None, last_event_id: str | None) -> ReplayRequest | None:
    """`Last-Event-ID` (sent by EventSource on reconnect) wins over `replay`."""
    message_id = parse_message_id(last_event_id) if last_event_id else None
    if message_id is None:
        return request
    limit = request.limit if request else 10_000
    return ReplayRequest(AfterId(message_id), limit, request.requested if request else None)


class SseTransport:
    """`GET /api/streams/{id}/events`."""

    path = re.compile(r"/api/streams/([^/]+)/events/?$")
    websocket = False
    answers_cors = False  # a client endpoint: the node's CORS layer answers any origin

    def __init__(self, hub: Hub, streams: Streams, auth: Authenticator, settings: Settings) -> None:
        self.hub = hub
        self.streams = streams
        self.auth = auth
        self.stall = settings.bounds.stall_timeout
        self._connections: set[SseConnection] = set()

    @property
    def openapi(self) -> dict[str, Any]:
        return OPENAPI

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            await _http_error(send, BloomrError("method_not_allowed", "Method Not Allowed"))
            return
        try:
            opened = await self._open(scope)
        except BloomrError as exc:
            await _http_error(send, exc)
            return
        connection = SseConnection(send)
        self._connections.add(connection)
        try:
            await connection.serve(self.hub, opened, receive, self.stall)
        finally:
            self._connections.discard(connection)

    async def _open(self, scope: Scope) -> Opened:
        """The route's checks, in its order: credentials (401), the token's scope and
        streams (403), the stream (404), the arguments (400); then register."""
        match = self.path.match(scope["path"])
        assert match is not None
        stream_id = match.group(1)
        secret = secret_of(scope["headers"], scope["query_string"])
        caller = await self.auth.identify(secret, client_address(scope))
        check_access(caller, stream_id, "subscribe")
        query = scope["query_string"].decode("latin-1")
        args = dict(parse_qsl(query, keep_blank_values=True))
        check_channel(caller, args.get("channel"))
        stream = require_stream(await self.streams.get(stream_id), stream_id)
        channel, replay, include_metadata = parse_subscribe_options(args, now_ms())
        replay = _resume(replay, _header(scope, b"last-event-id"))
        sub = self.hub.subscribe(stream.id, channel, caller.token_id, caller.expires_at)
        return Opened(stream, sub, replay, include_metadata)

    def open_websocket(
        self, link: WebSocketLink, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> WebSocketHandler:
        raise WebSocketRefused("server-sent events are plain HTTP")  # `websocket` is False

    async def close(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.stop()
        # a client that reads gets its warning at once; the server's drain gives the
        # others the rest of its time
        await wait_at_most((c.finished() for c in connections), WARNING_SECONDS)


class SseConnection:
    """One event stream: the session's `Client`, and the task that writes it out."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._buffer: list[bytes] = []
        self._unsent = 0  # bytes the session wrote that are not sent yet
        self._wake = asyncio.Event()  # something to send, or the end
        self._room = asyncio.Event()  # _unsent went down to _HIGH_WATER
        self._writer: asyncio.Task[None] | None = None
        self._session: asyncio.Task[None] | None = None
        self._last = False  # the last event is in the buffer
        self._done = asyncio.Event()

    async def serve(self, hub: Hub, opened: Opened, receive: Receive, stall: float) -> None:
        """Run the session until it ends or the client leaves, then finish the response."""
        self._session = session = asyncio.create_task(run_session(hub, opened, self, stall))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((session, gone), return_when=asyncio.FIRST_COMPLETED)
            if not gone.done() and self._writer is not None:
                await asyncio.wait((self._writer, gone), timeout=_FINISH_SECONDS)
        finally:
            for task in (session, gone, self._writer):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            hub.unsubscribe(opened.sub)  # (run_session does, unless cancelled before it ran)
            self._done.set()

    def stop(self) -> None:
        """The server is stopping: `warning` `shutting_down`, then the end of the
        response, after which EventSource reconnects (with `Last-Event-ID`)."""
        if self._session is not None:
            self._session.cancel()
        if not self._last:
            self._write(_named("warning", SHUTTING_DOWN))
            self._finish()

    async def finished(self) -> None:
        await self._done.wait()

    # -- session Client ---------------------------------------------------------------

    async def emit(self, event: str, payload: Any) -> None:
        self._write(_named(event, payload))

    async def send_messages(
        self, messages: list[Message], replayed: bool, include_metadata: bool
    ) -> None:
        self._write(b"".join([_message(m, replayed) for m in messages]))

    @property
    def writable(self) -> bool:
        return self._unsent <= _HIGH_WATER

    async def drained(self) -> None:
        while self._unsent > _HIGH_WATER:
            self._room.clear()
            await self._room.wait()

    def live_sink(self, include_metadata: bool) -> None:
        return None  # live batches come through the session's loop

    async def end(self, event: str, payload: dict[str, Any], hard: bool) -> None:
        if self._writer is None and event == "error":
            # nothing sent yet: an ordinary HTTP error, as before the stream starts
            self._last = True
            await _respond(self._send, HTTP_STATUS[payload["code"]], {"error": payload})
            return
        self._write(_named(event, payload))
        self._finish()

    async def cut(self) -> None:
        self._write(b"")  # the response begins, if it had not yet
        self._finish()  # EventSource reconnects by itself, from the last id it got

    # -- writing ----------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        self._buffer.append(data)
        self._unsent += len(data)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_out())
        self._wake.set()

    def _finish(self) -> None:
        self._last = True
        self._wake.set()

    async def _write_out(self) -> None:
        send = self._send
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        while self._buffer or not self._last:
            if not self._buffer:
                self._wake.clear()
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        await self._wake.wait()
                except TimeoutError:
                    await send(
                        {"type": "http.response.body", "body": _KEEPALIVE, "more_body": True}
                    )
                continue
            chunk = b"".join(self._buffer)
            self._buffer.clear()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            self._unsent -= len(chunk)
            if self._unsent <= _HIGH_WATER:
                self._room.set()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _http_error(send: Send, error: BloomrError) -> None:
    await _respond(send, error.status, {"error": error.payload()})


async def _respond(send: Send, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += retry_after(status)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# The route as the HTTP API's OpenAPI document shows it (FastAPI served it before).
OPENAPI: dict[str, Any] = {
    "/api/streams/{stream_id}/events": {
        "get": {
            "tags": ["messages"],
            "summary": "Events",
            "description": "Live messages as server-sent events, after an optional replay.",
            "operationId": "events_api_streams__stream_id__events_get",
            "security": [{"HTTPBearer": []}],
            "parameters": [
                {
                    "name": "stream_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "title": "Stream Id"},
                }
            ],
            "responses": {
                "200": {
                    "description": "Live messages",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
        }
    }
}
