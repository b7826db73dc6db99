"""What a subscriber gets before it goes live: the replay planned from one snapshot (its
first page, how to read the rest page by page, the head seq of the same snapshot, where
live delivery takes over), and notices about the replay.

Notices are plain values; each transport turns them into its `warning` payloads at its
edge (`transports/notices.py`). Pure but for the one broker read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .broker.base import Broker, HistoryQuery, ReplaySlice
from .broker.base import HistoryGap as HistoryGap  # what a resume's next page may raise
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


@dataclass(slots=True)
class ReplayPlan:
    """A replay planned from one snapshot: its first page (`messages`), how many messages
    it has in all (`count`), and how to read the pages after the first (`next_page`),
    up to the snapshot's `head_seq`, where live delivery takes over."""

    notices: list[Notice] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    head_seq: int = 0
    epoch: str = ""
    count: int = 0
    pages: HistoryQuery | None = None

    def next_page(self, last: Message) -> HistoryQuery:
        """The query of the page after `last`: what is left of the replay after it, up to
        the head seq. Retention may trim the replay's oldest messages between two pages:
        the next page then starts at the oldest that is left (the replay goes on with
        what the history still holds, and hands over to live delivery exactly as
        planned: nothing past the head seq is read, nothing before it comes live); a
        resume's next page raises HistoryGap instead (`plan_resume`)."""
        assert self.pages is not None, "no pages to read"
        return self.pages.after(last, self.epoch)


async def _plan(broker: Broker, query: HistoryQuery, plan: ReplayPlan) -> ReplaySlice:
    found = await broker.replay(query)
    plan.messages, plan.head_seq, plan.epoch = found.messages, found.head_seq, found.epoch
    plan.count = found.count
    plan.pages = replace(query, newest=None, window=None, until_seq=found.head_seq)
    return found


async def plan_replay(
    broker: Broker, stream: Stream, channel: str, request: ReplayRequest | None, page_bytes: int
) -> ReplayPlan:
    """Plan the replay a subscriber asked for, its pages `page_bytes` each (call after
    registering it with the hub, so that everything newer than the snapshot reaches it
    live)."""
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
    query = HistoryQuery(
        stream.id, channel, request.start, max_bytes=page_bytes, newest=request.limit, window=window
    )
    found = await _plan(broker, query, plan)
    if found.unknown_id:
        assert isinstance(request.start, AfterId)
        plan.notices.append(UnknownId(request.start.id))
    if found.matched > request.limit:
        first = found.messages[0].id if found.messages else None
        plan.notices.append(Truncated(request.limit, found.matched, first, found.backfill_after_id))
    return plan


async def plan_resume(
    broker: Broker, stream: Stream, channel: str, start: AfterId | AfterSeq, page_bytes: int
) -> ReplayPlan | RecoveryFailed:
    """Everything of `channel` after a reconnecting client's resume point, however much,
    its pages `page_bytes` each."""
    if not stream.store_history:
        return RecoveryFailed("history_disabled")
    plan = ReplayPlan()
    # exact: each page must follow the one before it, or the resume stops (HistoryGap)
    query = HistoryQuery(stream.id, channel, start, max_bytes=page_bytes, exact=True)
    if (await _plan(broker, query, plan)).unknown_id:
        return RecoveryFailed("history_lost")
    return plan
