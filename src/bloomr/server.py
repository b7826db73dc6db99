"""`bloomr serve`: one uvicorn server (uvloop, httptools, websockets without
permessage-deflate) running the whole node."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import uvicorn

from .app import Bloomr, build_asgi
from .config import Settings, load_admin_key

OnReady = Callable[[Bloomr, str], Awaitable[None]]


def _config(settings: Settings, node: Bloomr) -> uvicorn.Config:
    return uvicorn.Config(
        build_asgi(node),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # compressing every frame per client costs more than it saves
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def _bound_url(server: uvicorn.Server, host: str) -> str:
    port = server.servers[0].sockets[0].getsockname()[1]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}"


def serve(settings: Settings, on_ready: OnReady | None = None) -> None:
    key = load_admin_key(settings)
    node = Bloomr(settings, key.value)
    if key.generated:
        print(f"admin key (shown once, saved to {settings.data_dir / 'admin.key'}): {key.value}")
    server = uvicorn.Server(_config(settings, node))

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            url = _bound_url(server, settings.host)
            print(f"bloomr listening on {url}", flush=True)
            if on_ready is not None:
                await on_ready(node, url)
        await task

    import uvloop

    uvloop.run(main())
    if not server.started:
        sys.exit(1)
