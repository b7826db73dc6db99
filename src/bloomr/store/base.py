"""Storage contracts. Every backend (sqlite now; postgres and redis for a cluster)
implements these and passes the same conformance tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import BloomrError
from ..model import Draft, Message, Stream, Token
from ..replay import ReplayStart


@dataclass(slots=True)
class AppendBatch:
    """One publish request: all of `drafts` are stored atomically and contiguously."""

    stream_id: str
    drafts: list[Draft]
    keep: bool  # False when the stream does not store history: ordered, never written


@dataclass(slots=True)
class ReplaySlice:
    """The answer to a replay query, read from one consistent snapshot."""

    messages: list[Message]  # the newest `limit` messages of the matching set, oldest first
    matched: int  # the size of the matching set
    backfill_after_id: str | None  # the id just before the matching set (None: history start)
    head_seq: int  # the stream's last seq in the same snapshot, all channels
    unknown_id: bool = False  # an AfterId start that this stream does not hold


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


class HistoryStore(Protocol):
    """Ordered message history per stream.

    Ordering: `append` gives each message the next `seq` of its stream (1, 2, 3, ...,
    never reused, surviving restarts and trims), a UUIDv7 id and a timestamp that never
    decreases along `seq`. Every batch is atomic and contiguous."""

    async def append(self, batches: Sequence[AppendBatch]) -> list[list[Message] | BloomrError]:
        """Order and store the batches, in the given order, durably before returning.
        A batch whose stream cannot take it gets a BloomrError in its slot; the others
        are unaffected."""
        ...

    async def replay(
        self,
        stream_id: str,
        channel: str,
        start: ReplayStart | None,
        limit: int,
        window: int | None,
    ) -> ReplaySlice:
        """Messages of `channel` after `start` (all history when None, or only the newest
        `window` when a window is given), the newest `limit` of them, from one snapshot
        that also yields the stream's head seq."""
        ...

    async def page(
        self,
        stream_id: str,
        channel: str,
        after_id: str | None,
        since_ms: int | None,
        limit: int,
    ) -> list[Message]:
        """Oldest-first messages of `channel` strictly after `after_id` and at or after
        `since_ms`. Raises BloomrError('unknown_message_id') for an id it does not hold."""
        ...

    async def drop(self, stream_id: str) -> None:
        """Forget a stream's history and its sequence."""
        ...

    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        """Delete messages older than `min_ts_ms` or beyond the newest `max_messages`."""
        ...
