"""The transport contract: how a way for subscribers to connect plugs into the node.

A transport declares the paths it serves and how it handles them: plain HTTP (an ASGI
app) and, if it takes them, websockets (raw connections from the server's one
websocket protocol, `server/websocket.py`). Every transport serves its subscribers
with `session.run_session`, so the replay -> live hand-over, waiting for a slow client
and the warnings are the same everywhere; it reaches data only through the hub.

`Transports` is the node's list of them: the ASGI app and the websocket protocol ask
it which transport a path belongs to, and the server's stop asks it to end them all."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from ..auth import Authenticator
    from ..config import Settings
    from ..hub import Hub
    from ..streams import Streams


# How long a stop waits for its `shutting_down` warnings to leave before it closes.
WARNING_SECONDS = 1.0


class WebSocketLink(Protocol):
    """An open websocket as a transport sees it: writes never wait."""

    @property
    def writable(self) -> bool:
        """Its outgoing buffer has room."""
        ...

    @property
    def address(self) -> str | None:
        """The client's address (its host)."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes written and not yet sent."""
        ...

    def write(self, data: bytes) -> None:
        """Write bytes already framed (`frames.ws_frame`)."""
        ...

    async def drained(self) -> None:
        """Wait until it is writable again."""
        ...

    def close(self, abort: bool = False) -> None:
        """Send a close frame and drop the connection; `abort` drops it at once."""
        ...


class WebSocketHandler(Protocol):
    """A transport's side of one websocket."""

    def on_text(self, data: str) -> None:
        """A complete text message arrived."""
        ...

    def on_closed(self) -> None:
        """The connection is gone (whoever closed it)."""
        ...


class WebSocketRefused(Exception):
    """Raised by `Transport.open_websocket`: closed with 1008 and this reason."""


class Transport(Protocol):
    """One way to subscribe. Built by its class as `cls(hub, streams, auth, settings)`."""

    @property
    def path(self) -> re.Pattern[str]:
        """The paths it serves, matched at the start of the request path."""
        ...

    @property
    def answers_cors(self) -> bool:
        """It writes its own CORS headers (else the node's CORS layer adds them)."""
        ...

    @property
    def websocket(self) -> bool:
        """It takes websocket connections on its paths (else 404)."""
        ...

    @property
    def openapi(self) -> dict[str, Any]:
        """What it adds to the HTTP API's OpenAPI `paths` (`{}`: nothing)."""
        ...

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request on its paths (ASGI)."""
        ...

    def open_websocket(
        self, link: WebSocketLink, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> WebSocketHandler:
        """A websocket on its paths completed the handshake (only if `websocket`)."""
        ...

    async def close(self) -> None:
        """The server is stopping and accepts no one new: send every session `warning`
        `shutting_down`, then end it so that its client reconnects and resumes by
        itself (for Socket.IO: close the transport, never a Socket.IO DISCONNECT, after
        which socket.io-client would not reconnect)."""
        ...


TransportClass = Callable[["Hub", "Streams", "Authenticator", "Settings"], Transport]


class Transports:
    """The node's transports, in the order their paths are tried."""

    def __init__(self, transports: Sequence[Transport]) -> None:
        self.all = tuple(transports)
        self._websocket = tuple(t for t in self.all if t.websocket)

    def for_http(self, path: str) -> Transport | None:
        for transport in self.all:
            if transport.path.match(path):
                return transport
        return None

    def for_websocket(self, path: str) -> Transport | None:
        for transport in self._websocket:
            if transport.path.match(path):
                return transport
        return None

    def openapi(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for transport in self.all:
            paths.update(transport.openapi)
        return paths

    async def close(self) -> None:
        await asyncio.gather(*(t.close() for t in self.all))


async def wait_at_most(awaitables: Iterable[Awaitable[object]], seconds: float) -> None:
    """Wait for all of them, `seconds` at the most; cancel what is left."""
    futures = [asyncio.ensure_future(a) for a in awaitables]
    if not futures:
        return
    await asyncio.wait(futures, timeout=seconds)
    for future in futures:
        future.cancel()
