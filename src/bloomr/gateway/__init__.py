"""Push transports. One module per implementation, picked by name (`Settings.gateway`)."""

from __future__ import annotations

from ..auth import Authenticator
from ..hub import Hub
from .base import GATEWAYS, Gateway, GatewayName

__all__ = ["GATEWAYS", "Gateway", "GatewayName", "build_gateway"]


def build_gateway(name: GatewayName, hub: Hub, auth: Authenticator, cors: str) -> Gateway:
    if name == "python-socketio":
        from .socketio import SocketIOGateway

        return SocketIOGateway(hub, auth, cors)
    from .native import NativeGateway

    return NativeGateway(hub, auth, cors)
