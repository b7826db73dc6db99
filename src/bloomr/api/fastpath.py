"""The publish endpoint's fast path in the ASGI app. Same work, same answers, same
errors as the route in `api/messages.py`: it calls its own `publish_body` (or its
parts); only the HTTP plumbing differs.

`FastPublish` publishes without FastAPI's per-request machinery (dependency solving,
middleware wrappers, response classes). The faster path in front of it, inside the
HTTP protocol (`server/http.py`), shares the helpers below and hands it what it cannot
publish on the spot, already parsed (`HANDED_OVER`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import Principal
from ..credentials import secret_of
from ..faults import PUBLISH_ANSWER_WITHIN, as_error, in_time, retry_after
from ..idempotency import header_value
from ..model import Draft, Stream
from .context import Context
from .messages import publish_body, published_body

PUBLISH_PATH = re.compile(r"/api/streams/([^/]+)/messages/?")
JSON_TYPE = (b"content-type", b"application/json")


class FastPublish:
    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = PUBLISH_PATH.fullmatch(scope["path"])
            if match is not None:
                await self._publish(match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _publish(self, stream_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            handed: PublishRequest | None = scope.get(HANDED_OVER)
            if handed is not None:  # authorized and parsed already, in PublishingHttp
                publishing = self.ctx.hub.publish(handed.stream, handed.drafts)
                messages = await in_time(publishing, PUBLISH_ANSWER_WITHIN, "the publish")
                await _respond(send, 201, published_body(messages))
                return
            caller = await self.ctx.auth.identify(
                secret_of(scope["headers"], scope["query_string"])
            )
            raw = await _body(receive)
            if raw is None:
                return  # the client went away
            key = header_value(scope["headers"])
            await _respond(send, 201, await publish_body(self.ctx, caller, stream_id, raw, key))
        except Exception as exc:
            await _respond(send, *failure(exc))


def failure(exc: Exception) -> tuple[int, bytes]:
    """The answer to a publish that failed with `exc` (an unexpected error is logged with
    its traceback and answered as `internal`; a backend's failure as `unavailable`)."""
    error = as_error(exc, "publish")
    return error.status, orjson.dumps({"error": error.payload()})


async def _body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [JSON_TYPE, (b"content-length", str(len(body)).encode()), *retry_after(status)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass(slots=True)
class PublishRequest:
    """A publish the HTTP protocol authorized (and, once read, parsed)."""

    caller: Principal
    stream: Stream
    chunks: list[bytes] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)  # once parsed


# The scope key of a request handed over already parsed: FastPublish does not parse the
# body (a batch too big to store on the spot) a second time.
HANDED_OVER = "bloomr.publish"
