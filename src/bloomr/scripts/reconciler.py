"""Every node's loop that makes the scripts it runs match the streams.

A stream's `enabled` flag (in the metadata store) records that its script should run.
The reconciler takes the free leases of enabled scripts and starts them, and stops what
this node should not run any more (a script whose stream was stopped or deleted
elsewhere). It looks at every stream each second, and at once at the streams a control
event names; it reports each state change of the scripts it runs. Losing a lease is
the lease keeper's business (see `Running`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Literal

from ..control import Control, ControlEvent
from ..errors import BloomrError
from ..model import Stream
from ..runner import ScriptError, Supervisor
from ..runner.states import FINISHED
from ..store.base import MetadataStore
from .running import LEASE_PREFIX, Running, SetEnabled, lease_key, script_spec

log = logging.getLogger("bloomr.scripts")

Action = Literal["start", "stop", "restart"]
_SCAN_EVERY = 1.0  # seconds between looks at every stream (another node may have died)


class Reconciler:
    def __init__(
        self, running: Running, meta: MetadataStore, control: Control, set_enabled: SetEnabled
    ) -> None:
        self._running = running
        self._meta = meta
        self._set_enabled = set_enabled
        self._dirty: set[str] = set()  # streams a control event said changed
        self.wake = asyncio.Event()
        self._jobs: set[asyncio.Task[None]] = set()
        control.watch(self._on_control)

    async def run(self) -> None:
        next_scan = time.monotonic() + _SCAN_EVERY
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_scan - time.monotonic())):
                    await self.wake.wait()
            self.wake.clear()
            try:
                dirty, self._dirty = self._dirty, set()
                if time.monotonic() >= next_scan:
                    next_scan = time.monotonic() + _SCAN_EVERY
                    await self.scan(None)
                elif dirty:
                    await self.scan(dirty)
                for stream_id in self._running.ids():
                    await self._running.report(stream_id)
            except Exception:  # the store is down: try again on the next turn
                log.exception("reconciling scripts failed")

    def cancel_jobs(self) -> None:
        for job in list(self._jobs):
            job.cancel()

    async def scan(self, only: set[str] | None) -> None:
        """Settle the scripts of these streams (every stream when None)."""
        if only is None:
            streams = await self._meta.list_streams()
            owned = self._running.ids()
        else:
            found = [await self._meta.get_stream(i) for i in sorted(only)]
            streams = [s for s in found if s is not None]
            owned = [i for i in only if self._running.get(i) is not None]
        by_id = {s.id: s for s in streams}
        for stream_id in owned:
            if not should_run(by_id.get(stream_id)):
                await self._settle(stream_id)
        wanted = [s for s in streams if should_run(s) and self._running.get(s.id) is None]
        if wanted:
            taken = await self._running.keeper.taken(LEASE_PREFIX)
            for stream in wanted:
                if lease_key(stream.id) not in taken:
                    await self._take(stream.id)

    async def _settle(self, stream_id: str) -> None:
        """Stop a script here if its stream (read again, under its lock) says so."""
        async with self._running.lock(stream_id):
            stream = await self._meta.get_stream(stream_id)
            if self._running.get(stream_id) is not None and not should_run(stream):
                await self._running.retire(stream_id, forget=stream is None)

    async def _take(self, stream_id: str) -> None:
        running = self._running
        async with running.lock(stream_id):
            stream = await self._meta.get_stream(stream_id)
            if running.get(stream_id) is not None or stream is None or not should_run(stream):
                return
            if not await running.hold(stream_id):
                return
            last = await running.reports.read_one(stream_id)
            if last is not None and last.node != running.reports.node and last.state in FINISHED:
                # it had ended on a node that went away: do what its clean stop would have
                log.info("the script of %s had ended on its node: not starting it", stream_id)
                await self._set_enabled(stream, False)
                await running.keeper.release(lease_key(stream_id))
                return
            supervisor = running.supervise(stream)
            try:
                await supervisor.start()
            except ScriptError as exc:
                log.warning("could not start the script of %s: %s", stream_id, exc)
            log.info("running the script of %s here", stream_id)
            await running.report(stream_id)

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind in ("stream_updated", "stream_deleted"):
            self._dirty.add(event.target)
            self.wake.set()
        elif event.kind in ("script_start", "script_restart"):
            action: Action = "start" if event.kind == "script_start" else "restart"
            job = asyncio.create_task(self._asked(event.target, action))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _asked(self, stream_id: str, action: Action) -> None:
        """Another node's API asked for a start or restart: ours to do if we hold it."""
        try:
            async with self._running.lock(stream_id):
                supervisor = self._running.get(stream_id)
                stream = await self._meta.get_stream(stream_id)
                if supervisor is None or stream is None or not stream.command:
                    self._dirty.add(stream_id)  # free: whoever scans first takes it
                    self.wake.set()
                    return
                supervisor.update_spec(script_spec(stream))
                with contextlib.suppress(BloomrError):  # already running: nothing to do
                    await act(supervisor, action)
                await self._running.report(stream_id)
        except Exception:
            log.exception("could not %s the script of %s", action, stream_id)


def should_run(stream: Stream | None) -> bool:
    return stream is not None and bool(stream.command) and stream.enabled


async def act(supervisor: Supervisor, action: Action) -> None:
    try:
        if action == "start":
            await supervisor.start()
        elif action == "stop":
            await supervisor.stop()
        else:
            await supervisor.restart()
    except ScriptError as exc:
        raise BloomrError(
            "conflict" if exc.code == "conflict" else "validation_failed", exc.message
        ) from None
