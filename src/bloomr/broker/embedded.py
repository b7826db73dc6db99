"""The embedded broker: history in the node's SQLite database, fan-out by a direct call
into this node's handler, the only node there is."""

from __future__ import annotations

from collections.abc import Sequence

from ..model import Message
from ..store.sqlite_history import SQLiteHistory
from .base import AppendBatch, BrokerHandler, Capabilities, Published
from .reads import HistoryReads


class EmbeddedBroker(HistoryReads):
    """Implements Broker. Delivery happens inside `publish`, right after the commit, in
    commit order: one pipeline on one node is the whole ordering story."""

    capabilities = Capabilities(publishes_on_the_spot=True)
    history: SQLiteHistory

    def __init__(self, history: SQLiteHistory) -> None:
        self.history = history
        self._handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def stop(self) -> None:
        self._handler = None

    async def publish(self, batches: Sequence[AppendBatch]) -> list[Published]:
        results = await self.history.append(batches)
        self._deliver(batches, results)
        return results

    def publish_now(self, batches: Sequence[AppendBatch]) -> list[Published] | None:
        results = self.history.try_append_now(batches)
        if results is not None:
            self._deliver(batches, results)
        return results

    def _deliver(self, batches: Sequence[AppendBatch], results: list[Published]) -> None:
        """One delivery per stream for a whole group commit: publishes that queued up
        while the loop was busy reach each subscriber in one write, not one each, which
        is what lets a node (and its clients) catch up after a stall."""
        handler = self._handler
        if handler is None:
            return
        stored: dict[str, list[Message]] = {}
        for batch, result in zip(batches, results, strict=True):
            if isinstance(result, list) and result:
                stored.setdefault(batch.stream_id, []).extend(result)
        for stream_id, messages in stored.items():
            handler.on_messages(stream_id, messages)

    async def drop(self, stream_id: str) -> None:
        await self.history.drop(stream_id)
