"""The HTTP API (FastAPI): one module per resource, errors from the one table."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from . import errors, health, messages, occupancy, streams, tokens, webhooks
from .context import Context
from .schemas import PUBLISH_ITEM_SCHEMA

if TYPE_CHECKING:
    from ..webhooks.manager import WebhookManager


def build_api(
    ctx: Context,
    webhook_manager: WebhookManager | None = None,
    other_paths: dict[str, Any] | None = None,
) -> FastAPI:
    """`other_paths`: OpenAPI `paths` served beside the API (server-sent events)."""
    app = FastAPI(
        title="bloomr",
        summary="Stream what scripts print, live and with exact replay.",
        version="0.1.0",
    )
    app.state.ctx = ctx
    app.state.webhooks = webhook_manager  # None: the webhook routes answer 404
    errors.install(app)
    for module in (streams, occupancy, tokens, messages, webhooks, health):
        app.include_router(module.router)
    _complete_openapi(app, other_paths or {})
    return app


def _complete_openapi(app: FastAPI, other_paths: dict[str, Any]) -> None:
    """The publish body is parsed by hand (it is the hot path); document it anyway, and
    the paths that other parts serve."""
    build = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["PublishItem"] = (
                PUBLISH_ITEM_SCHEMA
            )
            schema.setdefault("paths", {}).update(other_paths)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
