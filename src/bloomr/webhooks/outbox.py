"""The outbox writer: sees that what the hub publishes is in the outboxes of the webhooks
that want it, in the stream's order, before the publish is acknowledged, and never drops
a write.

Where the outbox is written with the publish (the embedded store: webhooks and history
in one SQLite file, one transaction; `store/sqlite_outbox.py`), a crash can no longer
separate the two, and the writer only wakes the workers of the webhooks that got items.

In a cluster the history is in Redis and the outboxes in PostgreSQL, which share no
transaction. The hub tells the writer of every publish (synchronously, in the stream's
order) and the writer answers at once from its routes cache (`routes.py`): a stream
without webhooks wanting those channels is not queued and its publish not delayed (most
publishes). Otherwise the publish is queued and the writer hands back a future: the hub
answers the publish only once its items are in PostgreSQL, so a message acknowledged by
a publish is in every outbox it belongs to, and a node killed right after its 201 loses
no delivery. One task writes the queue, in order, one transaction per run of publishes,
reading each stream's routes when the cache did not know them. A write that fails (the
store is down, locked, full) is tried again, with a growing pause, until it lands; the
publishes waiting on it are answered then.

Bounded memory: while more than `max_pending` bytes of published messages wait to be
written, the writer pushes back (`pushing_back`, `room`): the hub stores no new publish
until the queue is under the bound again. Why push back rather than spill the queue to
disk: the outbox lives in the store that is failing, and a spill file would be a second
store to keep, recover and fill up; a publisher slowed by an outage of the store its
webhooks need is told so by its own latency, and nothing acknowledged is lost.

A clean stop drains the writer (bounded) after the scripts have stopped, so it loses
nothing unless the store is down then. What is left: messages stored in Redis whose
publish was never acknowledged (the node died between the Redis append and the
PostgreSQL write) may miss the webhooks unless the publish is repeated under its
Idempotency-Key (the hub then hands the repeat's rebuilt messages to `published` again
before answering it). A webhook made on another node applies here once its
`webhooks_changed` event arrives, or within the cache's ttl if that event is lost."""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..errors import BloomrError
from ..model import Message
from ..store.base import OutboxItem, Routes, WebhookStore
from .routes import RoutesCache, wanted

log = logging.getLogger("bloomr.webhooks")

MAX_PENDING_BYTES = 64 * 1024 * 1024
_DATA_JSON = operator.attrgetter("data_json")
_FIRST_PAUSE, _LONGEST_PAUSE = 0.1, 5.0  # seconds between tries of a failing write


@dataclass(frozen=True, slots=True)
class _Enqueue:
    stream_id: str
    epoch: str
    messages: list[Message]
    size: int
    landed: asyncio.Future[None] | None  # answered once written (None: stored already)
    hooks: tuple[str, ...] = ()  # stored already: the webhooks whose workers to wake


@dataclass(frozen=True, slots=True)
class _DropStream:
    stream_id: str
    size: int = 0
    landed: None = None


_Op = _Enqueue | _DropStream
Written = Callable[[set[str], set[str]], Awaitable[None]]  # (webhook ids, stream ids)
Dropping = Callable[[str], Awaitable[None]]  # a stream's webhooks are about to be deleted


