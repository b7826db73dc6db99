"""The supervisor of one stream's script: start, stop, restart per policy, report."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable

from bloomr.model import Draft, iso_from_ms, iso_now

from .events import exit_event, spawn_error_event
from .policy import Backoff, ExitInfo, should_restart
from .process import Run
from .spec import Publish, ScriptError, ScriptSpec, ScriptStatus
from .states import ProcessState, check_transition, public_name

logger = logging.getLogger("bloomr.runner")

_S = ProcessState


class Supervisor:
    """Runs one stream's script and publishes what it prints.

    Control calls (start, stop, restart, close) are serialised by a lock; one task per
    start() watches the child, reports its exit and restarts it per policy. stop() only
    asks that task to end and waits for it, so every state change happens in one place
    and is checked against the table in `states.py`."""

    def __init__(
        self,
        stream_id: str,
        spec: ScriptSpec,
        publish: Publish,
        *,
        grace_seconds: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        backoff_reset: float = 10.0,
        on_state: Callable[[], None] | None = None,
    ) -> None:
        self._stream_id = stream_id
        self._on_state = on_state  # told of every state change (must not block)
        self._spec = spec
        self._publish = publish
        self._grace = grace_seconds
        self._backoff = Backoff(backoff_initial, backoff_max, backoff_reset)
        self._state = _S.STOPPED
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._run: Run | None = None
        self._stop_requested = False
        self._wake = asyncio.Event()  # ends a backoff wait early (stop)
        self._closed = False
        self._last_exit: ExitInfo | None = None
        self._restarts = 0
        self._started_at: str | None = None
        self._backoff_until: float | None = None  # Unix time
        self._restarting = False

    # -- control ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the script; returns once it runs (or failed to spawn, which is reported
        as a `spawn_error` on `errors`, not raised). Starting a script that waits in
        backoff starts it now. Raises ScriptError("conflict") if it already runs."""
        async with self._lock:
            self._check_open()
            await self._start_locked()

    async def stop(self) -> None:
        """SIGTERM the script's process group, SIGKILL it after the grace period; returns
        when it is dead and its output published. Cancels a pending restart."""
        async with self._lock:
            await self._stop_locked()

    async def restart(self) -> None:
        async with self._lock:
            self._check_open()
            # the old run's STOPPED is only a step of the restart: anyone looking before
            # the new run starts (another node's API waits for a settled report) must
            # see `stopping`, not a script that was stopped
            self._restarting = True
            try:
                await self._stop_locked()
            finally:
                self._restarting = False
            await self._start_locked()  # STARTING before its first await

    def update_spec(self, spec: ScriptSpec) -> None:
        """Used from the next (re)start on, including restarts by the policy."""
        self._spec = spec

    async def close(self, grace_seconds: float | None = None) -> None:
        """Stop the script for good: the stream is deleted or the server shuts down.
        `grace_seconds`: a shorter grace period than the usual one (the node must be
        done by a deadline, such as a lease's expiry)."""
        async with self._lock:
            self._closed = True
            await self._stop_locked(grace_seconds)

    def status(self) -> ScriptStatus:
        run, ended = self._run, self._last_exit
        until = self._backoff_until if self._state is _S.BACKOFF else None
        midway = self._restarting and self._state is _S.STOPPED
        return ScriptStatus(
            state="stopping" if midway else public_name(self._state),
            pid=run.pid if run is not None else None,
            exit_code=ended.code if ended is not None else None,
            signal=ended.signal if ended is not None else None,
            restarts=self._restarts,
            started_at=self._started_at,
            backoff_until=iso_from_ms(int(until * 1000)) if until is not None else None,
        )

    # -- under the lock --------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ScriptError("conflict", "this script's supervisor is closed")

    async def _start_locked(self) -> None:
        if self._state is _S.BACKOFF:
            await self._stop_locked()  # start now rather than when the wait ends
        if self._task is not None and not self._task.done():
            raise ScriptError("conflict", f"the script is already {public_name(self._state)}")
        self._stop_requested = False
        self._restarts = 0
        self._backoff.reset()
        run = await self._spawn()
        if run is not None:
            self._task = asyncio.create_task(self._supervise(run))

    async def _stop_locked(self, grace_seconds: float | None = None) -> None:
        task = self._task
        if task is None or task.done():
            return  # already stopped, exited or crashed: nothing runs, keep its report
        self._stop_requested = True
        self._wake.set()
        if self._state is _S.RUNNING and self._run is not None:
            self._set_state(_S.STOPPING)
            self._run.terminate(grace_seconds)
        # shield: a caller that gives up waiting must not interrupt the clean-up
        await asyncio.shield(task)

    # -- the supervising task --------------------------------------------------------

    async def _supervise(self, run: Run | None) -> None:
        try:
            while run is not None:
                run = await self._follow(run)
        except Exception:
            logger.exception("supervising the script of stream %s failed", self._stream_id)
            self._state = _S.FATAL  # unchecked on purpose: whatever the state was, it is over
            self._changed()
        finally:
            if self._run is not None:
                self._run.abort()
                self._run = None

    async def _follow(self, run: Run) -> Run | None:
        """Wait for `run` to end and report it; return the next run if the policy says so."""
        ended = await run.wait()
        self._run, self._last_exit = None, ended
        if self._stop_requested:
            self._set_state(_S.STOPPED)
            return None
        self._set_state(_S.CRASHED if ended.failed else _S.EXITED)
        if ended.failed:
            await self._publish_event(exit_event(ended))  # after all output: wait() drained it
        if self._stop_requested or not should_restart(self._spec.restart, ended):
            return None
        if not await self._wait_backoff(run.uptime):
            return None
        self._restarts += 1
        return await self._spawn()

    async def _wait_backoff(self, uptime: float) -> bool:
        """Wait before restarting; False if stop() ended the wait."""
        delay = self._backoff.next_delay(uptime)
        self._backoff_until = time.time() + delay
        self._wake.clear()
        self._set_state(_S.BACKOFF)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._backoff_until = None
        if self._stop_requested:
            self._set_state(_S.STOPPED)
            return False
        return True

    async def _spawn(self) -> Run | None:
        self._set_state(_S.STARTING)
        spec = self._spec
        try:
            run = await Run.spawn(self._stream_id, spec, self._publish, self._grace)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._last_exit, self._started_at = None, None  # no process ran this time
            self._set_state(_S.FATAL)
            await self._publish_event(spawn_error_event(f"cannot start {spec.command[0]!r}: {exc}"))
            return None
        self._run, self._last_exit, self._started_at = run, None, iso_now()
        self._set_state(_S.RUNNING)
        if self._stop_requested:  # stop() came while we were spawning
            self._set_state(_S.STOPPING)
            run.terminate()
        return run

    # -- helpers ---------------------------------------------------------------------

    def _set_state(self, new: ProcessState) -> None:
        check_transition(self._state, new)
        self._state = new
        self._changed()

    def _changed(self) -> None:
        if self._on_state is not None:
            self._on_state()

    async def _publish_event(self, draft: Draft) -> None:
        try:
            await self._publish([draft])
        except Exception:
            logger.exception("publishing a runner event for stream %s failed", self._stream_id)
