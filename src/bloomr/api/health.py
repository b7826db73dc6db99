"""Liveness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from ..metrics import render
from .deps import Ctx
from .responses import JSON

router = APIRouter(tags=["health"])


_PROBE_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz(ctx: Ctx) -> JSON:
    """Embedded: `{"status": "ok"}` once the database answers. Cluster: also whether
    PostgreSQL and Redis answer now, 503 when one does not."""
    if not ctx.probes:
        await ctx.meta.get_stream("-")  # the database answers
        return JSON({"status": "ok"})
    answers = await asyncio.gather(*map(_probe, ctx.probes.values()))
    checks = dict(zip(ctx.probes, answers, strict=True))
    healthy = all(answer == "ok" for answer in checks.values())
    doc = {"status": "ok" if healthy else "unavailable", "node": ctx.settings.node_id, **checks}
    return JSON(doc, status_code=200 if healthy else 503)


async def _probe(check: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await check()
    except Exception as exc:
        return f"unreachable: {str(exc).strip() or type(exc).__name__}"
    return "ok"


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics (text exposition format)."""
    body = render(ctx.metrics) if ctx.metrics is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
