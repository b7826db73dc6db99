"""Script reports: what the node running a script says about it, for every node's API.

The node holding a script's lease saves a `ScriptReport` on each state change and then
sends the control event `script_reported`; an API call waiting for another node to act
(start, stop, restart through a node that does not run the script) wakes on that event
and reads the store again, instead of polling it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ..control import Control, ControlEvent
from ..runner import ScriptReport, ScriptStatus
from ..store.base import ScriptStatusStore

log = logging.getLogger("bloomr.scripts")

Done = Callable[[ScriptReport | None], bool]


class Reports:
    def __init__(self, store: ScriptStatusStore, control: Control, node: str | None) -> None:
        self._store = store
        self._control = control
        self.node = node  # this node's name in its reports
        self._saved: dict[str, ScriptStatus] = {}  # the last status saved per script run here
        self._waiters: dict[str, set[asyncio.Event]] = {}
        control.watch(self._on_control)

    def of_local(self, status: ScriptStatus) -> ScriptReport:
        return ScriptReport(status, self.node)

    async def report(self, stream_id: str, status: ScriptStatus) -> None:
        """Save the status of a script run here unless it is the one saved last."""
        if self._saved.get(stream_id) != status:
            await self.save(stream_id, status)

    async def save(self, stream_id: str, status: ScriptStatus) -> None:
        await self._store.save_script_status(stream_id, self.of_local(status))
        self._saved[stream_id] = status
        try:
            await self._control.send(ControlEvent("script_reported", stream_id))
        except Exception as exc:  # a waiting call reads the store again when its time is up
            log.warning("could not announce the report of %s's script (%s)", stream_id, exc)

    def forget(self, stream_id: str) -> None:
        """The script no longer runs here: its next report is saved whatever it says."""
        self._saved.pop(stream_id, None)

    async def delete(self, stream_id: str) -> None:
        self.forget(stream_id)
        await self._store.delete_script_status(stream_id)

    async def read(self, stream_ids: Sequence[str]) -> dict[str, ScriptReport]:
        return await self._store.script_statuses(stream_ids) if stream_ids else {}

    async def read_one(self, stream_id: str) -> ScriptReport | None:
        return (await self._store.script_statuses([stream_id])).get(stream_id)

    async def wait(self, stream_id: str, done: Done, timeout: float) -> ScriptReport | None:
        """The stream's report once it satisfies `done`, or as it is after `timeout`
        seconds. The store is read at the start, on each `script_reported` for the
        stream, and once more when the time is up."""
        changed = asyncio.Event()
        waiters = self._waiters.setdefault(stream_id, set())
        waiters.add(changed)  # before the first read: a report saved after it wakes us
        try:
            async with asyncio.timeout(timeout):
                while not done(report := await self.read_one(stream_id)):
                    await changed.wait()
                    changed.clear()
                return report
        except TimeoutError:
            return await self.read_one(stream_id)
        finally:
            waiters.discard(changed)
            if not waiters:
                self._waiters.pop(stream_id, None)

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind == "script_reported":
            for changed in self._waiters.get(event.target, ()):
                changed.set()
