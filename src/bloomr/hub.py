"""The heart of bloomr: publish (order + store + fan out) and subscribe (replay -> live).

Publishing goes through one pipeline task: it takes every publish request waiting,
appends them to the history store in one transaction (group commit), then hands the
ordered messages to the bus in that same order. One task means the order messages are
stored in is the order every subscriber sees, without a lock per stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .activity import Activity
from .bus.base import Bus, ControlEvent
from .bus.local import LocalBus
from .errors import BloomrError, warning
from .model import Draft, Message, Stream, now_ms
from .replay import MAX_REPLAY, AfterId, ReplayRequest, parse_age_ms
from .store.base import AppendBatch, HistoryStore, MetadataStore, ReplaySlice
from .subscription import Delivery, Subscription

log = logging.getLogger("bloomr.hub")

_GROUP_MAX_MESSAGES = 10_000


@dataclass(frozen=True, slots=True)
class Limits:
    backlog_messages: int = 10_000
    backlog_bytes: int = 16 * 1024 * 1024
    trim_interval: float = 30.0


@dataclass(slots=True)
class ReplayPlan:
    """What a new subscriber gets before going live."""

    warnings: list[dict[str, Any]] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    head_seq: int = 0


class HubListener(Protocol):
    """Told what the hub did, from inside the hub: synchronous and must not block (queue
    the work). Called on the node that did it only, once per event cluster-wide."""

    def on_published(self, stream_id: str, messages: list[Message]) -> None:
        """Messages just stored (or, without history, ordered) and handed to the bus,
        in the stream's order, every channel, whether or not the stream keeps history."""
        ...

    def on_stream_deleted(self, stream_id: str) -> None: ...


@dataclass(slots=True)
class _Pending:
    batch: AppendBatch
    future: asyncio.Future[list[Message]]


