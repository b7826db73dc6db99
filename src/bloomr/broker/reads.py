"""The reads of a broker, answered by its history store as they are."""

from __future__ import annotations

from ..model import Message
from ..store.base import HistoryQuery, HistoryStore, ReplaySlice


class HistoryReads:
    """`Broker.replay`, `head`, `page` and `trim`, for a broker whose `history` holds
    what its publishes stored."""

    history: HistoryStore

    async def replay(self, query: HistoryQuery) -> ReplaySlice:
        return await self.history.replay(query)

    async def head(self, stream_id: str) -> tuple[int, str]:
        return await self.history.head(stream_id)

    async def page(self, query: HistoryQuery) -> list[Message]:
        return await self.history.page(query)

    async def trim(self, stream_id: str, min_ts_ms: int, max_messages: int) -> int:
        return await self.history.trim(stream_id, min_ts_ms, max_messages)
