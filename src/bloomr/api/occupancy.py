"""Occupancy: who is listening to a stream right now (admin only)."""

from __future__ import annotations

from fastapi import APIRouter

from ..presence import total
from .deps import Admin, Ctx
from .responses import JSON

router = APIRouter(prefix="/api/streams", tags=["streams"])


@router.get("/{stream_id}/occupancy")
async def stream_occupancy(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    """Live subscribers (Socket.IO, SSE, long polls) by channel, on every node:
    `{total, channels}`. This node's are counted now, the others' as they announced
    them (`presence.py`)."""
    await ctx.streams.require(stream_id)
    mine = ctx.hub.subscribers.occupancy(stream_id)
    channels = total(mine, await ctx.presence.elsewhere(stream_id))
    return JSON({"total": sum(channels.values()), "channels": channels})
