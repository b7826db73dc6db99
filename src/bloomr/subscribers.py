"""This node's subscribers, by stream and channel: registration, delivery of what the
broker hands over, and ending them (a revoked token, a deleted stream, an expiry)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime

from .errors import BloomrError
from .jwt_tokens.revocations import RevokedTokens
from .model import Message, now_ms
from .subscription import Delivery, Subscription
from .throttle import ConnectionCount


class Subscribers:
    def __init__(
        self, backlog_messages: int, backlog_bytes: int, revoked_tokens: RevokedTokens | None
    ) -> None:
        self._backlog = (backlog_messages, backlog_bytes)
        # tokens revoked while this node runs (kept by the streams service): a session
        # that authenticated just before the revocation arrived must not outlive it
        self._revoked = RevokedTokens() if revoked_tokens is None else revoked_tokens
        # by stream and channel, in the order they subscribed (a dict as an ordered set):
        # the fan-out writes to the earliest subscriber first, as Node's socket.io does
        self._subs: dict[str, dict[str, dict[Subscription, None]]] = {}
        self.slow_consumers = 0  # subscribers cut off so far
        self.per_token = ConnectionCount(0)  # live subscribers per token (0: no limit)
        self.changed: Callable[[str], None] = _nothing  # told a stream's count changed

    def add(
        self, stream_id: str, channel: str, token_id: str | None, expires_at: str | None
    ) -> Subscription:
        """Register a subscriber; it holds live messages until `go_live`. `rate_limited`
        when its token has as many live subscribers as it may."""
        if not self.per_token.acquire(token_id):
            raise BloomrError("rate_limited", "this token has too many live connections")
        max_messages, max_bytes = self._backlog
        sub = Subscription(
            stream_id, channel, token_id, max_messages=max_messages, max_bytes=max_bytes
        )
        self._subs.setdefault(stream_id, {}).setdefault(channel, {})[sub] = None
        self.changed(stream_id)
        if token_id is not None and self._revoked.revokes(token_id):
            sub.close(BloomrError("token_revoked", "the token was revoked"))
        if expires_at is not None:
            _expire_later(sub, expires_at)
        return sub

    def end_tokens(self, revoked: Callable[[str], bool]) -> None:
        """End (`token_revoked`) every subscriber whose token id `revoked` names."""
        error = BloomrError("token_revoked", "the token was revoked")
        for sub in self.all():
            if sub.token_id is not None and revoked(sub.token_id):
                sub.close(error)

    def end_revoked(self) -> None:
        """End every subscriber whose token is in the revoked set."""
        self.end_tokens(self._revoked.revokes)

    def remove(self, sub: Subscription) -> None:
        """Forget a subscriber (calling it again is harmless)."""
        if sub.expiry is not None:
            sub.expiry.cancel()
        channels = self._subs.get(sub.stream_id, {})
        subs = channels.get(sub.channel)
        if subs is None or sub not in subs:
            return
        del subs[sub]
        self.changed(sub.stream_id)
        self.per_token.release(sub.token_id)
        if sub.overflowed:
            self.slow_consumers += 1
        if not subs:
            del channels[sub.channel]
            if not channels:
                del self._subs[sub.stream_id]

    def deliver(self, stream_id: str, messages: list[Message]) -> None:
        """Each channel's part of a contiguous run to that channel's subscribers, as one
        delivery they share (its encodings are built once)."""
        channels = self._subs.get(stream_id)
        if not channels:
            return
        for channel, run in _by_channel(messages):
            subs = channels.get(channel)
            if subs:
                delivery = Delivery(run)
                for sub in subs:
                    sub.deliver(delivery)

    def reset(self, stream_id: str, epoch: str) -> None:
        """The stream's history was lost and began again in `epoch`: every subscriber of
        it, on every channel, is warned (`history_reset`) where it happened and goes on
        with the new history's messages (`Subscription.reset`)."""
        for sub in self.of_stream(stream_id):
            sub.reset(epoch)

    def of_stream(self, stream_id: str) -> Iterator[Subscription]:
        for subs in list(self._subs.get(stream_id, {}).values()):
            yield from list(subs)

    def all(self) -> Iterator[Subscription]:
        for stream_id in list(self._subs):
            yield from self.of_stream(stream_id)

    def occupancy(self, stream_id: str) -> dict[str, int]:
        """Live subscribers of a stream on this node (every transport), by channel."""
        return {channel: len(subs) for channel, subs in self._subs.get(stream_id, {}).items()}

    def occupancies(self) -> dict[str, dict[str, int]]:
        """`occupancy` of every stream with live subscribers on this node."""
        return {stream_id: self.occupancy(stream_id) for stream_id in self._subs}

    @property
    def count(self) -> int:
        return sum(len(subs) for channels in self._subs.values() for subs in channels.values())


def _nothing(stream_id: str) -> None:
    pass


def _expire_later(sub: Subscription, expires_at: str) -> None:
    delay = datetime.fromisoformat(expires_at).timestamp() * 1000 - now_ms()
    error = BloomrError("unauthorized", "the token expired")
    sub.expiry = asyncio.get_running_loop().call_later(max(delay, 0) / 1000, sub.close, error)


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
