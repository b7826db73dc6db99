"""`Publisher`: publish over the HTTP API in batches, each stored exactly once.

Messages wait in a bounded buffer; one sender posts them in order, a batch (one JSON
array: atomic and contiguous in the stream) at a time, each with its own
`Idempotency-Key`. A batch whose outcome is unknown (5xx, 408, 409, 429, a broken
connection, a timeout) is sent again with the same key and the same body, so the
server stores it once whatever happened to the first attempt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

from .model import BloomrError, check_channel, http_error

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 60.0
T = TypeVar("T")


@dataclass(frozen=True)
class _Retry:
    wait: float  # seconds at least (Retry-After)
    reason: str


@dataclass(frozen=True)
class _Item:
    body: bytes  # `{"channel": ..., "data": ...}`
    future: asyncio.Future[str]


class Publisher:
    """Publishes to one stream with a token that has the `publish` scope.

    Example::

        async with Publisher(url, "dwd23RWdwE", "bt_...") as publisher:
            for i in range(10_000):
                await publisher.publish({"step": i})            # buffered, sent in batches
            message_id = await (await publisher.publish("done"))  # the id, once stored
        # leaving the block flushed everything

    `publish()` waits only while `max_pending` messages are buffered and returns a
    future of the message's id. `flush()` waits until everything published so far
    is stored and raises the first `BloomrError` since the previous flush: a refusal
    (`unauthorized`, `forbidden`, `validation_failed`, ...) or `unavailable` when a
    batch could not be stored within `give_up_after` seconds (None: retry for ever).
    `transport` replaces httpx's (a proxy, a test's `httpx.MockTransport`).
    """

    def __init__(
        self,
        url: str,
        stream: str,
        token: str,
        *,
        batch_size: int = 1000,
        linger: float = 0.005,
        max_batch_bytes: int = 1024 * 1024,
        max_pending: int = 100_000,
        timeout: float = 30.0,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        give_up_after: float | None = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.stream = stream
        self._token = token
        self.batch_size = max(1, batch_size)
        self.linger = linger
        self.max_batch_bytes = max_batch_bytes
        self.max_pending = max(1, max_pending)
        self.timeout = timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.give_up_after = give_up_after
        self._transport = transport  # httpx's own when None
        self._pending: deque[_Item] = deque()
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._failure: BloomrError | None = None
        self._http: httpx.AsyncClient | None = None
        self._sender: asyncio.Task[None] | None = None
        self._closed = False

    # -- the caller's side ------------------------------------------------------------

    async def publish(self, data: Any, channel: str = "") -> asyncio.Future[str]:
        """Queue one message (any JSON value); the future resolves to its id once
        stored, or fails with BloomrError. Raises TypeError for data JSON cannot hold."""
        if self._closed:
            raise RuntimeError("the publisher is closed")
        body = json.dumps(
            {"channel": check_channel(channel), "data": data},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        ).encode()
        while len(self._pending) >= self.max_pending:
            self._room.clear()
            await self._room.wait()
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_mark_retrieved)
        self._pending.append(_Item(body, future))
        self._idle.clear()
        self._wakeup.set()
        self._start()
        return future

    async def flush(self) -> None:
        """Wait until everything published so far is stored (or failed for good)."""
        await self._idle.wait()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def aclose(self) -> None:
        """Flush, then close the connection; raises what flush() raises."""
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            await self._shutdown()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            await self.aclose()
            return
        self._closed = True  # the block failed: do not wait for the buffer
        await self._shutdown()

    async def _shutdown(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        for item in self._pending:
            if not item.future.done():
                item.future.set_exception(BloomrError("closed", "the publisher was closed"))
        self._pending.clear()

    # -- the sender -------------------------------------------------------------------

    def _start(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        import httpx

        # the connection lives in the sender task: when the task ends (aclose, or the
        # event loop cancelling it at its end for a publisher never closed) so does it
        async with httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self._token}"},
            timeout=self.timeout,
            transport=self._transport,
        ) as http:
            self._http = http
            await self._send_batches()

    async def _send_batches(self) -> None:
        while True:
            await self._wakeup.wait()
            if len(self._pending) < self.batch_size and self.linger > 0:
                await asyncio.sleep(self.linger)  # let a burst fill the batch
            batch = self._take()
            try:
                await self._deliver(batch)
            except Exception as exc:  # a bug or a garbled answer: fail the batch, go on
                self._fail(batch, BloomrError("internal", f"{type(exc).__name__}: {exc}"))
            self._in_flight = 0
            if not self._pending:
                self._wakeup.clear()
                self._idle.set()

    def _take(self) -> list[_Item]:
        batch = take_batch(self._pending, self.batch_size, self.max_batch_bytes, _item_cost)
        self._in_flight = len(batch)
        self._room.set()
        return batch

    async def _deliver(self, batch: list[_Item]) -> None:
        """Post one batch until it is stored or refused; a 413 splits it in halves."""
        try:
            ids = await self._post(b"[" + b",".join(item.body for item in batch) + b"]")
        except BloomrError as exc:
            if exc.code == "payload_too_large" and len(batch) > 1:
                half = len(batch) // 2
                await self._deliver(batch[:half])
                await self._deliver(batch[half:])
                return
            self._fail(batch, exc)
            return
        for item, message_id in zip(batch, ids, strict=False):
            if not item.future.done():
                item.future.set_result(message_id)

    def _fail(self, batch: list[_Item], error: BloomrError) -> None:
        self._failure = self._failure or error
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    async def _post(self, body: bytes) -> list[str]:
        """The ids the server gave; retries with the same key until it answers."""
        headers = {"Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}
        path = f"/api/streams/{self.stream}/messages"
        loop = asyncio.get_running_loop()
        started, delay = loop.time(), self.retry_initial
        while True:
            outcome = await self._attempt(path, body, headers)
            if not isinstance(outcome, _Retry):
                return outcome
            if self.give_up_after is not None and loop.time() - started > self.give_up_after:
                raise BloomrError("unavailable", f"publish failed for good: {outcome.reason}")
            await asyncio.sleep(max(outcome.wait, delay * random.uniform(0.5, 1.0)))
            delay = min(delay * 2, self.retry_max)

    async def _attempt(self, path: str, body: bytes, headers: dict[str, str]) -> list[str] | _Retry:
        """The ids when stored, a _Retry when the outcome is unknown; raises
        BloomrError when the server refused for good."""
        import httpx

        try:
            assert self._http is not None
            response = await self._http.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:  # timeouts and broken connections included
            return _Retry(0.0, f"{type(exc).__name__}: {exc}")
        if response.status_code == 201:
            return [str(i) for i in response.json()["ids"]]
        error = http_error(response.status_code, response.content)
        if response.status_code in RETRY_STATUSES or response.status_code >= 500:
            return _Retry(retry_after(response.headers.get("Retry-After")), str(error))
        raise error


def _item_cost(item: _Item) -> int:
    return len(item.body) + 1  # and a comma


def take_batch(pending: deque[T], most: int, max_bytes: int, cost: Callable[[T], int]) -> list[T]:
    """From the front of `pending`: at most `most` items whose `cost`s, in a JSON array
    (`[`, `]`), stay within `max_bytes`; at least one, whatever its size."""
    batch: list[T] = []
    size = 2
    while pending and len(batch) < most:
        item_cost = cost(pending[0])
        if batch and size + item_cost > max_bytes:
            break
        batch.append(pending.popleft())
        size += item_cost
    return batch


def retry_after(value: str | None) -> float:
    """Seconds from a `Retry-After` header (seconds or an HTTP date), at most a minute."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _mark_retrieved(future: asyncio.Future[str]) -> None:
    """Failures are also raised by flush(): a future nobody awaits must not log
    "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()