class Hub:
    def __init__(
        self, meta: MetadataStore, history: HistoryStore, bus: Bus, limits: Limits | None = None
    ) -> None:
        self.meta = meta
        self.history = history
        self.bus = bus
        self.limits = limits or Limits()
        self._streams: dict[str, Stream] = {}
        self._deleted: set[str] = set()
        self._subs: dict[str, dict[str, set[Subscription]]] = {}
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._committing = False  # the pipeline holds a group it has not fanned out yet
        # the bus calls back into this hub at once: a publish can be fanned out on the spot
        self._in_process = isinstance(bus, LocalBus)
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[HubListener] = []
        self._watchers: list[Callable[[ControlEvent], None]] = []
        self._generation = 0  # counts stream_updated events: a read that raced one is not cached
        self.slow_consumers = 0  # subscribers cut off so far
        # tokens revoked while this node runs: a session that authenticated just before
        # the revocation arrived must not outlive it
        self.revoked_tokens: set[str] = set()
        self.activity = Activity()  # rate and last message per stream, for the dashboard

    def add_listener(self, listener: HubListener) -> None:
        self._listeners.append(listener)

    def watch_control(self, watcher: Callable[[ControlEvent], None]) -> None:
        """Call `watcher` with every control event this node hears (from any node,
        this one included), after the hub has acted on it. It must not block."""
        self._watchers.append(watcher)

    async def control(self, event: ControlEvent) -> None:
        """Send a control event to every node."""
        await self.bus.control(event)

    def _tell_published(self, stream_id: str, messages: list[Message]) -> None:
        for listener in self._listeners:
            try:
                listener.on_published(stream_id, messages)
            except Exception:  # a listener's bug never fails a publish
                log.exception("hub listener %r failed", listener)

    def _tell_deleted(self, stream_id: str) -> None:
        for listener in self._listeners:
            try:
                listener.on_stream_deleted(stream_id)
            except Exception:
                log.exception("hub listener %r failed", listener)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start(self)
        self._tasks = [
            asyncio.create_task(self._pipeline(), name="bloomr-publish"),
            asyncio.create_task(self._trimmer(), name="bloomr-trim"),
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
        for sub in list(self._all_subscriptions()):
            sub.close(BloomrError("unavailable", "server is stopping"))
        await self.bus.stop()

    # -- streams ----------------------------------------------------------------------

    def cached_stream(self, stream_id: str) -> Stream | None:
        """A stream by id if this node has it cached (None: ask `stream`)."""
        if stream_id in self._deleted:
            return None
        return self._streams.get(stream_id)

    async def stream(self, stream_id: str) -> Stream | None:
        """A stream by id, from the cache (the metadata store on a miss)."""
        if stream_id in self._deleted:
            return None
        stream = self._streams.get(stream_id)
        if stream is None:
            generation = self._generation
            stream = await self.meta.get_stream(stream_id)
            fresh = generation == self._generation  # no update announced meanwhile
            if stream is not None and fresh and stream_id not in self._deleted:
                self._streams[stream_id] = stream
        return stream

    def stream_updated(self, stream: Stream) -> None:
        """This node's cache only (a stream just created here)."""
        self._deleted.discard(stream.id)
        self._streams[stream.id] = stream

    async def announce_stream(self, stream: Stream) -> None:
        """A stream was changed in the metadata store: every node's cache forgets it
        (this node's is updated at once) and every node's scripts look at it."""
        self.stream_updated(stream)
        await self.bus.control(ControlEvent("stream_updated", stream.id))

    async def delete_stream(self, stream_id: str) -> None:
        """Forget the stream, end its live sessions, drop its history."""
        self._deleted.add(stream_id)
        self._streams.pop(stream_id, None)
        await self.bus.control(ControlEvent("stream_deleted", stream_id))
        await self.history.drop(stream_id)
        self._tell_deleted(stream_id)

    async def revoke_token(self, token_id: str) -> None:
        await self.bus.control(ControlEvent("token_revoked", token_id))

    # -- publish ----------------------------------------------------------------------

    async def publish(self, stream: Stream, drafts: list[Draft]) -> list[Message]:
        """Store the drafts as one contiguous batch, then fan them out. Returns once they
        are durable."""
        future: asyncio.Future[list[Message]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(AppendBatch(stream.id, drafts, stream.store_history), future))
        self._wakeup.set()
        return await future

    @property
    def publishes_on_the_spot(self) -> bool:
        """Whether `try_publish_now` can ever succeed here (a single node)."""
        return self._in_process

    def try_publish_now(self, stream: Stream, drafts: list[Draft]) -> list[Message] | None:
        """`publish`, done before returning, when nothing is ahead of it: no publish
        queued or being stored, a store that can commit on the spot, and subscribers on
        this node only (the in-process bus). None when it cannot be: nothing was stored,
        use `publish`. Saves a publish the pipeline's turn of the loop, which is most of
        what separates a request from its fan-out."""
        if self._queue or self._committing or not self._in_process or stream.id in self._deleted:
            return None
        batch = AppendBatch(stream.id, drafts, stream.store_history)
        results = self.history.try_append_now([batch])
        if results is None:
            return None
        result = results[0]
        if isinstance(result, BloomrError):
            raise result
        self.on_messages(stream.id, result)
        self._tell_published(stream.id, result)
        return result

    async def _pipeline(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                group = self._take_group()
                self._committing = True
                try:
                    await self._commit(group)
                except Exception as exc:  # keep publishing for everyone else
                    log.exception("publish pipeline failed")
                    for pending in group:
                        if not pending.future.done():
                            pending.future.set_exception(BloomrError("internal", str(exc)))
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
        results = await self.history.append([p.batch for p in group])
        stored: dict[str, list[Message]] = {}
        for pending, result in zip(group, results, strict=True):
            if not isinstance(result, BloomrError):
                stored.setdefault(pending.batch.stream_id, []).extend(result)
        # One fan-out per stream for the whole group: publishes that queued up while the
        # loop was busy reach each subscriber in one write, not one write each, which is
        # what lets a node (and its clients) catch up after a stall.
        for stream_id, messages in stored.items():
            await self.bus.publish(stream_id, messages)
            self._tell_published(stream_id, messages)
        for pending, result in zip(group, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BloomrError):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    # -- bus handler ------------------------------------------------------------------

    def on_messages(self, stream_id: str, messages: list[Message]) -> None:
        self.activity.record(stream_id, messages)
        channels = self._subs.get(stream_id)
        if not channels:
            return
        for channel, run in _by_channel(messages):
            subs = channels.get(channel)
            if subs:
                delivery = Delivery(run)
                for sub in subs:
                    sub.deliver(delivery)

    def on_control(self, event: ControlEvent) -> None:
        if event.kind == "token_revoked":
            self.revoked_tokens.add(event.target)
            error = BloomrError("token_revoked", "the token was revoked")
            for sub in self._all_subscriptions():
                if sub.token_id == event.target:
                    sub.close(error)
        elif event.kind == "stream_deleted":
            self._deleted.add(event.target)
            self._streams.pop(event.target, None)
            self.activity.forget(event.target)
            error = BloomrError("stream_deleted", "the stream was deleted")
            for subs in self._subs.get(event.target, {}).values():
                for sub in subs:
                    sub.close(error)
        elif event.kind == "stream_updated":
            self._generation += 1
            self._streams.pop(event.target, None)
        for watcher in self._watchers:
            try:
                watcher(event)
            except Exception:
                log.exception("control watcher %r failed", watcher)

    # -- subscribe --------------------------------------------------------------------

    def subscribe(
        self, stream_id: str, channel: str, token_id: str | None, expires_at: str | None = None
    ) -> Subscription:
        """Register a subscriber; it holds live messages until `go_live`."""
        sub = Subscription(
            stream_id,
            channel,
            token_id,
            max_messages=self.limits.backlog_messages,
            max_bytes=self.limits.backlog_bytes,
        )
        self._subs.setdefault(stream_id, {}).setdefault(channel, set()).add(sub)
        if token_id is not None and token_id in self.revoked_tokens:
            sub.close(BloomrError("token_revoked", "the token was revoked"))
        if expires_at is not None:
            self._expire_later(sub, expires_at)
        return sub

    def occupancy(self, stream_id: str) -> dict[str, int]:
        """Live subscribers of a stream on this node (every transport), by channel."""
        return {channel: len(subs) for channel, subs in self._subs.get(stream_id, {}).items()}

    @property
    def subscription_count(self) -> int:
        return sum(len(subs) for channels in self._subs.values() for subs in channels.values())

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget a subscriber (calling it again is harmless)."""
        if sub.expiry is not None:
            sub.expiry.cancel()
        channels = self._subs.get(sub.stream_id, {})
        subs = channels.get(sub.channel)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if sub.overflowed:
            self.slow_consumers += 1
        if not subs:
            del channels[sub.channel]
            if not channels:
                del self._subs[sub.stream_id]

    def _expire_later(self, sub: Subscription, expires_at: str) -> None:
        delay = datetime.fromisoformat(expires_at).timestamp() * 1000 - now_ms()
        error = BloomrError("unauthorized", "the token expired")
        sub.expiry = asyncio.get_running_loop().call_later(max(delay, 0) / 1000, sub.close, error)

    async def plan_replay(
        self, sub: Subscription, stream: Stream, request: ReplayRequest | None
    ) -> ReplayPlan:
        """Read what `sub` must get before going live (call after `subscribe`)."""
        plan = ReplayPlan()
        if request is None:
            return plan
        if request.capped:
            plan.warnings.append(
                warning(
                    "replay_limit_capped",
                    f"replayLimit is capped at {MAX_REPLAY}",
                    limit=MAX_REPLAY,
                    requested=request.requested,
                )
            )
        if not stream.store_history:
            plan.warnings.append(
                warning("history_disabled", "this stream does not store history: nothing to replay")
            )
            return plan
        window = request.requested if request.start is None else None
        found = await self.history.replay(
            stream.id, sub.channel, request.start, request.limit, window
        )
        plan.messages, plan.head_seq = found.messages, found.head_seq
        if found.unknown_id:
            assert isinstance(request.start, AfterId)
            plan.warnings.append(
                warning(
                    "unknown_message_id",
                    "that message id is not in this stream's history: replaying the newest "
                    "messages instead",
                    id=request.start.id,
                )
            )
        if found.matched > request.limit:
            plan.warnings.append(_truncated(request.limit, found.matched, found))
        return plan

    def _all_subscriptions(self) -> Iterator[Subscription]:
        for channels in self._subs.values():
            for subs in channels.values():
                yield from subs

    # -- retention --------------------------------------------------------------------

    async def _trimmer(self) -> None:
        while True:
            await asyncio.sleep(self.limits.trim_interval)
            try:
                await self.trim_all()
            except Exception:
                log.exception("trimming history failed")

    async def trim_all(self) -> None:
        for stream in await self.meta.list_streams():
            age = parse_age_ms(stream.retention.max_age)
            min_ts = now_ms() - age if age is not None else 0
            await self.history.trim(stream.id, min_ts, stream.retention.max_messages)


def _by_channel(messages: list[Message]) -> list[tuple[str, list[Message]]]:
    """Each channel's messages, in order (one channel in the common case). A subscriber
    hears one channel, so how channels interleave means nothing to it."""
    channel = messages[0].channel
    if all(m.channel == channel for m in messages):
        return [(channel, messages)]
    runs: dict[str, list[Message]] = {}
    for message in messages:
        runs.setdefault(message.channel, []).append(message)
    return list(runs.items())


def _truncated(limit: int, matched: int, found: ReplaySlice) -> dict[str, Any]:
    return warning(
        "replay_truncated",
        f"{matched} messages match, only the newest {limit} are replayed",
        limit=limit,
        matched=matched,
        omitted=matched - limit,
        firstReplayedId=found.messages[0].id if found.messages else None,
        backfillAfterId=found.backfill_after_id,
    )
