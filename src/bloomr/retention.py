"""Retention: every `interval`, each stream's history is trimmed to its `retention`
(`max_age`, `max_messages`). One stream whose trim fails is logged and skipped: the
others are still trimmed, and it is tried again next time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from .broker import Broker
from .model import Stream, now_ms
from .replay import parse_age_ms

log = logging.getLogger("bloomr.retention")

_OLDEST_MS = -(2**62)  # an age longer than time itself keeps everything (fits int64)
_MAX_COUNT = 2**62  # a count beyond any history keeps everything (fits int64)


def trim_bounds(stream: Stream, now: int) -> tuple[int, int]:
    """`(oldest timestamp kept, most messages kept)` for a stream's retention, within
    what every backend can compare (64-bit integers)."""
    age = parse_age_ms(stream.retention.max_age)
    oldest = _OLDEST_MS if age is None else max(now - age, _OLDEST_MS)
    return oldest, min(stream.retention.max_messages, _MAX_COUNT)


class Trimmer:
    def __init__(
        self, broker: Broker, list_streams: Callable[[], Awaitable[list[Stream]]], interval: float
    ) -> None:
        self._broker = broker
        self._list_streams = list_streams
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bloomr-trim")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.trim_all()
            except Exception:  # the stream list could not be read: next time
                log.exception("trimming history failed")

    async def trim_all(self) -> None:
        now = now_ms()
        for stream in await self._list_streams():
            oldest, most = trim_bounds(stream, now)
            try:
                await self._broker.trim(stream.id, oldest, most)
            except Exception:
                log.exception("trimming the history of %s failed", stream.id)
