"""The control channel of a single process: a direct call."""

from __future__ import annotations

from .base import ControlEvent, ControlHandler


class LocalControl:
    """Implements ControlChannel for one node."""

    def __init__(self) -> None:
        self._handler: ControlHandler | None = None

    async def start(self, handler: ControlHandler) -> None:
        self._handler = handler

    async def stop(self) -> None:
        self._handler = None

    async def send(self, event: ControlEvent) -> None:
        if self._handler is not None:
            self._handler.on_control(event)
