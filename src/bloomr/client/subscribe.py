"""`subscribe()`: a channel's messages as an async iterator that resumes by itself.

The connection side (`connection.Connector`) queues what the server sends, in order,
reconnecting with `replay=<id of the last message received>` after a drop. This side
reads the queue, calls `on_warning`, and fetches backfill gaps over HTTP at their
place in the order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .backfill import Gap, next_page
from .connection import Connector, End, Options, Target
from .cursor import Cursor
from .model import BloomrError, BloomrWarning, Message

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("bloomr.client")

WarningCallback = Callable[[BloomrWarning], Any]
BACKFILL_ATTEMPTS = 5
BACKFILL_RETRY = 0.5  # seconds before the first retry, doubling


@dataclass(frozen=True)
class SubscribeOptions:
    """What a subscription asks for beyond its url, stream and token: the keyword
    arguments of `subscribe()`, checked and held as one value."""

    channel: str = ""
    replay: str | None = None
    replay_limit: int | None = None
    on_warning: WarningCallback | None = None
    backfill: bool = False
    until_live: bool = False
    options: Options | None = None

    def __post_init__(self) -> None:
        if self.replay_limit is not None and self.replay_limit < 1:
            raise ValueError("replay_limit must be a positive integer")


class Subscription:
    """The async iterator `subscribe()` returns; also an async context manager.

    Iterate it for `Message`s; `aclose()` (or leaving `async with`) disconnects."""

    def __init__(self, url: str, stream: str, token: str, wanted: SubscribeOptions) -> None:
        self.url = url.rstrip("/")
        self.stream = stream
        self.channel = wanted.channel  # the server checks it (error invalid_argument)
        self._token = token
        self._cursor = Cursor(wanted.replay or None, wanted.replay_limit)
        self._on_warning = wanted.on_warning
        self._options = wanted.options or Options()
        target = Target(self.url, stream, token, wanted.channel)
        self._connector = Connector(
            target,
            self._cursor,
            self._options,
            backfill=wanted.backfill,
            until_live=wanted.until_live,
        )
        self._queue = self._connector.queue
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
            self._connector.made_room()
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
        """The gap's next page into the backlog; a failure that may pass is retried a
        few times, then (or for any other) the gap is given up with `backfill_failed`."""
        for attempt in range(BACKFILL_ATTEMPTS):
            try:
                page = await next_page(self._http_client(), self.stream, self.channel, gap)
            except Exception as exc:  # the server's refusal, or a network failure
                if attempt + 1 < BACKFILL_ATTEMPTS and _may_pass(exc):
                    await asyncio.sleep(BACKFILL_RETRY * 2**attempt)
                    continue
                self._gap = None
                self._warn(BloomrWarning("backfill_failed", str(exc)))
                return
            self._backlog.extend(m for m in page if self._cursor.remember(m.id))
            if gap.done:
                self._gap = None
            return

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            headers = {"Authorization": f"Bearer {self._token}", **self._options.headers}
            self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)
        return self._http

    # -- lifetime ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._task is None and not self._finished:
            self._task = asyncio.get_running_loop().create_task(self._connector.run())

    async def aclose(self) -> None:
        """Disconnect and end the iteration; safe to call more than once."""
        self._finished = True
        self._queue.put_nowait(End())  # wakes an iterator waiting for the next item
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


def _may_pass(exc: Exception) -> bool:
    """A network failure, a 5xx or a 429: worth another try."""
    if not isinstance(exc, BloomrError):
        return True
    status = exc.details.get("status")
    return isinstance(status, int) and (status >= 500 or status == 429)


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
    wanted = SubscribeOptions(
        channel=channel,
        replay=replay,
        replay_limit=replay_limit,
        on_warning=on_warning,
        backfill=backfill,
        until_live=until_live,
        options=options,
    )
    return Subscription(url, stream, token, wanted)
