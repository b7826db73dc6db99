"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from ..metrics import render
from .deps import Ctx
from .responses import JSON

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(ctx: Ctx) -> JSON:
    await ctx.meta.get_stream("-")  # the database answers
    return JSON({"status": "ok"})


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics (text exposition format)."""
    body = render(ctx.metrics) if ctx.metrics is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
