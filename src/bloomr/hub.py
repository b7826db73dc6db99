"""The heart of bloomr: publish (order + store + fan out) and subscribe (replay -> live).

Publishing goes through one pipeline task: it takes every publish request waiting and
hands them to the broker as one group (one transaction, one Lua call), which orders,
stores and fans them out. One task means the order messages are stored in is the order
every subscriber sees, without a lock per stream. The broker delivers back to the hub
(`on_messages`), which hands each channel's messages to its subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol, cast

from .activity import Activity
from .broker import Broker
from .control import Control, ControlEvent
from .errors import BloomrError
from .faults import as_error
from .idempotency import Repeat, fingerprint
from .jwt_tokens.revocations import RevokedTokens
from .model import Draft, Message, Stream
from .replay import AfterId, AfterSeq, ReplayRequest
from .replay_plan import RecoveryFailed, ReplayPlan, plan_replay, plan_resume
from .store.base import PAGE_BYTES, AppendBatch, HistoryQuery
from .subscribers import Subscribers
from .subscription import Subscription

log = logging.getLogger("bloomr.hub")

_GROUP_MAX_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    backlog_messages: int = 10_000
    backlog_bytes: int = 16 * 1024 * 1024


class HubListener(Protocol):
    """Told what the hub did, from inside the hub: synchronous and must not block (queue
    the work). Called on the node that did it only, once per event cluster-wide."""

    def on_published(
        self, stream_id: str, epoch: str, messages: list[Message]
    ) -> asyncio.Future[None] | None:
        """Messages just stored (or, without history, ordered) and handed to the broker,
        in the stream's order, every channel, whether or not the stream keeps history,
        with the epoch of the history they went into ("" when the broker does not say).
        Returns what must be done before their publishes are answered (the webhook
        outbox write of a cluster), or None. A broker that publishes on the spot must
        never be answered anything but None."""
        ...

    def on_repeated(
        self, stream_id: str, epoch: str, messages: list[Message]
    ) -> asyncio.Future[None] | None:
        """Messages published before, by a request whose repeat (the same idempotency
        key) is being answered now (see `Repeat.messages`): what must be done before
        the repeat is answered, as for `on_published`, or None. Nothing new was stored
        or delivered."""
        ...

    def on_stream_deleted(self, stream_id: str) -> None: ...


_Outcome = asyncio.Future[list[Message] | Repeat]  # a publish's, once the store answered


class Backpressure(Protocol):
    """A part that must catch up before the hub stores more (the webhook outbox writer,
    while its store fails): no publish is stored while one pushes back."""

    def pushing_back(self) -> bool: ...

    async def room(self) -> None:
        """Returns once it no longer pushes back."""
        ...


class _Listeners:
    """The hub's listeners, each told in turn; a listener's bug never fails a publish."""

    def __init__(self) -> None:
        self._all: list[HubListener] = []

    def add(self, listener: HubListener) -> None:
        self._all.append(listener)

    def published(
        self, stream_id: str, epoch: str, messages: list[Message], repeated: bool = False
    ) -> asyncio.Future[None] | None:
        """What the listeners need done before the publishes are answered (or None)."""
        waits: list[asyncio.Future[None]] = []
        for listener in self._all:
            tell = listener.on_repeated if repeated else listener.on_published
            try:
                wait = tell(stream_id, epoch, messages)
            except Exception:
                log.exception("hub listener %r failed", listener)
                continue
            if wait is not None:
                waits.append(wait)
        if not waits:
            return None
        return waits[0] if len(waits) == 1 else asyncio.ensure_future(_all(waits))

    def deleted(self, stream_id: str) -> None:
        for listener in self._all:
            try:
                listener.on_stream_deleted(stream_id)
            except Exception:
                log.exception("hub listener %r failed", listener)


@dataclass(slots=True)
class _Pending:
    batch: AppendBatch
    future: _Outcome


class Hub:
    def __init__(
        self,
        broker: Broker,
        control: Control,
        limits: Limits | None = None,
        revoked_tokens: RevokedTokens | None = None,
    ) -> None:
        self.broker = broker
        self.control = control
        control.watch(self.on_control)  # first: sessions end before anything else reacts
        self.limits = limits or Limits()
        self._deleted: set[str] = set()  # streams deleted while this node runs
        self.subscribers = Subscribers(
            self.limits.backlog_messages, self.limits.backlog_bytes, revoked_tokens
        )
        self.on_reset = self.subscribers.reset  # BrokerHandler: a history lost
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._committing = False  # the pipeline holds a group it has not fanned out yet
        # publishes with an idempotency key in progress on this node, by (stream, key):
        # a repeat waits for the first to be answered, then asks the store
        self._keyed: dict[tuple[str, str], _Outcome] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners = _Listeners()
        self._pressure: list[Backpressure] = []
        self.activity = Activity()  # rate and last message per stream, for the dashboard

    def add_listener(self, listener: HubListener) -> None:
        self._listeners.add(listener)

    def add_backpressure(self, source: Backpressure) -> None:
        self._pressure.append(source)

    def _pushed_back(self) -> bool:
        return any(source.pushing_back() for source in self._pressure)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self._tasks = [
            asyncio.create_task(self._pipeline(), name="bloomr-publish"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(BloomrError("unavailable", "server is stopping"))
        self._queue.clear()
        for sub in self.subscribers.all():
            sub.close(BloomrError("unavailable", "server is stopping"))
        await self.broker.stop()

    # -- streams ----------------------------------------------------------------------

    async def drop_stream(self, stream_id: str) -> None:
        """A stream was deleted (by the streams service, on this node): refuse its
        publishes, drop its history, tell the listeners."""
        self._deleted.add(stream_id)
        await self.broker.drop(stream_id)
        self._listeners.deleted(stream_id)

    # -- publish ----------------------------------------------------------------------

    async def publish(self, stream: Stream, drafts: list[Draft]) -> list[Message]:
        """Store the drafts as one contiguous batch, then fan them out. Returns once they
        are durable."""
        batch = AppendBatch(stream.id, drafts, stream.store_history)
        return cast(list[Message], await self._submit(batch))  # no key: never a Repeat

    async def publish_once(self, stream: Stream, drafts: list[Draft], key: str) -> list[str]:
        """`publish` under an idempotency key: the ids the drafts got, stored and fanned
        out once per key and stream, whichever node a repeat reaches (the store looks
        the key up atomically with the append). A repeat while the first is in progress
        on this node waits for its answer; another body under a recorded key raises
        BloomrError('idempotency_key_reused')."""
        slot = (stream.id, key)
        while (ahead := self._keyed.get(slot)) is not None and not ahead.done():
            await asyncio.wait([ahead])  # never cancels it: its publisher is waiting too
        if not self._tasks:  # stopped while it waited: no pipeline would take it
            raise BloomrError("unavailable", "server is stopping")
        batch = AppendBatch(stream.id, drafts, stream.store_history, key, fingerprint(drafts))
        future = self._submit(batch)
        self._keyed[slot] = future
        future.add_done_callback(lambda _: self._forget_keyed(slot, future))
        # shielded: one cancelled by its client stays in progress until the store answers
        result = await asyncio.shield(future)
        return result.ids if isinstance(result, Repeat) else [m.id for m in result]

    def _forget_keyed(self, slot: tuple[str, str], future: _Outcome) -> None:
        if self._keyed.get(slot) is future:
            del self._keyed[slot]

    def _submit(self, batch: AppendBatch) -> _Outcome:
        future: _Outcome = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(batch, future))
        self._wakeup.set()
        return future

    @property
    def publishes_on_the_spot(self) -> bool:
        """Whether `try_publish_now` can ever succeed here (a single node)."""
        return self.broker.capabilities.publishes_on_the_spot

    def try_publish_now(self, stream: Stream, drafts: list[Draft]) -> list[Message] | None:
        """`publish`, done before returning, when nothing is ahead of it (no publish
        queued or being stored) and the broker can (`publishes_on_the_spot`). None when
        it cannot be: nothing was stored, use `publish`. Saves a publish the pipeline's
        turn of the loop, which is most of what separates a request from its fan-out."""
        if self._queue or self._committing or stream.id in self._deleted:
            return None
        if self._pressure and self._pushed_back():
            return None
        batch = AppendBatch(stream.id, drafts, stream.store_history)
        results = self.broker.publish_now([batch])
        if results is None:
            return None
        result = results[0]
        if isinstance(result, BloomrError):
            raise result
        assert isinstance(result, list)  # a batch without a key is never a repeat
        wait = self._listeners.published(stream.id, batch.epoch, result)
        assert wait is None, "a broker that publishes on the spot made a publish wait"
        return result

    async def _pipeline(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                for source in self._pressure:  # publishes wait in the queue meanwhile
                    await source.room()
                group = self._take_group()
                self._committing = True
                try:
                    await self._commit(group)
                except Exception as exc:  # keep publishing for everyone else
                    error = as_error(exc, "the publish pipeline")
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(error)
                finally:
                    self._committing = False

    def _take_group(self) -> list[_Pending]:
        group: list[_Pending] = []
        size = 0
        while self._queue and (
            not group or size + len(self._queue[0].batch.drafts) <= _GROUP_MAX_MESSAGES
        ):
            pending = self._queue.pop(0)
            if pending.batch.stream_id in self._deleted:
                pending.future.set_exception(BloomrError("not_found", "stream was deleted"))
                continue
            group.append(pending)
            size += len(pending.batch.drafts)
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        if not group:
            return
        results = await self.broker.publish([p.batch for p in group])
        stored: dict[str, list[Message]] = {}
        epochs: dict[str, str] = {}  # a stream's batches of one group are in one epoch
        for pending, result in zip(group, results, strict=True):
            if isinstance(result, list):  # a Repeat was told about the first time
                batch = pending.batch
                stored.setdefault(batch.stream_id, []).extend(result)
                epochs[batch.stream_id] = batch.epoch or epochs.get(batch.stream_id, "")
        waits: dict[str, asyncio.Future[None]] = {}
        for stream_id, messages in stored.items():
            wait = self._listeners.published(stream_id, epochs[stream_id], messages)
            if wait is not None:
                waits[stream_id] = wait
        for pending, result in zip(group, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BloomrError):
                pending.future.set_exception(result)
            elif isinstance(result, list) and pending.batch.stream_id in waits:
                _answer_after(waits[pending.batch.stream_id], pending.future, result)
            elif isinstance(result, Repeat) and result.messages:
                _answer_repeat(self._listeners, pending, result)
            else:
                pending.future.set_result(result)

    # -- broker handler ------------------------------------------------------------------

    def on_messages(self, stream_id: str, messages: list[Message]) -> None:
        self.subscribers.deliver(stream_id, messages)
        self.activity.record(stream_id, messages)  # the dashboard's figures can wait

    def on_control(self, event: ControlEvent) -> None:
        if event.kind == "token_revoked":
            revoked = event.target
            self.subscribers.end_tokens(lambda token_id: token_id == revoked)
        elif event.kind == "stream_deleted":
            self._deleted.add(event.target)
            self.activity.forget(event.target)
            error = BloomrError("stream_deleted", "the stream was deleted")
            for sub in self.subscribers.of_stream(event.target):
                sub.close(error)

    # -- subscribe --------------------------------------------------------------------

    def subscribe(
        self, stream_id: str, channel: str, token_id: str | None, expires_at: str | None = None
    ) -> Subscription:
        """Register a subscriber; it holds live messages until `go_live`."""
        return self.subscribers.add(stream_id, channel, token_id, expires_at)

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber (calling it again is harmless)."""
        self.subscribers.remove(sub)

    async def plan_replay(
        self, sub: Subscription, stream: Stream, request: ReplayRequest | None
    ) -> ReplayPlan:
        """Plan what `sub` must get before going live (call after `subscribe`)."""
        return await plan_replay(self.broker, stream, sub.channel, request, _page_bytes(sub))

    async def plan_resume(
        self, sub: Subscription, stream: Stream, start: AfterId | AfterSeq
    ) -> ReplayPlan | RecoveryFailed:
        """What a reconnecting subscriber missed after its resume point (call after
        `subscribe`), or why it cannot be told exactly."""
        return await plan_resume(self.broker, stream, sub.channel, start, _page_bytes(sub))

    async def head(self, stream_id: str) -> tuple[int, str]:
        """The stream's last seq and history epoch now (`Broker.head`)."""
        return await self.broker.head(stream_id)

    async def page(self, query: HistoryQuery) -> list[Message]:
        """A page of a channel's history, oldest first (HTTP polling, a replay's pages
        after its first): `Broker.page`."""
        return await self.broker.page(query)


