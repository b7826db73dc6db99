"""The control channel of a cluster: one Redis pub/sub channel per cluster."""

from __future__ import annotations

import logging
from typing import Any

from ..faults import guarded
from ..redis_pubsub import Subscription
from .base import ControlEvent, ControlHandler

log = logging.getLogger("bloomr.control")


def control_channel(prefix: str) -> str:
    return f"{prefix}:control"


@guarded
class RedisControl:
    """Implements ControlChannel over Redis pub/sub. Events sent while a node's
    connection is down are lost to it (see ControlChannel)."""

    def __init__(self, url: str, prefix: str = "bloomr", **options: Any) -> None:
        self.channel = control_channel(prefix)
        self._handler: ControlHandler | None = None
        self.subscription = Subscription(
            url, f"bloomr-control:{prefix}", self._received, channels=[self.channel], **options
        )

    async def start(self, handler: ControlHandler) -> None:
        self._handler = handler
        await self.subscription.start()

    async def stop(self) -> None:
        await self.subscription.stop()
        self._handler = None

    async def send(self, event: ControlEvent) -> None:
        """To every node, this one included (it hears it back from Redis)."""
        await self.subscription.client.publish(self.channel, event.encode())

    async def _received(self, message: dict[str, Any]) -> None:
        if message["type"] != "message" or self._handler is None:
            return
        event = ControlEvent.decode(message["data"])
        if event is not None:
            self._handler.on_control(event)
