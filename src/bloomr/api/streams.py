"""Streams: create, list, show, update, delete, and their scripts (admin only). The
streams service does the work; these routes parse and answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ..errors import BloomrError
from ..model import Stream
from ..scripts import Action
from .context import Context
from .deps import Admin, Ctx
from .responses import JSON
from .schemas import StreamCreate, StreamPatch

router = APIRouter(prefix="/api/streams", tags=["streams"])


async def stream_json(ctx: Context, stream: Stream) -> dict[str, Any]:
    return (await streams_json(ctx, [stream]))[0]


async def streams_json(ctx: Context, streams: list[Stream]) -> list[dict[str, Any]]:
    """The streams with their script status (read from the node running each script)
    and their activity (rate and last message, as this node's fan-out saw them)."""
    scripts = await ctx.scripts.statuses(streams) if ctx.scripts is not None else {}
    activity = ctx.hub.activity.snapshot
    return [
        {**s.to_json(), "script": scripts.get(s.id), "activity": activity(s.id)} for s in streams
    ]


@router.post("", status_code=201)
async def create_stream(body: StreamCreate, ctx: Ctx, _: Admin) -> JSON:
    stream = await ctx.streams.create(body.model_dump(exclude_unset=True))
    return JSON(await stream_json(ctx, stream), status_code=201)


@router.get("")
async def list_streams(ctx: Ctx, _: Admin) -> JSON:
    return JSON({"streams": await streams_json(ctx, await ctx.streams.list())})


@router.get("/{stream_id}")
async def show_stream(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    return JSON(await stream_json(ctx, await ctx.streams.require(stream_id)))


@router.patch("/{stream_id}")
async def update_stream(stream_id: str, body: StreamPatch, ctx: Ctx, _: Admin) -> JSON:
    stream = await ctx.streams.update(stream_id, body.model_dump(exclude_unset=True))
    return JSON(await stream_json(ctx, stream))


@router.delete("/{stream_id}", status_code=204)
async def delete_stream(stream_id: str, ctx: Ctx, _: Admin) -> Response:
    await ctx.streams.delete(stream_id)
    return Response(status_code=204)


async def _control(stream_id: str, ctx: Context, action: Action) -> JSON:
    stream = await ctx.streams.require(stream_id)
    if ctx.scripts is None:
        raise BloomrError("conflict", "scripts are disabled on this server")
    await ctx.scripts.control(stream, action)
    return JSON(await stream_json(ctx, stream))


@router.post("/{stream_id}/start")
async def start_script(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    """Start the stream's script (409 if it has none or it already runs)."""
    return await _control(stream_id, ctx, "start")


@router.post("/{stream_id}/stop")
async def stop_script(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    """Stop the script: SIGTERM to its process group, SIGKILL after the grace period."""
    return await _control(stream_id, ctx, "stop")


@router.post("/{stream_id}/restart")
async def restart_script(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    return await _control(stream_id, ctx, "restart")