class OutboxWriter:
    def __init__(
        self,
        store: WebhookStore,
        written: Written,
        dropping: Dropping,
        max_pending: int = MAX_PENDING_BYTES,
    ) -> None:
        self._store = store
        self._written = written  # told after items were added: wake their deliverers
        self._dropping = dropping
        self._max_pending = max_pending
        self.routes = RoutesCache(store)
        self._ops: list[_Op] = []
        self._pending = 0  # bytes of messages queued or being written
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._write(), name="bloomr-webhook-outbox")

    async def drain(self, timeout: float) -> None:
        """Write what is queued (for `timeout` seconds at most), then stop."""
        self._closing = True
        self._work.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, timeout)
        except TimeoutError:
            log.error("webhook outboxes: %d bytes of messages not written at stop", self._pending)
        self._task = None
        for op in self._ops:
            if op.landed is not None and not op.landed.done():
                op.landed.set_exception(BloomrError("unavailable", "server is stopping"))
        self._ops.clear()
        self._pending = 0
        self._room.set()
        await self.routes.close()

    # -- queueing (the hub's listener calls) --------------------------------------------

    def published(
        self, stream_id: str, epoch: str, messages: list[Message]
    ) -> asyncio.Future[None] | None:
        """A future the publish's answer must wait for, or None when it need not."""
        if self._closing:
            return None
        routes = self.routes.get(stream_id)
        if routes is not None:
            if not routes:  # no webhook on the stream: most publishes end here
                return None
            hooks = wanted(routes, {m.channel for m in messages})
            if not hooks:
                return None
            if self._store.outbox_with_history:  # in the outboxes already: wake them
                self._queue(_Enqueue(stream_id, epoch, messages, 0, None, tuple(hooks)))
                return None
        # Message.size for each, in C loops
        size = 128 * len(messages) + sum(map(len, map(_DATA_JSON, messages)))
        landed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Enqueue(stream_id, epoch, messages, size, landed))
        return landed

    def stream_deleted(self, stream_id: str) -> None:
        if not self._closing:  # else the next start deletes its webhooks
            self._queue(_DropStream(stream_id))

    def _queue(self, op: _Op) -> None:
        self._ops.append(op)
        self._pending += op.size
        if self._pending > self._max_pending:
            self._room.clear()
        self._work.set()

    # -- backpressure -------------------------------------------------------------------

    def pushing_back(self) -> bool:
        return not self._room.is_set()

    async def room(self) -> None:
        """Returns once the queue is under its bound."""
        await self._room.wait()

    # -- writing ------------------------------------------------------------------------

    async def _write(self) -> None:
        """Apply queued operations in order; return once closing and nothing is left."""
        while True:
            if not self._ops:
                if self._closing:
                    return
                await self._work.wait()
                self._work.clear()
                continue
            ops, self._ops = self._ops, []
            for run in _runs(ops):
                await self._until_written(run)
                for op in run:
                    if op.landed is not None and not op.landed.done():
                        op.landed.set_result(None)
                self._pending -= sum(op.size for op in run)
                if self._pending <= self._max_pending:
                    self._room.set()

    async def _until_written(self, run: list[_Op]) -> None:
        pause = _FIRST_PAUSE
        failures = 0
        while True:
            try:
                await self._apply(run)
                if failures:
                    log.warning("webhook outbox write landed after %d failures", failures)
                return
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.exception("webhook outbox write failed: trying again until it lands")
                else:
                    log.warning("webhook outbox write failed again (%d): %s", failures, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _LONGEST_PAUSE)

    async def _apply(self, run: list[_Op]) -> None:
        # writes shielded: a store transaction cut at its BEGIN by a cancellation (a stop
        # that timed out) would leave the store's connection unusable
        first = run[0]
        if isinstance(first, _DropStream):
            await asyncio.shield(self._drop(first.stream_id))
            return
        enqueues = [op for op in run if isinstance(op, _Enqueue)]
        stored = [op for op in enqueues if op.landed is None]
        items = await self._items([op for op in enqueues if op.landed is not None])
        added: int = await asyncio.shield(self._store.enqueue(items)) if items else 0
        hooks = {item.webhook_id for item in items} if added else set()
        for op in stored:  # written with the publish: their workers only need waking
            hooks.update(op.hooks)
        if hooks:
            await self._written(hooks, {op.stream_id for op in run})

    async def _items(self, run: list[_Enqueue]) -> list[OutboxItem]:
        """What the run adds to the outboxes."""
        items: list[OutboxItem] = []
        routes: dict[str, Routes] = {}
        for op in run:
            if op.stream_id not in routes:
                routes[op.stream_id] = await self.routes.load(op.stream_id)
            for webhook_id, channel in routes[op.stream_id]:
                items.extend(
                    OutboxItem(webhook_id, m.seq, m.envelope_json(None), op.epoch)
                    for m in op.messages
                    if m.channel == channel
                )
        return items

    async def _drop(self, stream_id: str) -> None:
        await self._dropping(stream_id)
        for record in await self._store.list_webhooks(stream_id):
            await self._store.delete_webhook(record.webhook.id)


def _runs(ops: list[_Op]) -> list[list[_Op]]:
    """Consecutive enqueues together (one transaction), each stream drop on its own."""
    runs: list[list[_Op]] = []
    for op in ops:
        if runs and isinstance(op, _Enqueue) and isinstance(runs[-1][0], _Enqueue):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs
