"""The scripts this node runs: one runner Supervisor per stream whose lease it holds.

A supervisor exists here only while the lease `script:<stream id>` is held through the
lease keeper. Losing the lease (the keeper says so before another node may take it)
stops the script at once; retiring it (stopped, its stream deleted, this node stopping)
saves its last report and frees the lease for the others."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import BloomrError
from ..leases import LeaseKeeper
from ..model import Stream
from ..runner import ScriptError, ScriptSpec, Supervisor
from ..runner.states import ALIVE
from .reports import Reports

log = logging.getLogger("bloomr.scripts")

SetEnabled = Callable[[Stream, bool], Awaitable[None]]  # store and announce `enabled`
LEASE_PREFIX = "script:"


def lease_key(stream_id: str) -> str:
    return f"{LEASE_PREFIX}{stream_id}"


def script_spec(stream: Stream) -> ScriptSpec:
    """The stream's script, or `validation_failed` for one that cannot be run."""
    if not stream.command:
        raise BloomrError("conflict", f"stream {stream.id} has no command to run")
    try:
        return ScriptSpec(stream.command, stream.cwd, stream.env, stream.restart)
    except ScriptError as exc:
        raise BloomrError("validation_failed", exc.message, field="command") from None


class Running:
    """Supervisors by stream id, with a lock per stream that every change of one takes
    (API calls, the reconciler, a lost lease), so they never interleave."""

    def __init__(
        self, keeper: LeaseKeeper, reports: Reports, new: Callable[[Stream], Supervisor]
    ) -> None:
        self.keeper, self.reports, self._new = keeper, reports, new
        self._supervisors: dict[str, Supervisor] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def get(self, stream_id: str) -> Supervisor | None:
        return self._supervisors.get(stream_id)

    def ids(self) -> list[str]:
        return list(self._supervisors)

    @property
    def alive_count(self) -> int:
        return sum(1 for s in self._supervisors.values() if s.status().state in ALIVE)

    def lock(self, stream_id: str) -> asyncio.Lock:
        return self._locks.setdefault(stream_id, asyncio.Lock())

    async def hold(self, stream_id: str) -> bool:
        """Take the script's lease (call under its lock): True when this node holds it."""
        return await self.keeper.take(lease_key(stream_id), self._lost)

    def supervise(self, stream: Stream) -> Supervisor:
        """The stream's supervisor, made (not started) if there is none; call with its
        lease held."""
        supervisor = self._supervisors.get(stream.id)
        if supervisor is None:
            supervisor = self._supervisors[stream.id] = self._new(stream)
        return supervisor

    async def report(self, stream_id: str) -> None:
        supervisor = self._supervisors.get(stream_id)
        if supervisor is not None:
            await self.reports.report(stream_id, supervisor.status())

    async def retire(self, stream_id: str, *, forget: bool = False) -> None:
        """Stop a script here for good (call under its lock): report it (unless its
        stream is gone), free its lease."""
        supervisor = self._supervisors.pop(stream_id, None)
        self.reports.forget(stream_id)
        if supervisor is None:
            return
        await supervisor.close()
        if not forget:
            await self.reports.save(stream_id, supervisor.status())
        await self.keeper.release(lease_key(stream_id))

    async def close(self) -> dict[str, Supervisor]:
        """Stop every script here at once (shutdown waits one grace period, not one per
        script); their reports and leases are the caller's. Returns what ran."""
        supervisors = dict(self._supervisors)
        self._supervisors.clear()
        await asyncio.gather(*(s.close() for s in supervisors.values()), return_exceptions=True)
        return supervisors

    async def _lost(self, key: str, left: float) -> None:
        """The lease is lost: stop the script within `left` seconds; its lease and its
        reports belong to whichever node takes it next."""
        stream_id = key.removeprefix(LEASE_PREFIX)
        log.warning("lost the lease of %s's script: stopping it here", stream_id)
        supervisor = self._supervisors.pop(stream_id, None)
        self.reports.forget(stream_id)
        if supervisor is not None:  # not under the stream's lock: the deadline comes first
            await supervisor.close(left)
