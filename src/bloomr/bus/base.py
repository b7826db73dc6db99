"""Fan-out between nodes. The hub publishes ordered messages and control events to the
bus; the bus hands them to every node's handler (the hub), storage never sees a client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from ..model import Message

ControlKind = Literal[
    "token_revoked",  # target: a token id
    "stream_deleted",  # target: a stream id (also all the others below)
    "stream_updated",  # its fields changed (`enabled` included): caches reload it
    "script_start",  # start its script on the node holding its lease
    "script_restart",  # restart its script on the node holding its lease
    "webhooks_changed",  # its webhooks were created or deleted
    "webhooks_pending",  # its webhooks' outboxes got messages
]


@dataclass(frozen=True, slots=True)
class ControlEvent:
    kind: ControlKind
    target: str  # a token id or a stream id


class BusHandler(Protocol):
    def on_messages(self, stream_id: str, messages: list[Message]) -> None:
        """Messages of one stream, in seq order, each exactly once per node."""
        ...

    def on_control(self, event: ControlEvent) -> None: ...


class Bus(Protocol):
    async def start(self, handler: BusHandler) -> None: ...
    async def stop(self) -> None: ...

    async def publish(self, stream_id: str, messages: list[Message]) -> None:
        """Deliver to every node in the order of the calls for one stream."""
        ...

    async def control(self, event: ControlEvent) -> None:
        """Deliver a control event to every node (including this one)."""
        ...
