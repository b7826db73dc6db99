"""The single-process bus: a direct call into this node's hub."""

from __future__ import annotations

from ..model import Message
from .base import BusHandler


class LocalBus:
    def __init__(self) -> None:
        self._handler: BusHandler | None = None

    async def start(self, handler: BusHandler) -> None:
        self._handler = handler

    async def stop(self) -> None:
        self._handler = None

    async def publish(self, stream_id: str, messages: list[Message]) -> None:
        if self._handler is not None:
            self._handler.on_messages(stream_id, messages)

    def forget(self, stream_id: str) -> None:
        pass
