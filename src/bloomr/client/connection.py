"""The connection side of a subscription: one python-socketio connection after
another, each asking for what comes after the last message received.

Each connection is a fresh `AsyncClient` with `includeMetadata` (the ids are the
resume points) and the replay arguments the `Cursor` gives. Its event handlers only
queue, in the order the server sent the events; the iterator (`subscribe.py`) reads
the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .backfill import Gap
from .cursor import Cursor
from .model import TRANSIENT_ERRORS, BloomrError, BloomrWarning, Message

# python-socketio's and engine.io's own logs: they print errors such as "packet queue
# is empty, aborting" for drops this client handles itself; lower the level to see them
transport_log = logging.getLogger("bloomr.client.transport")
if transport_log.level == logging.NOTSET:
    transport_log.setLevel(logging.CRITICAL)

CLOSE_TIMEOUT = 1.0  # seconds a disconnect may take before its loops are cancelled


@dataclass
class Options:
    """How a subscription connects and retries (the defaults suit most uses)."""

    transports: Sequence[str] | None = None  # python-socketio's default: polling, then websocket
    connect_timeout: float = 10.0
    retry_initial: float = 0.5  # seconds before the first reconnection, doubling
    retry_max: float = 5.0
    max_queue: int = 10_000  # messages received but not yet read by the iterator
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    """The subscription is over: `error` says why, None for a clean end (until_live)."""

    error: BloomrError | None = None


Item = Message | BloomrWarning | Gap | End


@dataclass
class _Connection:
    """One connection's events. `retired` is set as soon as it ends, so a straggling
    event of it cannot move the cursor after the next handshake was built."""

    ended: asyncio.Event = field(default_factory=asyncio.Event)
    opened: bool = False
    retired: bool = False
    joined: bool = False  # this connection got its replay_end
    fatal: bool = False
    overflow: bool = False
    failure: Exception | None = None


@dataclass
class Target:
    """What to subscribe to."""

    url: str
    stream: str
    token: str
    channel: str


class Connector:
    """Connects, queues what comes, reconnects with backoff; `run()` is its task.

    The queue is bounded by `max_queue`: when the iterator falls that far behind, the
    connection is dropped without a word and resumed once it has read half of it."""

    def __init__(
        self, target: Target, cursor: Cursor, options: Options, *, backfill: bool, until_live: bool
    ) -> None:
        self.target = target
        self.cursor = cursor
        self.options = options
        self.backfill = backfill
        self.until_live = until_live
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.room = asyncio.Event()
        self.room.set()
        self._connected_before = False

    def made_room(self) -> None:
        """The iterator took an item."""
        if self.queue.qsize() <= self.options.max_queue // 2:
            self.room.set()

    async def run(self) -> None:
        import aiohttp

        # our own HTTP session, closed here: engine.io leaves its own one open after
        # some server-side disconnects
        async with aiohttp.ClientSession() as http:
            # aiohttp sends a GET again by itself when its connection breaks (RFC 9112's
            # retry of idempotent requests). For an Engine.IO long-poll that loses what
            # the server had written to the broken connection: a broken poll must end
            # the connection instead, which is then resumed from the last id.
            if hasattr(http, "_retry_connection"):
                http._retry_connection = False
            delay, announce = self.options.retry_initial, False
            while True:
                await self.room.wait()
                conn = await self._connection(http, announce)
                if conn.fatal:
                    return
                if conn.failure is not None and not self._connected_before:
                    reason = connect_failure(conn.failure)
                    message = f"cannot reach bloomr at {self.target.url}: {reason}"
                    self.queue.put_nowait(End(BloomrError("unreachable", message)))
                    return
                if conn.overflow:
                    announce = False  # resumed at once and quietly once there is room
                    continue
                if conn.opened or not announce:
                    self._notice(
                        "connection_lost", f"connection to {self.target.url} lost; reconnecting"
                    )
                announce = True
                if conn.joined:
                    delay = self.options.retry_initial
                await self._pause(delay)
                delay = min(delay * 2, self.options.retry_max)

    async def _connection(self, http: Any, announce: bool) -> _Connection:
        """One connection, from connect to its end."""
        import aiohttp
        import socketio

        conn = _Connection()
        client = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            http_session=http,
            logger=transport_log,
            engineio_logger=transport_log,
        )
        self._handlers(client, conn, announce)
        try:
            await self._connect(client)
            conn.opened = self._connected_before = True
            await self._hold(client, conn)
        except (socketio.exceptions.ConnectionError, aiohttp.ClientError, *_BROKEN) as exc:
            conn.failure = exc
        finally:
            conn.retired = True
            await _close(client)
        return conn

    async def _connect(self, client: Any) -> None:
        auth = {
            "stream": self.target.stream,
            "token": self.target.token,
            "channel": self.target.channel,
            "includeMetadata": "true",
            **self.cursor.handshake(),
        }
        await client.connect(
            self.target.url,
            auth=auth,
            headers=self.options.headers,
            transports=list(self.options.transports) if self.options.transports else None,
            wait_timeout=self.options.connect_timeout,
        )

    async def _hold(self, client: Any, conn: _Connection) -> None:
        """Until the connection ends. python-socketio drops a DISCONNECT that comes
        while `connect()` is still returning, so its Engine.IO state is checked too."""
        while not conn.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.ended.wait(), 1.0)
            if client.eio.state != "connected":
                return

    async def _pause(self, delay: float) -> None:
        """Backoff with jitter, so clients dropped together do not return together."""
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _notice(self, code: str, message: str) -> None:
        self.queue.put_nowait(BloomrWarning(code, message))

    def _handlers(self, client: Any, conn: _Connection, reconnecting: bool) -> None:
        """Plain functions that only queue: they run in the order the server sent the
        events. Every one takes `*args` and ignores extras (a server with connection
        state recovery appends the message id to `message`)."""

        def on_connect(*_: Any) -> None:
            if reconnecting and not conn.retired:
                self._notice("reconnected", "reconnected")

        def on_message(*args: Any) -> None:
            if not conn.retired:
                self._on_message(conn, args[0] if args else None)

        def on_replay_end(*_: Any) -> None:
            if conn.retired:
                return
            conn.joined = True
            if self.cursor.replay_ended() and self.until_live:
                self._stop(conn, End())

        def on_warning(*args: Any) -> None:
            if not conn.retired:
                self._on_server_warning(BloomrWarning.from_payload(args[0] if args else None))

        def on_error(*args: Any) -> None:
            if conn.retired:
                return
            error = BloomrError.from_payload(args[0] if args else None)
            if error.code in TRANSIENT_ERRORS:
                self._notice(error.code, error.message)
                conn.ended.set()  # the server disconnects too; reconnect after a pause
            else:
                self._stop(conn, End(error))

        def on_disconnect(*_: Any) -> None:
            conn.ended.set()

        for name, handler in [
            ("connect", on_connect),
            ("message", on_message),
            ("replay_end", on_replay_end),
            ("warning", on_warning),
            ("error", on_error),
            ("disconnect", on_disconnect),
        ]:
            client.on(name, handler)

    def _on_message(self, conn: _Connection, payload: Any) -> None:
        if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
            return  # not an envelope: nothing to resume from, never sent with metadata
        message = Message.from_envelope(payload)
        if self.queue.qsize() >= self.options.max_queue:
            # the iterator is behind: stop reading, resume from the cursor later
            conn.overflow = True
            self.room.clear()
            self._retire(conn)
            return
        if self.cursor.accept(message.id, message.replayed):
            self.queue.put_nowait(message)

    def _on_server_warning(self, warning: BloomrWarning) -> None:
        if self.cursor.mutes(warning.code):
            return
        self.queue.put_nowait(warning)
        until = warning.details.get("firstReplayedId")
        if self.backfill and warning.code == "replay_truncated" and isinstance(until, str):
            after = warning.details.get("backfillAfterId")
            self.queue.put_nowait(Gap(after if isinstance(after, str) else None, until))

    def _stop(self, conn: _Connection, end: End) -> None:
        conn.fatal = True
        self.queue.put_nowait(end)
        self._retire(conn)

    def _retire(self, conn: _Connection) -> None:
        conn.retired = True
        conn.ended.set()


async def _close(client: Any) -> None:
    """Disconnect without waiting on engine.io's loops: after the server vanished they
    linger until the ping timeout (about 30 s), so they are cancelled instead."""
    import engineio

    eio = client.eio
    loops = [t for t in (eio.read_loop_task, eio.write_loop_task) if t is not None]
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), CLOSE_TIMEOUT)
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    with contextlib.suppress(ValueError):  # its SIGINT handler's list of clients
        engineio.base_client.connected_clients.remove(eio)


# Besides aiohttp.ClientError, what a connection cut in the middle of a reply raises
# from inside python-engineio, which wraps only a failed request in its ConnectionError
# (a polling handshake's body is read unwrapped: a cut after the headers gives
# aiohttp's ClientPayloadError). ValueError: a mangled reply that does not decode.
_BROKEN: tuple[type[Exception], ...] = (OSError, TimeoutError, ValueError)


def connect_failure(exc: BaseException) -> str:
    """`connection refused` from `Cannot connect to host ... [Connect call failed ...]`."""
    text = str(exc)
    inner = re.search(r"\[([^\[\]]*)\]\s*$", text)
    if inner is None:
        return text or type(exc).__name__
    reason = inner.group(1)
    return "connection refused" if reason.startswith("Connect call failed") else reason.lower()
