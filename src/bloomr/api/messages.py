"""Publish (admin or a `publish` token) and HTTP polling (a `subscribe` token)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from ..auth import Principal, check_access, require_stream
from ..errors import BloomrError, invalid_argument
from ..faults import PUBLISH_ANSWER_WITHIN, in_time
from ..idempotency import header_value, parse_key
from ..model import (
    DEFAULT_CHANNEL,
    Draft,
    Message,
    Scope,
    Stream,
    is_valid_channel,
    now_ms,
)
from ..replay import (
    AfterId,
    Since,
    parse_channel,
    parse_message_id,
    parse_positive_int,
    parse_replay,
)
from ..store.base import HistoryQuery
from ..subscription import SubscriptionClosed
from .context import Context
from .deps import Caller, Ctx
from .jsonbody import encode_json, load_json
from .schemas import PUBLISH_SCHEMA

router = APIRouter(prefix="/api/streams", tags=["messages"])

POLL_DEFAULT_LIMIT = 1000
POLL_MAX_LIMIT = 10_000
POLL_MAX_WAIT = 60
# answered `unavailable` past this (a frozen store): outcome unknown, see faults.in_time
_PUBLISH_DEADLINE = (PUBLISH_ANSWER_WITHIN, "the publish")


async def _authorized_stream(
    ctx: Context, principal: Principal, stream_id: str, scope: Scope
) -> Stream:
    check_access(principal, stream_id, scope)
    return require_stream(await ctx.streams.get(stream_id), stream_id)


def parse_publish_body(raw: bytes) -> list[Draft]:
    """One `{channel?, data}` or a JSON array of them -> drafts (data encoded once)."""
    body = load_json(raw)
    items = body if isinstance(body, list) else [body]
    return [_draft(item, i if isinstance(body, list) else None) for i, item in enumerate(items)]


def _draft(item: Any, index: int | None) -> Draft:
    where = "" if index is None else f"[{index}]"
    if not isinstance(item, dict):
        raise BloomrError(
            "validation_failed", f"message{where} must be an object", field=f"{where}".strip()
        )
    unknown = set(item) - {"channel", "data"}
    if unknown:
        name = sorted(unknown)[0]
        raise BloomrError(
            "validation_failed", f"unknown field {name!r}", field=f"{where}.{name}".lstrip(".")
        )
    if "data" not in item:
        raise BloomrError(
            "validation_failed", "data is required", field=f"{where}.data".lstrip(".")
        )
    channel = item.get("channel", DEFAULT_CHANNEL)
    if not isinstance(channel, str) or not is_valid_channel(channel):
        raise BloomrError(
            "validation_failed",
            "channel must be '', 'errors' or a name matching [A-Za-z0-9_.:-]{1,64}",
            field=f"{where}.channel".lstrip("."),
        )
    return Draft(channel, encode_json(item["data"]))


async def publish_body(
    ctx: Context, caller: Principal, stream_id: str, raw: bytes, key_header: bytes | None = None
) -> bytes:
    """The publish endpoint's work, shared by the route below and the fast path in
    `api/fastpath.py`: authorize, parse, store and fan out; the 201 body. With an
    `Idempotency-Key` header (`key_header`, see `idempotency.header_value`), through
    `Hub.publish_once`. A body of no messages is answered `{"ids": []}` and recorded
    nowhere: there is nothing to store twice."""
    stream = await _authorized_stream(ctx, caller, stream_id, "publish")
    key = parse_key(key_header)
    drafts = parse_publish_body(raw)
    if key is not None and drafts:
        ids = await in_time(ctx.hub.publish_once(stream, drafts, key), *_PUBLISH_DEADLINE)
        return orjson.dumps({"ids": ids})
    messages = await in_time(ctx.hub.publish(stream, drafts), *_PUBLISH_DEADLINE) if drafts else []
    return published_body(messages)


def published_body(messages: list[Message]) -> bytes:
    """The 201 answer to a publish: `{"ids": [...]}`, in the order published."""
    return orjson.dumps({"ids": [m.id for m in messages]})


@router.post("/{stream_id}/messages", status_code=201, openapi_extra=PUBLISH_SCHEMA)
async def publish(stream_id: str, request: Request, ctx: Ctx, caller: Caller) -> Response:
    """Publish one message or a batch; returns once they are stored, in order. (Served
    by `api/fastpath.py`; this route documents it and serves it if that is bypassed.)"""
    key = header_value(request.scope["headers"])
    body = await publish_body(ctx, caller, stream_id, await request.body(), key)
    return Response(body, status_code=201, media_type="application/json")


@router.get("/{stream_id}/messages")
async def poll(
    stream_id: str,
    ctx: Ctx,
    caller: Caller,
    channel: str = DEFAULT_CHANNEL,
    replay: str | None = None,
    after: str | None = None,
    limit: str | None = None,
    wait: str | None = None,
) -> Response:
    """Page forward through the history, oldest first; `next` is the next page's `after`."""
    stream = await _authorized_stream(ctx, caller, stream_id, "subscribe")
    channel = parse_channel(channel)
    page_limit = parse_positive_int(limit, "limit") or POLL_DEFAULT_LIMIT
    if page_limit > POLL_MAX_LIMIT:
        raise invalid_argument("limit", f"limit must be at most {POLL_MAX_LIMIT}")
    after_id = _after(after)
    since_ms: int | None = None
    start = parse_replay(replay, now_ms()) if replay is not None else None
    if isinstance(start, AfterId):
        after_id = _later(after_id, start.id)
    elif isinstance(start, Since):
        since_ms = start.ts_ms
    wait_seconds = _wait_seconds(wait)

    async def fetch() -> list[Message]:
        after = None if after_id is None else AfterId(after_id)
        query = HistoryQuery(stream.id, channel, after, page_limit, since_ms=since_ms)
        return await ctx.hub.page(query)

    messages = await fetch()
    if not messages and wait_seconds > 0:
        messages = await _long_poll(ctx, stream.id, channel, caller, wait_seconds, fetch)
    return _page_response(messages, after_id)


