"""Server-sent events: the socket's contract over plain HTTP (`EventSource`).

Same arguments as the socket; `Last-Event-ID` resumes strictly after that id. Each
message is an SSE `message` event whose `id` is the message id and whose `data` is the
envelope; `warning`, `replay_end` and `error` are named events with the socket's
payloads. Errors before the stream starts are ordinary HTTP errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import StreamingResponse

from ..auth import check_access, require_stream
from ..errors import warning
from ..gateway.notices import notice_payload
from ..hub import Hub
from ..model import Message, now_ms
from ..replay import AfterId, ReplayRequest, parse_message_id, parse_subscribe_options
from ..replay_plan import ReplayPlan
from ..subscription import SlowConsumer, Subscription, SubscriptionClosed
from .deps import Caller, Ctx

router = APIRouter(prefix="/api/streams", tags=["messages"])

KEEPALIVE_SECONDS = 15.0


def sse(event: str, data: bytes, event_id: str | None = None) -> bytes:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + data + b"\n\n"


def _message(message: Message, replayed: bool) -> bytes:
    return sse("message", message.envelope_json(replayed), message.id)


def _named(event: str, payload: Any) -> bytes:
    return sse(event, orjson.dumps(payload))


def _resume(request: ReplayRequest | None, last_event_id: str | None) -> ReplayRequest | None:
    """`Last-Event-ID` (sent by EventSource on reconnect) wins over `replay`."""
    message_id = parse_message_id(last_event_id) if last_event_id else None
    if message_id is None:
        return request
    limit = request.limit if request else 10_000
    return ReplayRequest(AfterId(message_id), limit, request.requested if request else None)


@router.get("/{stream_id}/events", response_class=StreamingResponse)
async def events(stream_id: str, request: Request, ctx: Ctx, caller: Caller) -> StreamingResponse:
    """Live messages as server-sent events, after an optional replay."""
    check_access(caller, stream_id, "subscribe")
    stream = require_stream(await ctx.streams.get(stream_id), stream_id)
    channel, replay, _ = parse_subscribe_options(dict(request.query_params), now_ms())
    replay = _resume(replay, request.headers.get("last-event-id"))
    sub = ctx.hub.subscribe(stream.id, channel, caller.token_id, caller.expires_at)
    try:
        plan = await ctx.hub.plan_replay(sub, stream, replay)
    except BaseException:
        ctx.hub.unsubscribe(sub)
        raise
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    body = _stream(ctx.hub, sub, plan)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def _stream(hub: Hub, sub: Subscription, plan: ReplayPlan) -> AsyncIterator[bytes]:
    try:
        for payload in map(notice_payload, plan.notices):
            yield _named("warning", payload)
        for message in plan.messages:
            yield _message(message, True)
        last_id = plan.messages[-1].id if plan.messages else None
        yield _named("replay_end", {"count": len(plan.messages), "lastId": last_id})
        sub.go_live(plan.head_seq)
        while True:
            try:
                batch = await asyncio.wait_for(sub.next_batch(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            for payload in sub.take_warnings():  # history_reset, where it falls
                yield _named("warning", payload)
            if batch:
                yield b"".join(_message(m, False) for m in batch)
    except SubscriptionClosed as exc:
        yield _named("error", exc.error.payload())
    except SlowConsumer:
        yield _named("warning", warning("slow_consumer", "this client fell too far behind"))
    finally:
        hub.unsubscribe(sub)
