"""`subscribe()`: a channel's messages as an async iterator that resumes by itself.

Each connection is a fresh python-socketio `AsyncClient` with `includeMetadata` (the
ids are the resume points) and the replay arguments the `Cursor` gives: after a drop
it asks `replay=<id of the last message received>`, so the server sends exactly what
came after it. The connection side only queues events, in the order the server sent
them; the iterator side reads the queue, calls `on_warning`, and fetches backfill
gaps over HTTP at their place in the order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .backfill import Gap, next_page
from .cursor import Cursor
from .model import TRANSIENT_ERRORS, BloomrError, BloomrWarning, Message

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("bloomr.client")
# python-socketio's and engine.io's own logs: they print errors such as "packet queue
# is empty, aborting" for drops this client handles itself; lower the level to see them
transport_log = logging.getLogger("bloomr.client.transport")
if transport_log.level == logging.NOTSET:
    transport_log.setLevel(logging.CRITICAL)

CLOSE_TIMEOUT = 1.0  # seconds a disconnect may take before its loops are cancelled

WarningCallback = Callable[[BloomrWarning], Any]


@dataclass(frozen=True)
class _End:
    """The subscription is over: `error` says why, None for a clean end (until_live)."""

    error: BloomrError | None = None


_Item = Message | BloomrWarning | Gap | _End


@dataclass
class Options:
    """How a subscription connects and retries (the defaults suit most uses)."""

    transports: Sequence[str] | None = None  # python-socketio's default: polling, then websocket
    connect_timeout: float = 10.0
    retry_initial: float = 0.5  # seconds before the first reconnection, doubling
    retry_max: float = 5.0
    max_queue: int = 10_000  # messages received but not yet read by the iterator
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Connection:
    """One connection's events. `retired` is set as soon as it ends, so a straggling
    event of it cannot move the cursor after the next handshake was built."""

    ended: asyncio.Event = field(default_factory=asyncio.Event)
    retired: bool = False
    joined: bool = False  # this connection got its replay_end
    fatal: bool = False
    overflow: bool = False


class Subscription:
    """The async iterator `subscribe()` returns; also an async context manager.

    Iterate it for `Message`s; `aclose()` (or leaving `async with`) disconnects."""

    def __init__(
        self,
        url: str,
        stream: str,
        token: str,
        *,
        channel: str = "",
        replay: str | None = None,
        replay_limit: int | None = None,
        on_warning: WarningCallback | None = None,
        backfill: bool = False,
        until_live: bool = False,
        options: Options | None = None,
    ) -> None:
        if replay_limit is not None and replay_limit < 1:
            raise ValueError("replay_limit must be a positive integer")
        self.url = url.rstrip("/")
        self.stream = stream
        self.channel = channel  # the server checks it (error invalid_argument)
        self._token = token
        self._cursor = Cursor(replay or None, replay_limit)
        self._on_warning = on_warning
        self._backfill = backfill
        self._until_live = until_live
        self._options = options or Options()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._backlog: deque[Message] = deque()  # a backfilled page being handed out
        self._gap: Gap | None = None
        self._last_yielded: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._finished = False

    @property
    def live(self) -> bool:
        """True once the first replay phase is over (a `replay_end` came): what is
        published from then on will be delivered, even across drops."""
        return self._cursor.joined

    # -- the iterator side ----------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        self._start()
        while not self._finished:
            if self._backlog:
                return self._hand_out(self._backlog.popleft())
            if self._gap is not None:
                await self._fill_gap(self._gap)
                continue
            item = await self._queue.get()
            if self._queue.qsize() <= self._options.max_queue // 2:
                self._room.set()
            if isinstance(item, Message):
                return self._hand_out(item)
            if isinstance(item, BloomrWarning):
                self._warn(item)
            elif isinstance(item, Gap):
                # after what was handed out last: a repeated truncation (a drop during
                # the replay) then starts where the previous backfill ended
                item.after = self._last_yielded or item.after
                self._gap = item
            else:
                await self.aclose()
                if item.error is not None:
                    raise item.error
        raise StopAsyncIteration

    def _hand_out(self, message: Message) -> Message:
        self._last_yielded = message.id
        return message

    def _warn(self, warning: BloomrWarning) -> None:
        if self._on_warning is None:
            logger.warning("%s: %s", warning.code, warning.message)
        else:
            self._on_warning(warning)

    async def _fill_gap(self, gap: Gap) -> None:
        try:
            page = await next_page(self._http_client(), self.stream, self.channel, gap)
        except BloomrError as exc:
            gap.done = True
            page = []
            self._warn(BloomrWarning("backfill_failed", exc.message, {"error": exc.code}))
        except Exception as exc:  # a network failure: report it, go on
            gap.done = True
            page = []
            self._warn(BloomrWarning("backfill_failed", f"{type(exc).__name__}: {exc}"))
        self._backlog.extend(m for m in page if self._cursor.remember(m.id))
        if gap.done:
            self._gap = None

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            headers = {"Authorization": f"Bearer {self._token}", **self._options.headers}
            self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)
        return self._http

    # -- lifetime ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None and not self._finished:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Disconnect and end the iteration; safe to call more than once."""
        self._finished = True
        self._queue.put_nowait(_End())  # wakes an iterator waiting for the next item
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def __aenter__(self) -> Subscription:
        self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the connection side ----------------------------------------------------------

    async def _run(self) -> None:
        import aiohttp

        # our own HTTP session, closed here: engine.io leaves its own one open after
        # some server-side disconnects
        async with aiohttp.ClientSession() as http:
            await self._connections(http)

    async def _connections(self, http: Any) -> None:
        import socketio

        delay, connected_before, announce = self._options.retry_initial, False, False
        while True:
            await self._room.wait()
            conn = _Connection()
            client = socketio.AsyncClient(
                reconnection=False,
                handle_sigint=False,
                http_session=http,
                logger=transport_log,
                engineio_logger=transport_log,
            )
            self._handlers(client, conn, announce)
            failure: Exception | None = None
            try:
                await self._connect(client)
                connected_before = True
                await self._hold(client, conn)
            except socketio.exceptions.ConnectionError as exc:
                failure = exc
            finally:
                conn.retired = True
                await _close(client)
            if failure is not None:
                if not connected_before:
                    message = f"cannot reach bloomr at {self.url}: {connect_failure(failure)}"
                    self._queue.put_nowait(_End(BloomrError("unreachable", message)))
                    return
                if not announce:  # the drop was a quiet one (overflow): say it now
                    self._lost()
                announce = True
                await self._pause(delay)
                delay = min(delay * 2, self._options.retry_max)
                continue
            if conn.fatal:
                return
            announce = not conn.overflow
            if conn.overflow:
                continue  # resumes once the iterator has made room, no pause, no notice
            self._lost()
            if conn.joined:
                delay = self._options.retry_initial
            await self._pause(delay)
            delay = min(delay * 2, self._options.retry_max)

    async def _connect(self, client: Any) -> None:
        auth = {
            "stream": self.stream,
            "token": self._token,
            "channel": self.channel,
            "includeMetadata": "true",
            **self._cursor.handshake(),
        }
        await client.connect(
            self.url,
            auth=auth,
            headers=self._options.headers,
            transports=list(self._options.transports) if self._options.transports else None,
            wait_timeout=self._options.connect_timeout,
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

    def _lost(self) -> None:
        self._notice("connection_lost", f"connection to {self.url} lost; reconnecting")

    def _notice(self, code: str, message: str) -> None:
        self._queue.put_nowait(BloomrWarning(code, message))

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
            if self._cursor.replay_ended() and self._until_live:
                self._stop(conn, _End())

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
                self._stop(conn, _End(error))

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
        if self._queue.qsize() >= self._options.max_queue:
            # the iterator is behind: stop reading, resume from the cursor later
            conn.overflow = True
            self._room.clear()
            self._retire(conn)
            return
        if self._cursor.accept(message.id, message.replayed):
            self._queue.put_nowait(message)

    def _on_server_warning(self, warning: BloomrWarning) -> None:
        if self._cursor.mutes(warning.code):
            return
        self._queue.put_nowait(warning)
        until = warning.details.get("firstReplayedId")
        if self._backfill and warning.code == "replay_truncated" and isinstance(until, str):
            after = warning.details.get("backfillAfterId")
            self._queue.put_nowait(Gap(after if isinstance(after, str) else None, until))

    def _stop(self, conn: _Connection, end: _End) -> None:
        conn.fatal = True
        self._queue.put_nowait(end)
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


def connect_failure(exc: BaseException) -> str:
    """`connection refused` from `Cannot connect to host ... [Connect call failed ...]`."""
    text = str(exc)
    inner = re.search(r"\[([^\[\]]*)\]\s*$", text)
    if inner is None:
        return text or type(exc).__name__
    reason = inner.group(1)
    return "connection refused" if reason.startswith("Connect call failed") else reason.lower()


def subscribe(
    url: str,
    stream: str,
    token: str,
    *,
    channel: str = "",
    replay: str | None = None,
    replay_limit: int | None = None,
    on_warning: WarningCallback | None = None,
    backfill: bool = False,
    until_live: bool = False,
    options: Options | None = None,
) -> Subscription:
    """The messages of `stream`'s `channel`, in order, each once, across reconnections.

    `replay` (a date, an age such as `"10 min"`, or a message id) and `replay_limit`
    ask for a replay first, as the socket's handshake does; without either, only
    messages published from now on come. A dropped connection (network, server
    restart) is retried with backoff and resumed right after the last message
    received. `on_warning(BloomrWarning)` gets the server's warnings and the client's
    own notices (`connection_lost`, `reconnected`); without it they are logged.
    `backfill=True` fetches over HTTP what a truncated replay left out
    (`replay_truncated`) and delivers it before the replayed messages.
    `until_live=True` ends the iteration after the first replay phase. An `error`
    that will not go away (`unauthorized`, `stream_deleted`, ...) raises
    `BloomrError`; so does a first connection that cannot be made (`unreachable`).

    Example::

        async with subscribe(url, "dwd23RWdwE", "bt_...", replay="1h") as messages:
            async for message in messages:
                print(message.id, message.data)
    """
    return Subscription(
        url,
        stream,
        token,
        channel=channel,
        replay=replay,
        replay_limit=replay_limit,
        on_warning=on_warning,
        backfill=backfill,
        until_live=until_live,
        options=options,
    )
