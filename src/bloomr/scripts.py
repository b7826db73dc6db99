"""The server's scripts: one runner Supervisor per stream with a command, wired to the
hub's publish, on exactly one node.

A stream's `enabled` flag (in the metadata store) records that its script should run.
Whoever runs it holds the lease `script:<stream id>`; a reconcile loop on every node
renews its leases (every ttl/5), takes the free leases of enabled scripts and starts
them (every second, at once when a control event says a stream changed), and stops what
it should not run any more: a script whose stream was stopped or deleted elsewhere, whose
lease it lost, or whose renewals failed for longer than half the ttl (so that it stops
before another node may take over). The holder reports each state change to the status
store, which every node's API reads. In embedded mode the leases and reports are local
(one node), which keeps the single-process behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .control import Control, ControlEvent
from .errors import BloomrError
from .hub import Hub
from .model import Draft, Stream
from .runner import ScriptError, ScriptSpec, Supervisor
from .store.base import LeaseStore, MetadataStore, ScriptStatusStore
from .streams import Streams

log = logging.getLogger("bloomr.scripts")

Action = Literal["start", "stop", "restart"]
_ALIVE = frozenset({"starting", "running", "backoff"})
_FINISHED = frozenset({"exited", "crashed"})  # ended by itself, no restart pending
_PASSING = frozenset({"starting", "stopping"})  # on the way to another state
_STOPPED: dict[str, Any] = {
    "state": "stopped", "pid": None, "exit_code": None, "signal": None,
    "restarts": 0, "started_at": None,
}  # fmt: skip
_TICK = 0.25  # seconds between looks at the local supervisors' states (each change wakes it too)
_SCAN_EVERY = 1.0  # seconds between looks at every stream
_REMOTE_WAIT = 3.0  # seconds an API call waits for another node to act


def script_spec(stream: Stream) -> ScriptSpec:
    """The stream's script, or `validation_failed` for one that cannot be run."""
    if not stream.command:
        raise BloomrError("conflict", f"stream {stream.id} has no command to run")
    try:
        return ScriptSpec(stream.command, stream.cwd, stream.env, stream.restart)
    except ScriptError as exc:
        raise BloomrError("validation_failed", exc.message, field="command") from None


def lease_key(stream_id: str) -> str:
    return f"script:{stream_id}"


