"""Backfill: the messages a truncated replay left out, fetched over the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model import Message, http_error

if TYPE_CHECKING:
    import httpx

PAGE = 1000  # messages per request


@dataclass
class Gap:
    """Messages strictly after `after` (None: the start of history) and strictly
    before `until` (the first replayed message), still to fetch."""

    after: str | None
    until: str
    done: bool = False


async def next_page(http: httpx.AsyncClient, stream: str, channel: str, gap: Gap) -> list[Message]:
    """The next page of the gap, oldest first; marks it done at `until` or the end of
    history. Raises BloomrError when the server refuses."""
    params = {"channel": channel, "limit": str(PAGE)}
    if gap.after is not None:
        params["after"] = gap.after
    response = await http.get(f"/api/streams/{stream}/messages", params=params)
    if response.status_code != 200:
        raise http_error(response.status_code, response.content)
    page = response.json()
    messages: list[Message] = []
    for envelope in page.get("messages", []):
        if envelope.get("id") == gap.until:
            gap.done = True
            return messages
        messages.append(Message.from_envelope(envelope, replayed=True))
    if not messages or not page.get("next"):
        gap.done = True
    gap.after = page.get("next") or gap.after
    return messages
