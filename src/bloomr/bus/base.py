"""Fan-out between nodes. The hub publishes ordered messages to the bus; the bus hands
them to every node's handler (the hub), storage never sees a client."""

from __future__ import annotations

from typing import Protocol

from ..model import Message


class BusHandler(Protocol):
    def on_messages(self, stream_id: str, messages: list[Message]) -> None:
        """Messages of one stream, in seq order, each exactly once per node."""
        ...


class Bus(Protocol):
    async def start(self, handler: BusHandler) -> None: ...
    async def stop(self) -> None: ...

    async def publish(self, stream_id: str, messages: list[Message]) -> None:
        """Deliver to every node in the order of the calls for one stream."""
        ...

    def forget(self, stream_id: str) -> None:
        """The stream was deleted: drop what the bus keeps about it."""
        ...