def _wait_seconds(value: str | None) -> float:
    if value is None or value.strip() == "":
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        raise invalid_argument("wait", "wait must be a number of seconds") from None
    if not 0 <= seconds <= POLL_MAX_WAIT:
        raise invalid_argument("wait", f"wait must be between 0 and {POLL_MAX_WAIT} seconds")
    return seconds


async def _long_poll(
    ctx: Context,
    stream_id: str,
    channel: str,
    caller: Principal,
    seconds: float,
    fetch: Callable[[], Awaitable[list[Message]]],
) -> list[Message]:
    """Subscribe first, then look again: a message committed in between is either in
    the second look or offered to the subscription, never lost. Answers at once (the
    empty page: the client asks again, with the same `after`) when the server stops.
    The subscription is the caller's token's, so a revocation or an expiry, a deleted
    stream, ends the wait with its error like any session's."""
    hub = ctx.hub
    sub = hub.subscribe(stream_id, channel, caller.token_id, caller.expires_at)
    try:
        sub.go_live(0)
        messages = await fetch()
        if messages or ctx.stopping.is_set():
            return messages
        batch = asyncio.ensure_future(sub.next_batch())
        stopping = asyncio.ensure_future(ctx.stopping.wait())
        try:
            await asyncio.wait((batch, stopping), timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            batch.cancel()
            stopping.cancel()
        if batch.done() and not batch.cancelled():
            error = batch.exception()
            if isinstance(error, SubscriptionClosed):
                raise error.error
            if error is None:
                return await fetch()
        return []
    finally:
        hub.unsubscribe(sub)


def _after(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    message_id = parse_message_id(value)
    if message_id is None:
        raise invalid_argument("after", "after must be a message id")
    return message_id


def _later(a: str | None, b: str) -> str:
    """Both `after` and a replay id apply: the later (UUIDv7 ids sort by time) wins."""
    return b if a is None or b > a else a


def _page_response(messages: list[Message], after_id: str | None) -> Response:
    next_id = messages[-1].id if messages else after_id
    body = (
        b'{"messages":['
        + b",".join(m.envelope_json(None) for m in messages)
        + b'],"next":'
        + orjson.dumps(next_id)
        + b"}"
    )
    return Response(body, media_type="application/json")
