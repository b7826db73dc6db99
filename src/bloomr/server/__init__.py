"""`bloomr serve`: one uvicorn server (uvloop, httptools, websockets without
permessage-deflate) running the whole node.

Beside the ASGI app (`app.py`), the server has two asyncio protocols of its own:
`http.PublishingHttp` (uvicorn's HTTP protocol, publishing on the spot) and
`websocket.WebSocket` (every websocket, handed to the transport of its path)."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from ..app import Bloomr, build_asgi
from ..backends import Unreachable
from ..config import Settings, explicit_admin_key, load_admin_key
from ..datadir_lock import DataDirInUse, lock_data_dir
from .bounded import bounded_http
from .http import check_fast_path, publishing_http
from .stop import DRAIN_SECONDS, StoppingServer, exit_now
from .websocket import protocol_class

OnReady = Callable[[Bloomr, str], Awaitable[None]]


KEEP_ALIVE_SECONDS = 75


def server_config(
    settings: Settings, node: Bloomr, fast_path: bool = True, **overrides: Any
) -> uvicorn.Config:
    """The node's uvicorn configuration; `overrides` are uvicorn options (tests)."""
    bounds = settings.bounds
    fast = publishing_http(node.ctx, settings.max_body_bytes, bounds) if fast_path else None
    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=fast or bounded_http(bounds),
        ws=protocol_class(node.transports),
        ws_per_message_deflate=False,  # compressing every frame per client costs more than it saves
        lifespan="on",
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # bloomr never looks at client addresses: one layer less per request
        timeout_graceful_shutdown=DRAIN_SECONDS,
        # Closing an idle keep-alive connection races the client's next request on it
        # (the client gets a reset and its publish fails): uvicorn's 5 s did that to the
        # bench's publisher once in 20 000 POSTs. Load balancers keep idle connections to
        # a backend 60 s (AWS ALB) and need the backend to keep them longer.
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return uvicorn.Config(build_asgi(node), **(options | overrides))


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so a taken port is one clear error line."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _node(settings: Settings) -> Bloomr:
    """Embedded: the admin key from the flag, the environment or the data dir. Cluster:
    from the flag or the environment, else the one the cluster stores (at connect)."""
    if settings.cluster:
        return Bloomr(settings, explicit_admin_key(settings))
    key = load_admin_key(settings)
    if key.generated:
        print(f"admin key (shown once, saved to {settings.data_dir / 'admin.key'}): {key.value}")
    return Bloomr(settings, key.value)


def _lock(settings: Settings) -> None:
    """Embedded: hold the data directory before anything in it is opened (a cluster
    node has none). Its descriptor is never closed: the OS releases the lock when the
    process ends, however it ends."""
    if settings.cluster:
        return
    try:
        lock_data_dir(settings.data_dir)
    except DataDirInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        print(f"error: cannot lock {settings.data_dir}: {exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)


def serve(settings: Settings, on_ready: OnReady | None = None) -> None:
    _lock(settings)
    try:
        sock = _bind(settings.host, settings.port)
    except OSError as exc:
        print(
            f"error: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        sys.exit(1)
    node = _node(settings)
    server = StoppingServer(server_config(settings, node), node)

    async def main() -> None:
        nonlocal server
        if not check_fast_path(server.config):  # uvicorn's internals are not as tested
            server = StoppingServer(server_config(settings, node, fast_path=False), node)
        if settings.cluster:  # reach PostgreSQL and Redis before listening
            try:
                await node.connect()
            except Unreachable as exc:
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(1)
            if node.generated_admin_key is not None:
                print(
                    "admin key (shown once; the cluster keeps only its hash, set "
                    f"BLOOMR_ADMIN_KEY to choose one): {node.generated_admin_key}",
                    flush=True,
                )
            print(f"bloomr node {settings.node_id} of cluster {settings.cluster_name}", flush=True)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            url = _url(sock, settings.host)
            print(f"bloomr listening on {url}", flush=True)
            if on_ready is not None:
                await on_ready(node, url)
        await task

    import uvloop

    uvloop.run(main())
    if not server.started:
        print("error: bloomr could not start (see the log above)", file=sys.stderr)
        sys.exit(1)
    if server.force_exit:  # a second signal: the node's stop was skipped, its threads live on
        exit_now("forced by a second signal")