class ScriptManager:
    def __init__(
        self,
        hub: Hub,
        streams: Streams,
        control: Control,
        meta: MetadataStore,
        leases: LeaseStore,
        status: ScriptStatusStore,
        node_id: str,
        grace_seconds: float = 5.0,
        lease_ttl: float = 10.0,
        *,
        cluster: bool = False,
    ) -> None:
        self._hub = hub
        self._streams = streams
        self._control = control
        self._meta = meta
        self._leases = leases
        self._status = status
        self.node_id = node_id
        self._grace = grace_seconds
        self._ttl = lease_ttl
        # cluster: the API tells which node runs a script, and leases are renewed and
        # streams scanned on timers (another node may die); one node needs neither
        self._cluster = cluster
        self._supervisors: dict[str, Supervisor] = {}  # the scripts whose lease we hold
        self._reported: dict[str, dict[str, Any]] = {}  # the last report per script
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()  # streams a control event said changed
        self._wake = asyncio.Event()
        self._renewed_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        control.watch(self._on_control)

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start every enabled script no node runs (in embedded mode: every script that
        was running when bloomr last stopped), then keep reconciling."""
        try:
            await self._scan(None)
        except Exception:
            log.exception("starting the scripts failed")
        self._task = asyncio.create_task(self._loop(), name="bloomr-scripts")

    async def close(self) -> None:
        """Stop every script here (this node is stopping) and free its lease at once, so
        another node takes over the running ones. Those running (or waiting to restart)
        keep `enabled`; finished ones lose it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for job in list(self._jobs):
            job.cancel()
        for stream_id, supervisor in self._supervisors.items():
            if supervisor.status().state not in _ALIVE:
                await self._quietly(self._set_enabled_by_id(stream_id, False))
        supervisors = dict(self._supervisors)
        self._supervisors.clear()
        # together: shutdown waits one grace period, not one per script
        await asyncio.gather(*(s.close() for s in supervisors.values()), return_exceptions=True)
        for stream_id, supervisor in supervisors.items():
            await self._quietly(self._save(stream_id, supervisor.status().to_json()))
            await self._quietly(self._leases.release(lease_key(stream_id), self.node_id))

    @property
    def running_count(self) -> int:
        return sum(1 for s in self._supervisors.values() if s.status().state in _ALIVE)

    # -- status -----------------------------------------------------------------------

    async def status_json(self, stream: Stream) -> dict[str, Any] | None:
        return (await self.statuses([stream]))[stream.id]

    async def statuses(self, streams: Sequence[Stream]) -> dict[str, dict[str, Any] | None]:
        """Each stream's script status: this node's own for the scripts it runs, the
        reports of the nodes running them for the others."""
        remote = [s.id for s in streams if s.command and s.id not in self._supervisors]
        reports = await self._status.script_statuses(remote) if remote else {}
        out: dict[str, dict[str, Any] | None] = {}
        for stream in streams:
            if not stream.command:
                out[stream.id] = None
                continue
            supervisor = self._supervisors.get(stream.id)
            if supervisor is not None:
                doc = {**supervisor.status().to_json(), "node": self.node_id}
            else:
                doc = reports.get(stream.id) or {**_STOPPED, "node": None}
            if not self._cluster:
                doc.pop("node", None)
            out[stream.id] = {**doc, "enabled": stream.enabled}
        return out

    # -- the API's operations -----------------------------------------------------------

    async def control(self, stream: Stream, action: Action) -> None:
        spec = script_spec(stream)
        async with self._lock(stream.id):
            supervisor = self._supervisors.get(stream.id)
            if action == "stop":
                await self._stop(stream, supervisor)
                return
            if supervisor is None and await self._leases.acquire(
                lease_key(stream.id), self.node_id, self._ttl
            ):
                supervisor = self._supervisor(stream)
            if supervisor is None:  # another node runs it
                await self._remote(stream, action)
                return
            supervisor.update_spec(spec)
            await _act(supervisor, action)
            await self._set_enabled(stream, True)
            await self._report(stream.id)

    async def _stop(self, stream: Stream, supervisor: Supervisor | None) -> None:
        if supervisor is None:  # another node's (or nobody's): it stops on `enabled`
            before = await self._report_of(stream.id)
            await self._set_enabled(stream, False)
            if before is not None and before["state"] in _ALIVE | {"stopping"}:
                await self._await_report(
                    stream.id, lambda r: r is None or r["state"] not in _ALIVE | {"stopping"},
                    self._grace + _REMOTE_WAIT,
                )  # fmt: skip
            return
        await _act(supervisor, "stop")
        await self._set_enabled(stream, False)
        await self._retire(stream.id)

    async def _remote(self, stream: Stream, action: Action) -> None:
        """Ask the node holding the lease, then wait (bounded) for its report."""
        before = await self._report_of(stream.id)
        if action == "start" and before is not None and before["state"] in _ALIVE:
            raise BloomrError("conflict", f"the script is already {before['state']}")
        await self._set_enabled(stream, True)
        await self._control.send(ControlEvent(f"script_{action}", stream.id))  # type: ignore[arg-type]
        wait = _REMOTE_WAIT + (self._grace if action == "restart" else 0)
        await self._await_report(stream.id, lambda r: _settled(r) and r != before, wait)

    def check(self, stream: Stream) -> None:
        """Refuse a stream whose script could never run, before it is stored."""
        if stream.command:
            script_spec(stream)

    async def stream_updated(self, stream: Stream) -> None:
        """Call before storing the stream: a removed command stops its script (it could
        not be controlled any more) and clears `enabled`."""
        if not stream.command:
            stream.enabled = False
        supervisor = self._supervisors.get(stream.id)
        if supervisor is None:
            return
        if stream.command:
            supervisor.update_spec(script_spec(stream))
            return
        async with self._lock(stream.id):
            await self._retire(stream.id)

    async def stream_deleted(self, stream_id: str) -> None:
        async with self._lock(stream_id):
            await self._retire(stream_id, forget=True)
        await self._status.delete_script_status(stream_id)

    # -- reconciling ------------------------------------------------------------------

    def _on_control(self, event: ControlEvent) -> None:
        if event.kind in ("stream_updated", "stream_deleted"):
            self._dirty.add(event.target)
            self._wake.set()
        elif event.kind in ("script_start", "script_restart"):
            action: Action = "start" if event.kind == "script_start" else "restart"
            job = asyncio.create_task(self._asked(event.target, action))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    async def _asked(self, stream_id: str, action: Action) -> None:
        """Another node's API asked for a start or restart: ours to do if we hold it."""
        try:
            async with self._lock(stream_id):
                supervisor = self._supervisors.get(stream_id)
                stream = await self._meta.get_stream(stream_id)
                if supervisor is None or stream is None or not stream.command:
                    self._dirty.add(stream_id)  # free: whoever scans first takes it
                    self._wake.set()
                    return
                supervisor.update_spec(script_spec(stream))
                with contextlib.suppress(BloomrError):  # already running: nothing to do
                    await _act(supervisor, action)
                await self._report(stream_id)
        except Exception:
            log.exception("could not %s the script of %s", action, stream_id)

    async def _loop(self) -> None:
        now = time.monotonic()
        next_renew, next_scan = now + self._ttl / 5, now + _SCAN_EVERY
        tick = _TICK if self._cluster else None  # one node: state changes and events wake it
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            self._wake.clear()
            try:
                now = time.monotonic()
                if self._cluster and now >= next_renew:
                    next_renew = now + self._ttl / 5
                    await self._renew()
                dirty, self._dirty = self._dirty, set()
                if self._cluster and now >= next_scan:
                    next_scan = now + _SCAN_EVERY
                    await self._scan(None)
                elif dirty:
                    await self._scan(dirty)
                await self._report_changes()
            except Exception:  # the store is down: try again next tick
                log.exception("reconciling scripts failed")

    async def _renew(self) -> None:
        lost: list[str] = []
        try:
            for stream_id in list(self._supervisors):
                key = lease_key(stream_id)
                if not await self._leases.acquire(key, self.node_id, self._ttl):
                    lost.append(stream_id)
            self._renewed_at = time.monotonic()
        except Exception as exc:
            late = time.monotonic() - self._renewed_at
            if late <= self._ttl / 2:
                log.warning("renewing script leases failed (%s): trying again", exc)
                return
            log.error("script leases not renewed for %.1f s: stopping this node's scripts", late)
            lost = list(self._supervisors)
        for stream_id in lost:
            log.warning("lost the lease of %s's script: stopping it here", stream_id)
            async with self._lock(stream_id):
                await self._retire(stream_id, release=False)

    async def _scan(self, only: set[str] | None) -> None:
        if only is None:
            streams = await self._meta.list_streams()
            owned = list(self._supervisors)
        else:
            found = [await self._meta.get_stream(i) for i in sorted(only)]
            streams = [s for s in found if s is not None]
            owned = [i for i in only if i in self._supervisors]
        by_id = {s.id: s for s in streams}
        for stream_id in owned:
            if not _should_run(by_id.get(stream_id)):
                await self._settle(stream_id)
        wanted = [s for s in streams if _should_run(s) and s.id not in self._supervisors]
        if wanted:
            held = await self._leases.holders("script:")
            for stream in wanted:
                if lease_key(stream.id) not in held:
                    await self._take(stream.id)

    async def _settle(self, stream_id: str) -> None:
        """Stop a script here if its stream (read again, under its lock) says so."""
        async with self._lock(stream_id):
            stream = await self._meta.get_stream(stream_id)
            if stream_id in self._supervisors and not _should_run(stream):
                await self._retire(stream_id, forget=stream is None)

    async def _take(self, stream_id: str) -> None:
        async with self._lock(stream_id):
            stream = await self._meta.get_stream(stream_id)
            if stream_id in self._supervisors or stream is None or not _should_run(stream):
                return
            if not await self._leases.acquire(lease_key(stream_id), self.node_id, self._ttl):
                return
            last = await self._report_of(stream_id)
            if last is not None and last.get("node") != self.node_id and last["state"] in _FINISHED:
                # it had ended on a node that went away: do what its clean stop would have
                log.info("the script of %s had ended on its node: not starting it", stream_id)
                await self._set_enabled(stream, False)
                await self._leases.release(lease_key(stream_id), self.node_id)
                return
            supervisor = self._supervisor(stream)
            try:
                await supervisor.start()
            except ScriptError as exc:
                log.warning("could not start the script of %s: %s", stream_id, exc)
            log.info("running the script of %s on node %s", stream_id, self.node_id)
            await self._report(stream_id)

    async def _retire(self, stream_id: str, *, forget: bool = False, release: bool = True) -> None:
        """Stop a script here for good (call under its lock); report it, free the lease."""
        supervisor = self._supervisors.pop(stream_id, None)
        self._reported.pop(stream_id, None)
        if supervisor is None:
            return
        await supervisor.close()
        if not release:  # lost: the lease (and the reports) belong to another node now
            return
        if not forget:
            await self._save(stream_id, supervisor.status().to_json())
        await self._leases.release(lease_key(stream_id), self.node_id)

    # -- reports ----------------------------------------------------------------------

    async def _report(self, stream_id: str) -> None:
        supervisor = self._supervisors.get(stream_id)
        if supervisor is not None:
            doc = supervisor.status().to_json()
            if doc != self._reported.get(stream_id):
                await self._save(stream_id, doc)
                self._reported[stream_id] = doc

    async def _report_changes(self) -> None:
        for stream_id in list(self._supervisors):
            await self._report(stream_id)

    async def _save(self, stream_id: str, doc: dict[str, Any]) -> None:
        report = {**doc, "node": self.node_id}
        await self._status.save_script_status(stream_id, self.node_id, report)

    async def _report_of(self, stream_id: str) -> dict[str, Any] | None:
        return (await self._status.script_statuses([stream_id])).get(stream_id)

    async def _await_report(
        self, stream_id: str, done: Callable[[dict[str, Any] | None], bool], timeout: float
    ) -> None:
        """Wait until another node's report satisfies `done` (or the time is up)."""
        deadline = time.monotonic() + timeout
        while not done(await self._report_of(stream_id)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    # -- helpers ----------------------------------------------------------------------

    def _lock(self, stream_id: str) -> asyncio.Lock:
        return self._locks.setdefault(stream_id, asyncio.Lock())

    async def _set_enabled(self, stream: Stream, enabled: bool) -> None:
        await self._streams.set_enabled(stream, enabled)

    async def _set_enabled_by_id(self, stream_id: str, enabled: bool) -> None:
        stream = await self._meta.get_stream(stream_id)
        if stream is not None and stream.enabled != enabled:
            stream.enabled = enabled
            await self._meta.update_stream(stream)

    async def _quietly(self, work: Any) -> None:
        try:
            await work
        except Exception:
            log.exception("script clean-up failed")

    def _supervisor(self, stream: Stream) -> Supervisor:
        supervisor = self._supervisors.get(stream.id)
        if supervisor is None:
            supervisor = Supervisor(
                stream.id, script_spec(stream), self._publisher(stream.id),
                grace_seconds=self._grace, on_state=self._wake.set,
            )  # fmt: skip
            self._supervisors[stream.id] = supervisor
        return supervisor

    def _publisher(self, stream_id: str) -> Any:
        async def publish(drafts: list[Draft]) -> None:
            stream = await self._streams.get(stream_id)
            if stream is None:
                raise BloomrError("not_found", f"stream {stream_id} was deleted")
            await self._hub.publish(stream, drafts)

        return publish


def _should_run(stream: Stream | None) -> bool:
    return stream is not None and bool(stream.command) and stream.enabled


async def _act(supervisor: Supervisor, action: Action) -> None:
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


def _settled(report: dict[str, Any] | None) -> bool:
    """A report an API call can answer with: the owner's every change is reported, and a
    restart passes through `stopping` and `starting` on its way."""
    return report is not None and report["state"] not in _PASSING
