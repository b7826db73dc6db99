"""Occupancy: who is listening to a stream right now (admin only)."""

from __future__ import annotations

from fastapi import APIRouter

from .deps import Admin, Ctx
from .responses import JSON

router = APIRouter(prefix="/api/streams", tags=["streams"])


@router.get("/{stream_id}/occupancy")
async def stream_occupancy(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    """Live subscribers (Socket.IO, SSE, long polls) by channel: `{total, channels}`.
    Counts this node's subscribers."""
    await ctx.streams.require(stream_id)
    channels = ctx.hub.subscribers.occupancy(stream_id)
    return JSON({"total": sum(channels.values()), "channels": channels})
