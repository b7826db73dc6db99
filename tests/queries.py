"""History queries as the store tests write them: one line per read."""

from __future__ import annotations

from bloomr.replay import AfterId, ReplayStart
from bloomr.store.base import HistoryQuery


def replaying(
    stream_id: str,
    channel: str,
    start: ReplayStart | None,
    newest: int | None,
    window: int | None = None,
    max_bytes: int | None = None,
) -> HistoryQuery:
    """A replay of the newest `newest` after `start` (or of the channel's newest
    `window`), its first page up to `max_bytes`."""
    return HistoryQuery(
        stream_id, channel, start, max_bytes=max_bytes, newest=newest, window=window
    )


def paging(
    stream_id: str, channel: str, after_id: str | None, since_ms: int | None, limit: int
) -> HistoryQuery:
    """A page of the HTTP API: after a message id, at or after a millisecond."""
    after = None if after_id is None else AfterId(after_id)
    return HistoryQuery(stream_id, channel, after, limit, since_ms=since_ms)
