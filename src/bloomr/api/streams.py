"""Streams: create, list, show, update, delete (admin only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from ..auth import require_stream
from ..errors import BloomrError
from ..model import Retention, Stream, iso_now, new_stream_id
from ..scripts import Action, script_spec
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


def _apply(stream: Stream, body: StreamPatch) -> None:
    fields = body.model_fields_set
    if "name" in fields and body.name is not None:
        stream.name = body.name
    if "store_history" in fields and body.store_history is not None:
        stream.store_history = body.store_history
    if body.retention is not None:
        if body.retention.max_age is not None:
            stream.retention.max_age = body.retention.max_age
        if body.retention.max_messages is not None:
            stream.retention.max_messages = body.retention.max_messages
    for name in ("command", "cwd", "env"):
        if name in fields:
            setattr(stream, name, getattr(body, name))
    if "restart" in fields and body.restart is not None:
        stream.restart = body.restart


@router.post("", status_code=201)
async def create_stream(body: StreamCreate, ctx: Ctx, _: Admin) -> JSON:
    stream = Stream(id=new_stream_id(), name="", retention=Retention())
    _apply(stream, body)
    if stream.command:
        script_spec(stream)  # refuse a script that could never run, now
    await ctx.meta.create_stream(stream)
    ctx.hub.stream_updated(stream)
    return JSON(await stream_json(ctx, stream), status_code=201)


@router.get("")
async def list_streams(ctx: Ctx, _: Admin) -> JSON:
    streams = await ctx.meta.list_streams()
    return JSON({"streams": await streams_json(ctx, streams)})


@router.get("/{stream_id}")
async def show_stream(stream_id: str, ctx: Ctx, _: Admin) -> JSON:
    stream = require_stream(await ctx.meta.get_stream(stream_id), stream_id)
    return JSON(await stream_json(ctx, stream))


@router.patch("/{stream_id}")
async def update_stream(stream_id: str, body: StreamPatch, ctx: Ctx, _: Admin) -> JSON:
    stream = require_stream(await ctx.meta.get_stream(stream_id), stream_id)
    _apply(stream, body)
    if stream.command:
        script_spec(stream)
    stream.updated_at = iso_now()
    if ctx.scripts is not None:
        await ctx.scripts.stream_updated(stream)
    await ctx.meta.update_stream(stream)
    await ctx.hub.announce_stream(stream)  # every node's cache and scripts
    return JSON(await stream_json(ctx, stream))


@router.delete("/{stream_id}", status_code=204)
async def delete_stream(stream_id: str, ctx: Ctx, _: Admin) -> Response:
    require_stream(await ctx.meta.get_stream(stream_id), stream_id)
    if ctx.scripts is not None:
        await ctx.scripts.stream_deleted(stream_id)
    await ctx.meta.delete_stream(stream_id)
    await ctx.hub.delete_stream(stream_id)
    return Response(status_code=204)


async def _control(stream_id: str, ctx: Context, action: Action) -> JSON:
    stream = require_stream(await ctx.meta.get_stream(stream_id), stream_id)
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
