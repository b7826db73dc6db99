"""Push transports. One module per implementation, picked by name (`Settings.gateway`)."""

from __future__ import annotations

from ..auth import Authenticator
from ..hub import Hub
from ..streams import Streams
from .base import GATEWAYS, Gateway, GatewayName

__all__ = ["GATEWAYS", "Gateway", "GatewayName", "build_gateway"]


def build_gateway(
    name: GatewayName, hub: Hub, streams: Streams, auth: Authenticator, cors: str
) -> Gateway:
    if name == "python-socketio":
        from .socketio import SocketIOGateway

        return SocketIOGateway(hub, streams, auth, cors)
    from .native import NativeGateway

    return NativeGateway(hub, streams, auth, cors)
