"""Storage contracts. Every backend (sqlite now; postgres and redis for a cluster)
implements these and passes the same conformance tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

from ..errors import BloomrError
from ..idempotency import Repeat
from ..jwt_tokens.revocations import JwtRevocation
from ..model import Draft, Message, Stream, Token
from ..replay import AfterSeq, ReplayStart
from ..runner.spec import ScriptReport
from ..webhook_model import DeliveryState, Webhook, WebhookRecord


@dataclass(slots=True)
class AppendBatch:
    """One publish request: all of `drafts` are stored atomically and contiguously.

    With a `key` (an Idempotency-Key, with the `fingerprint` of the drafts), the store
    looks the key up and records it in the same atomic step as the append: a key it
    holds with the same fingerprint gets `Repeat` (nothing stored, nothing fanned out),
    with another fingerprint BloomrError('idempotency_key_reused'); a new one is
    stored, and remembered with its ids for `idempotency.KEY_TTL_MS` (at most the
    newest `idempotency.KEYS_PER_STREAM` keys of a stream). A batch without drafts is
    never recorded."""

    stream_id: str
    drafts: list[Draft]
    keep: bool  # False when the stream does not store history: ordered, never written
    key: str | None = None
    fingerprint: str = ""
    # set by a history that tells it (Redis) once the batch is stored: the epoch of the
    # history it went into, which the webhook outboxes key their items by
    epoch: str = ""


# one batch's outcome: stored (or, without history, ordered), a repeat, or refused
Appended = list[Message] | Repeat | BloomrError


class HistoryGap(Exception):
    """An exact read (`HistoryQuery.exact`) found messages after its start trimmed away
    since the read began."""


# What one read of a channel's history returns at most, unless its query says less: a
# page. A replay is read a page at a time, each when the client took the one before,
# so what a replaying connection holds is about a page, whatever the replay's size.
PAGE_MESSAGES = 10_000
PAGE_BYTES = 1 << 20  # Message.size of the messages, past which a page ends


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """Which of a channel's messages a history read is about (`replay` or `page`), and
    how many of them to return at once: the messages of `channel` after `start` (from
    the history's start when None), oldest first, at most `limit` of them and, once
    they pass `max_bytes` of `Message.size` (None: no bound), no more (the first one
    always)."""

    stream_id: str
    channel: str
    start: ReplayStart | None = None
    limit: int = PAGE_MESSAGES
    max_bytes: int | None = None
    # replay: of those, only the newest `newest` (None: all of them) ...
    newest: int | None = None
    # ... and with no start, only the channel's newest `window` (None: all history)
    window: int | None = None
    # page: also at or after this millisecond, and none past this seq
    since_ms: int | None = None
    until_seq: int | None = None
    # page: an AfterSeq start that must still be followed by every message it had
    # (a resume that said `recovered`), else `HistoryGap` rather than what is left
    exact: bool = False

    def after(self, message: Message, epoch: str) -> HistoryQuery:
        """The next page of this read, after `message` (of history `epoch`)."""
        start = AfterSeq(message.seq, epoch)
        return replace(self, start=start, since_ms=None, newest=None, window=None)


@dataclass(slots=True)
class ReplaySlice:
    """The answer to a replay query, planned from one consistent snapshot: which messages
    (the newest `newest` of the matching set: `count` of them) and the first page of
    them; the rest is read with `page`, after the page's last, up to `head_seq`
    (`HistoryQuery.after`, with `until_seq` the head seq)."""

    messages: list[Message]  # the replay's first page, oldest first
    matched: int  # the size of the matching set
    backfill_after_id: str | None  # the id just before the matching set (None: history start)
    head_seq: int  # the stream's last seq in the same snapshot, all channels
    # an AfterId start that this stream does not hold, or an AfterSeq start whose
    # messages are not all held any more (trimmed, or another epoch of the history)
    unknown_id: bool = False
    epoch: str = ""  # the history's epoch in this snapshot ("" before the first append)
    count: int = 0  # how many messages the replay has (its pages together)


class MetadataStore(Protocol):
    """Streams and tokens. Writes are durable when the call returns."""

    async def create_stream(self, stream: Stream) -> None: ...
    async def get_stream(self, stream_id: str) -> Stream | None: ...
    async def list_streams(self) -> list[Stream]: ...
    async def update_stream(self, stream: Stream) -> None: ...
    async def delete_stream(self, stream_id: str) -> bool: ...

    async def create_token(self, token: Token) -> None: ...
    async def get_token_by_hash(self, secret_hash: str) -> Token | None: ...
    async def list_tokens(self) -> list[Token]: ...
    async def delete_token(self, token_id: str) -> Token | None: ...

    async def save_jwt_revocation(self, rule: JwtRevocation) -> None:
        """Store a JWT revocation (the same one again replaces it); revocations whose
        `until` has passed may be forgotten."""
        ...

    async def jwt_revocations(self) -> list[JwtRevocation]:
        """The JWT revocations whose `until` has not passed."""
        ...


class HistoryStore(Protocol):
    """Ordered message history per stream.

    Ordering: `append` gives each message the next `seq` of its stream (1, 2, 3, ...,
    never reused, surviving restarts and trims), a UUIDv7 id whose millisecond is the
    message's timestamp, and timestamps never decrease along `seq`. Every batch is
    atomic and contiguous."""

    async def append(self, batches: Sequence[AppendBatch]) -> list[Appended]:
        """Order and store the batches, in the given order, durably before returning.
        A batch whose stream cannot take it gets a BloomrError in its slot; the others
        are unaffected. Keyed batches: see `AppendBatch` (a key repeated within one call
        is a repeat of the first batch that carried it)."""
        ...

    def try_append_now(self, batches: Sequence[AppendBatch]) -> list[Appended] | None:
        """`append`, done before returning without waiting for anything (so on the event
        loop's thread, with no other append under way); None when it cannot be, and
        then nothing was stored."""
        ...

    async def replay(self, query: HistoryQuery) -> ReplaySlice:
        """Plan a replay from one snapshot that also yields the stream's head seq: the
        messages of `query` (only its newest `newest`), and the first page of them.
        An AfterId start this stream does not hold, or an AfterSeq start whose messages
        are not all held, replays the channel's newest `newest` and says `unknown_id`."""
        ...

    async def page(self, query: HistoryQuery) -> list[Message]:
        """A page of `query`'s messages, from one snapshot. Raises
        BloomrError('unknown_message_id') for an AfterId start it does not hold; an
        AfterSeq start reads what is left after that seq (trimmed messages are skipped,
        or, when the query is `exact`, HistoryGap is raised) and nothing in another
        epoch of the history."""
        ...

    async def head(self, stream_id: str) -> tuple[int, str]:
        """The stream's last seq and its history's epoch (`(0, "")` before any)."""
        ...

    async def drop(self, stream_id: str) -> None:
        """Forget a stream's history and its sequence."""
        ...

    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        """Delete messages older than `min_ts_ms` or beyond the newest `max_messages`."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One message waiting for one webhook: `envelope` is its envelope JSON, `epoch` the
    epoch of the history its `seq` belongs to."""

    webhook_id: str
    seq: int
    envelope: bytes
    epoch: str = ""


class OutboxRow(NamedTuple):
    """An item in a webhook's outbox, at its place: `era` numbers the history epochs in
    the order the outboxes first saw them (0 for items from before eras were kept), so
    (era, seq) is the order of delivery: an older epoch's items first."""

    era: int
    seq: int
    envelope: bytes


# (webhook id, channel) of a stream's webhooks, oldest first
Routes = Sequence[tuple[str, str]]
Span = tuple[int, int, int]  # a part of one era of an outbox: (era, first seq, last seq)


class WebhookStore(Protocol):
    """Webhooks, their delivery state, and an outbox per webhook: the messages it still
    has to deliver, keyed by (webhook id, era of the message's history epoch, the
    message's seq in its stream). Writes are durable when the call returns; reads see
    whole writes only."""

    # True when the history's append writes each publish's outbox items in its own
    # transaction (the embedded SQLite file, which holds the webhooks too, gives its
    # history the exact routes of every stream): nobody else must enqueue them
    outbox_with_history: bool

    async def create_webhook(self, webhook: Webhook) -> None: ...
    async def get_webhook(self, webhook_id: str) -> WebhookRecord | None: ...

    async def list_webhooks(self, stream_id: str | None = None) -> list[WebhookRecord]:
        """A stream's webhooks (every webhook when None), oldest first."""
        ...

    async def delete_webhook(self, webhook_id: str) -> bool:
        """Delete a webhook with its state and outbox, atomically."""
        ...

    async def routes(self, stream_id: str) -> list[tuple[str, str]]:
        """(webhook id, channel) of the stream's webhooks, oldest first. Sees every create
        and delete that returned before the call."""
        ...

    def known_routes(self, stream_id: str) -> Routes | None:
        """`routes`, when this node knows them exactly without a read (the embedded
        store always does); None when only `routes` can tell."""
        ...

    async def enqueue(self, items: Sequence[OutboxItem]) -> int:
        """Add items to their webhooks' outboxes in one transaction, each in the era of
        its epoch (a new epoch gets the next era). Items of webhooks that no longer
        exist, and items already there (same webhook, epoch and seq), are skipped, so a
        delete racing an enqueue leaves nothing behind. Returns how many were added."""
        ...

    async def outbox(
        self, webhook_id: str, limit: int, span: Span | None = None
    ) -> list[OutboxRow]:
        """The oldest `limit` items of the webhook's outbox in (era, seq) order; with a
        `span` (era, first seq, last seq), only that era's from first to last seq."""
        ...

    async def save_state(self, webhook_id: str, state: DeliveryState) -> None:
        """Record the delivery state (a no-op for a webhook that no longer exists)."""
        ...

    async def finish_batch(
        self, webhook_id: str, era: int, last_seq: int, state: DeliveryState
    ) -> None:
        """Atomically drop the outbox's items of `era` up to `last_seq` (delivered or
        given up) and record the state that says so."""
        ...


class LeaseStore(Protocol):
    """Named leases with an owner and an expiry, so that across nodes one owner at a
    time holds each key (each script runs on one node, each webhook is delivered by
    one node). Expiry is measured on the store's clock, never a node's, so nodes with
    skewed clocks still agree on who holds a lease. A holder that stops renewing loses
    its lease `ttl_s` after its last successful `acquire`."""

    async def acquire(self, key: str, owner: str, ttl_s: float) -> bool:
        """Atomically take `key` for `owner` when it is free, expired or already held by
        `owner` (a renewal), setting its expiry to now + `ttl_s`. Returns whether
        `owner` holds it now; when another owner holds an unexpired lease, nothing
        changes and the answer is False."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Free `key` if `owner` holds it (expired or not); otherwise do nothing."""
        ...

    async def holders(self, prefix: str) -> dict[str, str]:
        """Every unexpired lease whose key starts with `prefix` (literally: no
        wildcards), as key -> owner."""
        ...


class ScriptStatusStore(Protocol):
    """Where the node that runs a script reports its state, so that every node can show
    it. Written by the lease holder on each state change; a report is whole or absent."""

    async def save_script_status(self, stream_id: str, report: ScriptReport) -> None:
        """Replace the stream's report."""
        ...

    async def script_statuses(self, stream_ids: Sequence[str]) -> dict[str, ScriptReport]:
        """The latest reports of these streams (absent: never reported)."""
        ...

    async def delete_script_status(self, stream_id: str) -> None: ...
