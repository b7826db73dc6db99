"""The gateway contract: how a push transport plugs into the node."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ..config import GATEWAYS, GatewayName

__all__ = ["GATEWAYS", "Gateway", "GatewayName"]


class Gateway(Protocol):
    def asgi_app(self) -> Any:
        """The ASGI app for `/socket.io/` HTTP (and websocket, if it takes them via ASGI)."""
        ...

    @property
    def ws_protocol(self) -> type[asyncio.Protocol] | None:
        """A uvicorn websocket protocol class of its own, or None to use ASGI websockets."""
        ...

    async def close(self) -> None:
        """End every session (the server is stopping)."""
        ...
