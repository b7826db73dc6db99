"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import Ctx
from .responses import JSON

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(ctx: Ctx) -> JSON:
    await ctx.meta.get_stream("-")  # the database answers
    return JSON({"status": "ok"})
