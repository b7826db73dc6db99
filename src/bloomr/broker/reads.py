"""The reads of a broker, answered by its history store as they are."""

from __future__ import annotations

from ..model import Message
from ..replay import ReplayStart
from ..store.base import HistoryStore, ReplaySlice


class HistoryReads:
    """`Broker.replay`, `head`, `page` and `trim`, for a broker whose `history` holds
    what its publishes stored."""

    history: HistoryStore

    async def replay(
        self,
        stream_id: str,
        channel: str,
        start: ReplayStart | None,
        limit: int,
        window: int | None,
    ) -> ReplaySlice:
        return await self.history.replay(stream_id, channel, start, limit, window)

    async def head(self, stream_id: str) -> tuple[int, str]:
        return await self.history.head(stream_id)

    async def page(
        self, stream_id: str, channel: str, after_id: str | None, since_ms: int | None, limit: int
    ) -> list[Message]:
        return await self.history.page(stream_id, channel, after_id, since_ms, limit)

    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        return await self.history.trim(stream_id, min_ts_ms, max_messages)
