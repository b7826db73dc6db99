"""What a subscriber gets before it goes live: the replayed messages, the head seq of
the same snapshot (where live delivery takes over), and notices about the replay.

Notices are plain values; each transport turns them into its `warning` payloads at its
edge (`gateway/notices.py`). Pure but for the one broker read."""

from __future__ import annotations

from dataclasses import dataclass, field

from .broker import Broker
from .model import Message, Stream
from .replay import MAX_REPLAY, AfterId, ReplayRequest


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


Notice = LimitCapped | Truncated | UnknownId | HistoryDisabled


@dataclass(slots=True)
class ReplayPlan:
    notices: list[Notice] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    head_seq: int = 0


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
    plan.messages, plan.head_seq = found.messages, found.head_seq
    if found.unknown_id:
        assert isinstance(request.start, AfterId)
        plan.notices.append(UnknownId(request.start.id))
    if found.matched > request.limit:
        first = found.messages[0].id if found.messages else None
        plan.notices.append(Truncated(request.limit, found.matched, first, found.backfill_after_id))
    return plan
