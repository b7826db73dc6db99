"""One asyncio task per webhook: take the oldest messages of its outbox (up to 100),
POST them as one batch until a 2xx or the end of the retry window, then the next batch.
In order, at least once: a batch leaves the outbox only once it is delivered or dropped,
and the batch in flight is written down (delivery id, seq range, attempts) before its
first attempt, so after a restart it is sent again, the same bytes under the same id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson

from ..model import now_ms, uuid7_ms
from ..store.base import WebhookStore
from ..webhook_model import MAX_BATCH, Batch, DeliveryState, Webhook, new_delivery_id, request_body
from . import guard, signing
from .policy import DEFAULT_POLICY, RetryPolicy

log = logging.getLogger("bloomr.webhooks")

TIMEOUT = 10.0  # seconds for one attempt, from connecting to the response's status
_READ_AT_MOST = 64 * 1024  # of a response body (read to keep the connection reusable)
_ERROR_BODY = 200  # characters of a failed response's body kept in `last_error`
_STORE_RETRY = 1.0  # seconds before trying again after a store error
_EXPIRE_PAGE = 1000  # outbox rows read at a time when dropping expired messages

T = TypeVar("T")


ClientFactory = Callable[[], httpx.AsyncClient]


def new_client(tls: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A webhook's own HTTP client, one connection (it sends one request at a time): a
    slow receiver never holds connections another webhook needs, and a connection made
    (and TLS-verified) for one host name is never reused for another on the same
    address. Pass one shared TLS context: building one costs ~50 ms."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(TIMEOUT),
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        verify=tls,
        follow_redirects=False,  # a redirect could lead anywhere, private included
        trust_env=False,  # no proxy: the address checked is the address called
        # identity: the few bytes of an answer read are never a decompression bomb
        headers={"User-Agent": "bloomr-webhooks", "Accept-Encoding": "identity"},
    )


@dataclass(slots=True)
class Sender:
    """What every worker shares."""

    store: WebhookStore
    clients: ClientFactory
    allow_private: bool
    policy: RetryPolicy = DEFAULT_POLICY
    resolver: guard.Resolver = guard.resolve
    timeout: float = TIMEOUT
    rand: Callable[[], float] = random.random


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int | None  # None: no HTTP answer
    error: str | None  # None: delivered

    @property
    def ok(self) -> bool:
        return self.error is None


class DeliveryWorker:
    def __init__(self, webhook: Webhook, state: DeliveryState, sender: Sender) -> None:
        self.webhook = webhook
        self.state = state
        self._sender = sender
        self._body: bytes | None = None  # of state.batch, once built or reloaded
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._store_call: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"bloomr-webhook-{self.webhook.id}")

    def wake(self) -> None:
        """New messages are in the outbox."""
        self._wake.set()

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop now, even in the middle of an attempt: that batch is sent again (same
        delivery id) when the worker runs next."""
        self.cancel()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        call = self._store_call
        if call is not None and not call.done():
            with contextlib.suppress(Exception):
                await call

    async def _store(self, call: Coroutine[Any, Any, T]) -> T:
        """Run a store call to its end even if the worker is cancelled meanwhile: a SQLite
        transaction (or read snapshot) cut in half at its BEGIN leaves the store's shared
        connection unusable. `stop` waits for it."""
        task = self._store_call = asyncio.ensure_future(call)
        return await asyncio.shield(task)

    async def _run(self) -> None:
        self._client = self._sender.clients()
        try:
            while True:
                try:
                    batch = self.state.batch or await self._next_batch()
                    await self._deliver(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store failed: keep the state in memory, try again
                    log.exception("webhook %s: delivery loop failed", self.webhook.id)
                    await asyncio.sleep(_STORE_RETRY)
        finally:
            await self._client.aclose()

    async def _next_batch(self) -> Batch:
        """The oldest messages waiting (one when there is no backlog), recorded as the
        batch in flight before anything is sent."""
        store = self._sender.store
        while True:
            self._wake.clear()
            rows = await self._store(store.outbox(self.webhook.id, MAX_BATCH))
            if rows and self._expired(rows[0].envelope):
                await self._drop_expired()
                continue
            if rows:
                break
            await self._wake.wait()
        era = rows[0].era
        rows = [row for row in rows if row.era == era]  # an older epoch's items first
        batch = Batch(new_delivery_id(), rows[0].seq, rows[-1].seq, len(rows), now_ms(), era=era)
        self._body = request_body([row.envelope for row in rows])
        self.state.batch = batch
        await self._store(store.save_state(self.webhook.id, self.state))
        return batch

    def _expired(self, envelope: bytes) -> bool:
        """The message has waited longer than the retry window."""
        sent_ms = _message_ms(envelope)
        window_ms = int(self._sender.policy.retry_for * 1000)
        return sent_ms is not None and sent_ms < now_ms() - window_ms

    async def _drop_expired(self) -> None:
        """Give up on the messages that have waited longer than the retry window. Each
        batch is retried for the whole window, so without this an endpoint that stays
        down would hold every message published meanwhile, and the outbox would only
        ever grow; with it, a webhook holds at most about two windows of messages.
        Times never decrease along seq: the expired messages are the oldest."""
        store = self._sender.store
        while True:
            rows = await self._store(store.outbox(self.webhook.id, _EXPIRE_PAGE))
            era = rows[0].era if rows else 0
            expired = 0
            while (
                expired < len(rows)
                and rows[expired].era == era
                and self._expired(rows[expired].envelope)
            ):
                expired += 1
            if not expired:
                return
            log.warning(
                "webhook %s: dropped %d messages older than the retry window",
                self.webhook.id,
                expired,
            )
            self.state.dropped += expired
            self.state.dropped_batches += 1
            last_seq = rows[expired - 1].seq
            await self._store(store.finish_batch(self.webhook.id, era, last_seq, self.state))
            if expired < len(rows) and rows[expired].era == era:
                return  # the rest is younger (in the next era, it may not be: read on)

    async def _reload_body(self, batch: Batch) -> bytes | None:
        store = self._sender.store
        rows = await self._store(
            store.outbox(self.webhook.id, batch.count, (batch.era, batch.first_seq, batch.last_seq))
        )
        return request_body([row.envelope for row in rows]) if rows else None

    async def _deliver(self, batch: Batch) -> None:
        body = self._body if self._body is not None else await self._reload_body(batch)
        if body is None:  # its messages are gone: nothing to send
            await self._finish(batch, delivered=False)
            return
        self._body = body
        while True:
            wait_ms = (batch.next_attempt_ms or 0) - now_ms()
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000)
            outcome = await self._attempt(batch, body)
            self.state.last_attempt_ms = now_ms()
            self.state.last_status, self.state.last_error = outcome.status, outcome.error
            if outcome.ok:
                await self._finish(batch, delivered=True)
                return
            if not await self._failed(batch, outcome):
                return

    async def _failed(self, batch: Batch, outcome: Outcome) -> bool:
        """Schedule the next attempt (True), or drop the batch when its window is over."""
        batch.attempts += 1
        sender = self._sender
        moment = now_ms()
        next_ms = sender.policy.next_attempt_ms(
            batch.attempts, batch.first_attempt_ms, moment, sender.rand()
        )
        if next_ms is None:
            log.warning(
                "webhook %s: dropped %d messages after %d attempts: %s",
                self.webhook.id,
                batch.count,
                batch.attempts,
                outcome.error,
            )
            await self._finish(batch, delivered=False)
            return False
        batch.next_attempt_ms = next_ms
        log.info(
            "webhook %s: attempt %d failed: %s", self.webhook.id, batch.attempts, outcome.error
        )
        await self._store(sender.store.save_state(self.webhook.id, self.state))
        return True

    async def _finish(self, batch: Batch, *, delivered: bool) -> None:
        state = self.state
        if delivered:
            state.delivered += batch.count
            state.last_delivery_ms = state.last_attempt_ms
        else:
            state.dropped += batch.count
            state.dropped_batches += 1
        state.batch, self._body = None, None
        store = self._sender.store
        await self._store(store.finish_batch(self.webhook.id, batch.era, batch.last_seq, state))

    async def _attempt(self, batch: Batch, body: bytes) -> Outcome:
        sender, client = self._sender, self._client
        assert client is not None
        try:
            target = await guard.check(self.webhook.url, sender.allow_private, sender.resolver)
        except guard.UrlRefused as exc:
            return Outcome(None, f"not sent: {exc}")
        timestamp = int(time.time())
        headers = signing.headers(self.webhook.secret, batch.delivery_id, timestamp, body)
        headers |= target.headers
        try:
            async with asyncio.timeout(sender.timeout):
                return await _post(client, target, headers, body)
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(None, f"timed out after {sender.timeout:g} s")
        except Exception as exc:  # any network failure is a failed attempt
            return Outcome(None, _describe(exc))


async def _post(
    client: httpx.AsyncClient, target: guard.Target, headers: dict[str, str], body: bytes
) -> Outcome:
    request = client.build_request(
        "POST", target.url, content=body, headers=headers, extensions=target.extensions
    )
    response = await client.send(request, stream=True)
    try:
        text = await _read_some(response)
    finally:
        await response.aclose()
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(status, None)
    snippet = " ".join(text.split())[:_ERROR_BODY]
    return Outcome(status, f"HTTP {status}" + (f": {snippet}" if snippet else ""))


async def _read_some(response: httpx.Response) -> str:
    """The start of the body; the rest is not read (the connection is then closed)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _READ_AT_MOST:
            break
    return b"".join(chunks).decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    """`ConnectError: connection refused` rather than httpx's `All connection attempts
    failed`: the operating system's reason, when there is one underneath."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return f"{type(exc).__name__}: {seen.strerror.lower()}"
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _message_ms(envelope: bytes) -> int | None:
    """When the message of an outbox envelope was published (its UUIDv7 id's
    millisecond); None when that cannot be told."""
    try:
        message_id = orjson.loads(envelope).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return uuid7_ms(message_id) if isinstance(message_id, str) else None
