"""What a subscriber gets before it goes live: the replayed messages, the head seq of
the same snapshot (where live delivery takes over), and notices about the replay.

Notices are plain values; each transport turns them into its `warning` payloads at its
edge (`transports/notices.py`). Pure but for the one broker read."""

from __future__ import annotations

from dataclasses import dataclass, field

from .broker import Broker
from .model import Message, Stream
from .replay import MAX_REPLAY, AfterId, AfterSeq, ReplayRequest


@dataclass(frozen=True, slots=True)
class LimitCapped:
    """The client asked for more than the cap."""

    limit: int
    requested: int


@dataclass(frozen=True, slots=True)
class Truncated:
    """More messages matched than the limit: only the newest are replayed."""

    limit: int
    matched: int
    first_replayed_id: str | None
    backfill_after_id: str | None  # where the omitted ones start (None: the beginning)


@dataclass(frozen=True, slots=True)
class UnknownId:
    """The replay's message id is not in the history: the newest were replayed."""

    id: str


@dataclass(frozen=True, slots=True)
class HistoryDisabled:
    """The stream keeps no history: nothing was replayed."""


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    """A reconnecting client's resume point cannot be honoured exactly: the connection
    goes on as a new one, with its handshake arguments."""

    reason: str


Notice = LimitCapped | Truncated | UnknownId | HistoryDisabled | RecoveryFailed


@dataclass(frozen=True, slots=True)
class Backfill:
    """Messages to send before the replayed ones, read page by page: those of the
    channel after `after_id` (None: from the start) with after_seq < seq < until_seq."""

    after_id: str | None
    after_seq: int
    until_seq: int


@dataclass(slots=True)
class ReplayPlan:
    notices: list[Notice] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    head_seq: int = 0
    epoch: str = ""
    backfill: Backfill | None = None


async def plan_replay(
    broker: Broker, stream: Stream, channel: str, request: ReplayRequest | None
) -> ReplayPlan:
    """Read the replay a subscriber asked for (call after registering it with the hub,
    so that everything newer than the snapshot reaches it live)."""
    plan = ReplayPlan()
    if request is None:
        return plan
    if request.capped:
        assert request.requested is not None
        plan.notices.append(LimitCapped(MAX_REPLAY, request.requested))
    if not stream.store_history:
        plan.notices.append(HistoryDisabled())
        return plan
    window = request.requested if request.start is None else None
    found = await broker.replay(stream.id, channel, request.start, request.limit, window)
    plan.messages, plan.head_seq, plan.epoch = found.messages, found.head_seq, found.epoch
    if found.unknown_id:
        assert isinstance(request.start, AfterId)
        plan.notices.append(UnknownId(request.start.id))
    if found.matched > request.limit:
        first = found.messages[0].id if found.messages else None
        plan.notices.append(Truncated(request.limit, found.matched, first, found.backfill_after_id))
    return plan


async def plan_resume(
    broker: Broker, stream: Stream, channel: str, start: AfterId | AfterSeq
) -> ReplayPlan | RecoveryFailed:
    """Everything of `channel` after a reconnecting client's resume point, however much:
    the newest MAX_REPLAY from one snapshot, what came before them as a backfill."""
    if not stream.store_history:
        return RecoveryFailed("history_disabled")
    found = await broker.replay(stream.id, channel, start, MAX_REPLAY, None)
    if found.unknown_id:
        return RecoveryFailed("history_lost")
    plan = ReplayPlan(messages=found.messages, head_seq=found.head_seq, epoch=found.epoch)
    if found.matched > len(found.messages) and found.messages:
        after_seq = start.seq if isinstance(start, AfterSeq) else 0
        plan.backfill = Backfill(found.backfill_after_id, after_seq, found.messages[0].seq)
    return plan
