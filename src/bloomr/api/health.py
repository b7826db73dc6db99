"""Liveness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from ..faults import RETRY_AFTER_SECONDS
from ..metrics import render
from .deps import Ctx
from .responses import JSON

router = APIRouter(tags=["health"])


_PROBE_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz(ctx: Ctx) -> JSON:
    """Whether every backend can take a write now: 200 `{"status": "ok", ...}`, else 503
    naming the failing part (`{"status": "unavailable", "sqlite": "failing: database or
    disk is full"}`). Embedded: SQLite (a full disk is not ok); cluster: the node, then
    PostgreSQL and Redis."""
    answers = await asyncio.gather(*map(_probe, ctx.probes.values()))
    checks = dict(zip(ctx.probes, answers, strict=True))
    healthy = all(answer == "ok" for answer in checks.values())
    if healthy and ctx.settings.cluster:
        return JSON({"status": "ok", "node": ctx.settings.node_id, **checks})
    if healthy:
        return JSON({"status": "ok"})
    doc = {"status": "unavailable", "node": ctx.settings.node_id, **checks}
    return JSON(doc, status_code=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _probe(check: Callable[[], Awaitable[None]]) -> str:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await check()
    except TimeoutError:
        return f"failing: no answer within {_PROBE_TIMEOUT:g} s"
    except Exception as exc:
        return f"failing: {str(exc).strip() or type(exc).__name__}"
    return "ok"


@router.get("/metrics", response_class=Response)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics (text exposition format)."""
    body = render(ctx.metrics) if ctx.metrics is not None else b""
    return Response(body, media_type=CONTENT_TYPE_LATEST)
