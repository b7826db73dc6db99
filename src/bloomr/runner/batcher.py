"""Hands a script's messages to `publish` in batches, in order, with backpressure."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bloomr.model import Draft

from .spec import Publish

logger = logging.getLogger("bloomr.runner")

MAX_BATCH = 1000
TICK = 0.01  # a lone line waits at most this long for company before it is published


class Batcher:
    """Collects the drafts of one run's pipes and publishes them from a single task, so
    batches go out one at a time and in the order they were added.

    `add` waits while two batches' worth of drafts are queued: when publish is slow the
    readers stop reading, the pipes fill and the script blocks in write(). Memory
    therefore stays bounded however fast the script prints."""

    def __init__(self, publish: Publish, *, max_batch: int = MAX_BATCH, tick: float = TICK) -> None:
        self._publish = publish
        self._max_batch = max_batch
        # Room for one batch being filled while the previous one is published
        self._max_pending = 2 * max_batch
        self._tick = tick
        self._pending: list[Draft] = []
        self._has_data = asyncio.Event()
        self._full = asyncio.Event()  # a whole batch is ready: skip the tick
        self._room = asyncio.Event()
        self._idle = asyncio.Event()  # nothing queued and nothing being published
        self._idle.set()
        self._closing = False
        self._task = asyncio.create_task(self._run())
        self.waiting = 0  # readers blocked in add(): they are being held back, not idle

    async def add(self, drafts: list[Draft]) -> None:
        while len(self._pending) >= self._max_pending:
            self._room.clear()
            self.waiting += 1
            try:
                await self._room.wait()
            finally:
                self.waiting -= 1
        self._pending.extend(drafts)
        self._idle.clear()
        self._has_data.set()
        if len(self._pending) >= self._max_batch:
            self._full.set()

    async def aclose(self) -> None:
        """Publish everything added so far, without waiting for ticks, then stop."""
        self._closing = True
        self._full.set()
        try:
            await self._idle.wait()
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        while True:
            await self._has_data.wait()
            if len(self._pending) < self._max_batch and not self._closing:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._tick):
                        await self._full.wait()
            await self._publish_next()

    async def _publish_next(self) -> None:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        if len(self._pending) < self._max_batch and not self._closing:
            self._full.clear()
        if not self._pending:
            self._has_data.clear()
        self._room.set()
        try:
            await self._publish(batch)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                raise
            # Holding the batch would block the script for as long as the store fails;
            # the server logs the loss instead and the script keeps running. A publish
            # that lets a CancelledError of its own escape must not kill this task either:
            # the readers would then wait for room forever.
            logger.error(
                "publishing %d script messages failed; they are lost", len(batch), exc_info=exc
            )
        if not self._pending:
            self._idle.set()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
