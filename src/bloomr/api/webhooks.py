"""Webhooks of a stream: create (the secret is shown once), list and show with their
delivery state (never the secret), delete. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from ..errors import BloomrError
from ..model import DEFAULT_CHANNEL, is_valid_channel
from ..webhooks import guard
from ..webhooks.manager import WebhookManager
from .deps import Admin
from .responses import JSON

router = APIRouter(prefix="/api/streams/{stream_id}/webhooks", tags=["webhooks"])


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[StrictStr, Field(examples=["https://example.com/hooks/bloomr"])]
    channel: StrictStr | None = Field(None, description='default "" (standard output)')
    secret: Annotated[StrictStr, Field(min_length=8, max_length=256)] | None = Field(
        None, description="signs every request; generated when absent"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            guard.check_syntax(value)
        except guard.UrlRefused as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_channel(value):
            raise ValueError('must be "" or match [A-Za-z0-9_.:-]{1,64}')
        return value


async def get_webhooks(request: Request) -> WebhookManager:
    manager: WebhookManager | None = getattr(request.app.state, "webhooks", None)
    if manager is None:
        raise BloomrError("not_found", "webhooks are not enabled on this server")
    return manager


Webhooks = Annotated[WebhookManager, Depends(get_webhooks)]


@router.post("", status_code=201)
async def create_webhook(stream_id: str, body: WebhookCreate, _: Admin, webhooks: Webhooks) -> JSON:
    """POST every message of `channel` to `url`, signed with `secret` (shown only here)."""
    record = await webhooks.create_webhook(
        stream_id, body.url, body.channel or DEFAULT_CHANNEL, body.secret
    )
    return JSON(record.to_json(with_secret=True), status_code=201)


@router.get("")
async def list_webhooks(stream_id: str, _: Admin, webhooks: Webhooks) -> JSON:
    records = await webhooks.list_webhooks(stream_id)
    return JSON({"webhooks": [r.to_json() for r in records]})


@router.get("/{webhook_id}")
async def show_webhook(stream_id: str, webhook_id: str, _: Admin, webhooks: Webhooks) -> JSON:
    return JSON((await webhooks.get_webhook(stream_id, webhook_id)).to_json())


@router.delete("/{webhook_id}", status_code=204)
async def delete_webhook(stream_id: str, webhook_id: str, _: Admin, webhooks: Webhooks) -> Response:
    await webhooks.delete_webhook(stream_id, webhook_id)
    return Response(status_code=204)
