"""The server's scripts, as the API and the app see them: status, start, stop, restart
through any node, and the node's life cycle.

Each script runs on exactly one node, the holder of its lease (`running.py`); every
node's reconciler (`reconciler.py`) starts the enabled scripts no node runs and stops
those it should not run; the node running a script reports its state (`reports.py`),
which every node's API shows. An API call on a node that does not run the script sets
`enabled` or sends a control event, then waits (bounded) for the running node's report.
One node or many makes no difference here: the lease keeper and the report store do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..control import Control, ControlEvent, ControlKind
from ..errors import BloomrError
from ..hub import Hub
from ..leases import LeaseKeeper
from ..model import Draft, Stream
from ..runner import NEVER_RAN, Publish, ScriptReport, Supervisor
from ..runner.states import ALIVE, ALIVE_OR_STOPPING, PASSING
from ..store.base import MetadataStore, ScriptStatusStore
from ..streams import Streams
from ..tasks import cancel
from .reconciler import Action, Reconciler, act
from .reports import Reports
from .running import Running, SetEnabled, lease_key, script_spec

log = logging.getLogger("bloomr.scripts")

_REMOTE_WAIT = 3.0  # seconds an API call waits for another node to act


class ScriptManager:
    def __init__(
        self,
        hub: Hub,
        streams: Streams,
        control: Control,
        meta: MetadataStore,
        keeper: LeaseKeeper,
        status: ScriptStatusStore,
        grace_seconds: float = 5.0,
    ) -> None:
        self._control = control
        self._meta = meta
        self._streams = streams
        self._set_enabled: SetEnabled = streams.set_enabled
        set_enabled = self._set_enabled
        self._grace = grace_seconds
        self._reports = Reports(status, control, keeper.node)
        self._hub = hub
        self._running = Running(keeper, self._reports, self._new_supervisor)
        self._reconciler = Reconciler(self._running, meta, control, set_enabled)
        self._task: asyncio.Task[None] | None = None

    def _new_supervisor(self, stream: Stream) -> Supervisor:
        return Supervisor(
            stream.id, script_spec(stream), self._publisher(stream.id),
            grace_seconds=self._grace, on_state=self._reconciler.wake.set,
        )  # fmt: skip

    def _publisher(self, stream_id: str) -> Publish:
        async def publish(drafts: list[Draft]) -> None:
            stream = await self._streams.get(stream_id)
            if stream is None:
                raise BloomrError("not_found", f"stream {stream_id} was deleted")
            await self._hub.publish(stream, drafts)

        return publish

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start every enabled script no node runs (in embedded mode: every script that
        was running when bloomr last stopped), then keep reconciling."""
        try:
            await self._reconciler.scan(None)
        except Exception:
            log.exception("starting the scripts failed")
        self._task = asyncio.create_task(self._reconciler.run(), name="bloomr-scripts")

    async def close(self) -> None:
        """Stop every script here (this node is stopping) and free its lease at once, so
        another node takes over the running ones. Those running (or waiting to restart)
        keep `enabled`; finished ones lose it."""
        await cancel(self._task)
        self._task = None
        self._reconciler.cancel_jobs()
        for stream_id in self._running.ids():
            supervisor = self._running.get(stream_id)
            if supervisor is not None and supervisor.status().state not in ALIVE:
                await _quietly(self._disable(stream_id))
        for stream_id, supervisor in (await self._running.close()).items():
            await _quietly(self._reports.save(stream_id, supervisor.status()))
            await _quietly(self._running.keeper.release(lease_key(stream_id)))

    @property
    def running_count(self) -> int:
        return self._running.alive_count

    # -- status -----------------------------------------------------------------------

    async def status_json(self, stream: Stream) -> dict[str, Any] | None:
        return (await self.statuses([stream]))[stream.id]

    async def statuses(self, streams: Sequence[Stream]) -> dict[str, dict[str, Any] | None]:
        """Each stream's script status: this node's own for the scripts it runs, the
        reports of the nodes running them for the others."""
        remote = [s.id for s in streams if s.command and self._running.get(s.id) is None]
        reports = await self._reports.read(remote)
        out: dict[str, dict[str, Any] | None] = {}
        for stream in streams:
            if not stream.command:
                out[stream.id] = None
                continue
            supervisor = self._running.get(stream.id)
            if supervisor is not None:
                report = self._reports.of_local(supervisor.status())
            else:
                report = reports.get(stream.id) or ScriptReport(NEVER_RAN, None)
            out[stream.id] = self._public(report, stream.enabled)
        return out

    def _public(self, report: ScriptReport, enabled: bool) -> dict[str, Any]:
        doc = report.status.to_json()
        if self._reports.node is not None:  # nodes have names: say which one runs it
            doc["node"] = report.node
        doc["enabled"] = enabled
        return doc

    # -- the API's operations -----------------------------------------------------------

    async def control(self, stream: Stream, action: Action) -> None:
        spec = script_spec(stream)
        async with self._running.lock(stream.id):
            supervisor = self._running.get(stream.id)
            if action == "stop":
                await self._stop(stream, supervisor)
                return
            if supervisor is None and await self._running.hold(stream.id):
                supervisor = self._running.supervise(stream)
            if supervisor is None:  # another node runs it
                await self._remote(stream, action)
                return
            supervisor.update_spec(spec)
            await act(supervisor, action)
            await self._enable(stream, True)
            await self._running.report(stream.id)

    async def _stop(self, stream: Stream, supervisor: Supervisor | None) -> None:
        if supervisor is None:  # another node's (or nobody's): it stops on `enabled`
            before = await self._reports.read_one(stream.id)
            await self._enable(stream, False)
            if before is not None and before.state in ALIVE_OR_STOPPING:
                await self._reports.wait(
                    stream.id, lambda r: r is None or r.state not in ALIVE_OR_STOPPING,
                    self._grace + _REMOTE_WAIT,
                )  # fmt: skip
            return
        await act(supervisor, "stop")
        await self._enable(stream, False)
        await self._running.retire(stream.id)

    async def _remote(self, stream: Stream, action: Action) -> None:
        """Ask the node holding the lease, then wait (bounded) for its report."""
        before = await self._reports.read_one(stream.id)
        if action == "start" and before is not None and before.state in ALIVE:
            raise BloomrError("conflict", f"the script is already {before.state}")
        await self._enable(stream, True)
        kind: ControlKind = "script_start" if action == "start" else "script_restart"
        await self._control.send(ControlEvent(kind, stream.id))
        wait = _REMOTE_WAIT + (self._grace if action == "restart" else 0)
        await self._reports.wait(stream.id, lambda r: _settled(r) and r != before, wait)

    def check(self, stream: Stream) -> None:
        """Refuse a stream whose script could never run, before it is stored."""
        if stream.command:
            script_spec(stream)

    async def stream_updated(self, stream: Stream) -> None:
        """Call before storing the stream: a removed command stops its script (it could
        not be controlled any more) and clears `enabled`."""
        if not stream.command:
            stream.enabled = False
        supervisor = self._running.get(stream.id)
        if supervisor is None:
            return
        if stream.command:
            supervisor.update_spec(script_spec(stream))
            return
        async with self._running.lock(stream.id):
            await self._running.retire(stream.id)

    async def stream_deleted(self, stream_id: str) -> None:
        async with self._running.lock(stream_id):
            await self._running.retire(stream_id, forget=True)
        await self._reports.delete(stream_id)

    # -- helpers ----------------------------------------------------------------------

    async def _enable(self, stream: Stream, enabled: bool) -> None:
        if stream.enabled != enabled:
            await self._set_enabled(stream, enabled)

    async def _disable(self, stream_id: str) -> None:
        stream = await self._meta.get_stream(stream_id)
        if stream is not None:
            await self._enable(stream, False)


async def _quietly(work: Any) -> None:
    try:
        await work
    except Exception:
        log.exception("script clean-up failed")


def _settled(report: ScriptReport | None) -> bool:
    """A report an API call can answer with: the owner's every change is reported, and a
    restart passes through `stopping` and `starting` on its way."""
    return report is not None and report.state not in PASSING
