"""What the HTTP routes need, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ..auth import Authenticator
from ..config import Settings
from ..hub import Hub
from ..store.base import MetadataStore


@dataclass(slots=True)
class Context:
    settings: Settings
    meta: MetadataStore
    hub: Hub
    auth: Authenticator
    scripts: Any = None  # the script supervisor registry, when scripts are enabled


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx
