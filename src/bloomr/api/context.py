"""What the HTTP routes need, built once in the app's lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from prometheus_client import CollectorRegistry

from ..auth import Authenticator
from ..config import Settings
from ..hub import Hub
from ..presence import LocalPresence, Presence
from ..store.base import MetadataStore
from ..streams import Streams

if TYPE_CHECKING:
    from ..scripts import ScriptManager


@dataclass(slots=True)
class Context:
    settings: Settings
    meta: MetadataStore
    hub: Hub
    streams: Streams
    auth: Authenticator
    scripts: ScriptManager | None = None
    metrics: CollectorRegistry | None = None
    # cluster: what /healthz checks, by name (empty in embedded mode)
    probes: dict[str, Callable[[], Awaitable[None]]] = field(default_factory=dict)
    presence: Presence = field(default_factory=LocalPresence)  # occupancy on other nodes
    # set when the server stops accepting: long polls answer at once
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


async def get_context(request: Request) -> Context:
    """Async on purpose: FastAPI runs a plain function dependency on a worker thread."""
    ctx: Context = request.app.state.ctx
    return ctx
