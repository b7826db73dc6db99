"""Small helpers for the HTTP API tests: what a user checks on every response."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from server import Server

TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
STREAM_ID_RE = re.compile(r"[A-Za-z0-9]{10}")
ENVELOPE_KEYS = ["id", "stream", "channel", "timestamp", "data"]
_ANY = object()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def assert_uuid7(value: Any) -> None:
    assert isinstance(value, str)
    parsed = uuid.UUID(value)
    assert str(parsed) == value, "ids are canonical lowercase UUIDs"
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def assert_error(
    response: httpx.Response, status: int, code: str, field: Any = _ANY
) -> dict[str, Any]:
    """The documented error: the status, and a body that is exactly
    `{"error": {"code", "message", ...details}}`."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict)
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert set(error) <= {"code", "message", "field"}, error
    if field is not _ANY:
        assert error.get("field") == field, error
    return dict(error)


def assert_envelope(envelope: Any, stream_id: str, channel: str = "") -> None:
    assert isinstance(envelope, dict)
    assert list(envelope) == ENVELOPE_KEYS, envelope
    assert_uuid7(envelope["id"])
    assert envelope["stream"] == stream_id
    assert envelope["channel"] == channel
    assert TIMESTAMP_RE.fullmatch(envelope["timestamp"]), envelope["timestamp"]


def open_client(server: Server) -> httpx.AsyncClient:
    return server.client()


class Api:
    """One HTTP client for a test, with the calls a user makes (admin key by default)."""

    def __init__(self, server: Server, client: httpx.AsyncClient) -> None:
        self.server = server
        self.client = client
        self.admin = server.admin

    # the admin calls are Server's own, made on this test's client

    async def create_stream(self, **fields: Any) -> dict[str, Any]:
        return await self.server.create_stream(self.client, **fields)

    async def create_token(
        self, streams: list[str], scopes: list[str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        return await self.server.create_token(streams, scopes, self.client, **fields)

    async def stream_and_token(self, **fields: Any) -> tuple[str, str]:
        return await self.server.stream_and_token(self.client, **fields)

    async def publish(self, stream_id: str, items: Any, secret: str | None = None) -> list[str]:
        return await self.server.publish(stream_id, items, secret, self.client)

    async def poll(self, stream_id: str, secret: str, **params: Any) -> dict[str, Any]:
        r = await self.client.get(
            f"/api/streams/{stream_id}/messages", params=params, headers=bearer(secret)
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == ["messages", "next"], body
        return dict(body)

    async def poll_all(self, stream_id: str, secret: str, **params: Any) -> list[dict[str, Any]]:
        """Every message the filters match, paging with `next` until a page is empty."""
        out: list[dict[str, Any]] = []
        params = {"limit": 10_000, **params}
        while True:
            page = await self.poll(stream_id, secret, **params)
            out += page["messages"]
            if not page["messages"]:
                return out
            params["after"] = page["next"]


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10) -> None:
    """Poll an observable condition (there is no event to await over plain HTTP)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def messages_url(stream_id: str) -> str:
    return f"/api/streams/{stream_id}/messages"