def _page_bytes(sub: Subscription) -> int:
    """A replay's page for `sub`: never more than its connection may have queued."""
    return min(PAGE_BYTES, sub.max_bytes)


async def _all(waits: list[asyncio.Future[None]]) -> None:
    await asyncio.gather(*waits)


def _answer_repeat(listeners: _Listeners, pending: _Pending, repeat: Repeat) -> None:
    """Answer a repeat once the listeners have what its first request published."""
    batch = pending.batch
    wait = listeners.published(batch.stream_id, batch.epoch, repeat.messages, True)
    if wait is None:
        pending.future.set_result(repeat)
    else:
        _answer_after(wait, pending.future, repeat)


def _answer_after(
    wait: asyncio.Future[None], future: _Outcome, result: list[Message] | Repeat
) -> None:
    """Answer `future` with `result` once `wait` is done (without holding up the
    pipeline: later groups are stored meanwhile, and answered in their turn)."""

    def answer(done: asyncio.Future[None]) -> None:
        if future.done():
            return
        if done.cancelled() or done.exception() is not None:
            error = done.exception() if not done.cancelled() else None
            if not isinstance(error, BloomrError):
                error = BloomrError("unavailable", "the webhook outboxes could not be written")
            future.set_exception(error)
        else:
            future.set_result(result)

    wait.add_done_callback(answer)
