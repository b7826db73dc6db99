"""Push transports, one module each: the ways a subscriber connects.

To add one, write its module (a class with the `base.Transport` members, built as
`cls(hub, streams, auth, settings)`, serving each subscriber with `session.run_session`) and
add the class to `TRANSPORTS`: the ASGI app, the websocket protocol, OpenAPI and the
server's stop find it there."""

from __future__ import annotations

from ..auth import Authenticator
from ..config import Settings
from ..hub import Hub
from ..streams import Streams
from .base import Transport, TransportClass, Transports
from .socketio import SocketIOTransport
from .sse import SseTransport

__all__ = ["TRANSPORTS", "Transport", "Transports", "build_transports"]

TRANSPORTS: tuple[TransportClass, ...] = (
    SocketIOTransport,  # /socket.io/: Engine.IO polling and websocket
    SseTransport,  # /api/streams/{id}/events: server-sent events
)


def build_transports(
    hub: Hub, streams: Streams, auth: Authenticator, settings: Settings
) -> Transports:
    return Transports([cls(hub, streams, auth, settings) for cls in TRANSPORTS])
