"""What the HTTP routes need, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request
from prometheus_client import CollectorRegistry

from ..auth import Authenticator
from ..config import Settings
from ..hub import Hub
from ..store.base import MetadataStore

if TYPE_CHECKING:
    from ..scripts import ScriptManager


@dataclass(slots=True)
class Context:
    settings: Settings
    meta: MetadataStore
    hub: Hub
    auth: Authenticator
    scripts: ScriptManager | None = None
    metrics: CollectorRegistry | None = None


async def get_context(request: Request) -> Context:
    """Async on purpose: FastAPI runs a plain function dependency on a worker thread."""
    ctx: Context = request.app.state.ctx
    return ctx
