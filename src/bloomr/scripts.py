"""The server's scripts: one runner Supervisor per stream with a command, wired to the
hub's publish. A stream's `enabled` flag records that its script should run, so it is
started again when bloomr starts."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from .errors import BloomrError
from .hub import Hub
from .model import Draft, Stream
from .runner import ScriptError, ScriptSpec, Supervisor
from .store.base import MetadataStore

log = logging.getLogger("bloomr.scripts")

Action = Literal["start", "stop", "restart"]
_ALIVE = frozenset({"starting", "running", "backoff"})


def script_spec(stream: Stream) -> ScriptSpec:
    """The stream's script, or `validation_failed` for one that cannot be run."""
    if not stream.command:
        raise BloomrError("conflict", f"stream {stream.id} has no command to run")
    try:
        return ScriptSpec(stream.command, stream.cwd, stream.env, stream.restart)
    except ScriptError as exc:
        raise BloomrError("validation_failed", exc.message, field="command") from None


class ScriptManager:
    def __init__(self, hub: Hub, meta: MetadataStore, grace_seconds: float = 5.0) -> None:
        self._hub = hub
        self._meta = meta
        self._grace = grace_seconds
        self._supervisors: dict[str, Supervisor] = {}

    async def start(self) -> None:
        """Start every script that was running when bloomr last stopped."""
        for stream in await self._meta.list_streams():
            if stream.command and stream.enabled:
                try:
                    await self._supervisor(stream).start()
                except (ScriptError, BloomrError) as exc:
                    log.warning("could not start the script of %s: %s", stream.id, exc)

    async def close(self) -> None:
        """Stop every script (bloomr is stopping). Those running (or waiting to restart)
        keep `enabled`, so they run again with bloomr; finished ones lose it."""
        for stream_id, supervisor in self._supervisors.items():
            if supervisor.status().state not in _ALIVE:
                await self._set_enabled(stream_id, False)
        supervisors = list(self._supervisors.values())
        self._supervisors.clear()
        # together: shutdown waits one grace period, not one per script
        await asyncio.gather(*(s.close() for s in supervisors), return_exceptions=True)

    @property
    def running_count(self) -> int:
        return sum(1 for s in self._supervisors.values() if s.status().state in _ALIVE)

    def status_json(self, stream: Stream) -> dict[str, Any] | None:
        if not stream.command:
            return None
        supervisor = self._supervisors.get(stream.id)
        status: dict[str, Any] = (
            supervisor.status().to_json()
            if supervisor is not None
            else {"state": "stopped", "pid": None, "exit_code": None, "signal": None,
                  "restarts": 0, "started_at": None}
        )  # fmt: skip
        return {**status, "enabled": stream.enabled}

    async def control(self, stream: Stream, action: Action) -> None:
        spec = script_spec(stream)
        supervisor = self._supervisor(stream)
        supervisor.update_spec(spec)
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
        enabled = action != "stop"
        if stream.enabled != enabled:
            stream.enabled = enabled
            await self._meta.update_stream(stream)
            self._hub.stream_updated(stream)

    async def stream_updated(self, stream: Stream) -> None:
        """Call before storing the stream: a removed command stops its script (it could
        not be controlled any more) and clears `enabled`."""
        supervisor = self._supervisors.get(stream.id)
        if supervisor is None:
            return
        if stream.command:
            supervisor.update_spec(script_spec(stream))
            return
        del self._supervisors[stream.id]
        await supervisor.close()
        stream.enabled = False

    async def _set_enabled(self, stream_id: str, enabled: bool) -> None:
        stream = await self._meta.get_stream(stream_id)
        if stream is not None and stream.enabled != enabled:
            stream.enabled = enabled
            await self._meta.update_stream(stream)

    async def stream_deleted(self, stream_id: str) -> None:
        supervisor = self._supervisors.pop(stream_id, None)
        if supervisor is not None:
            await supervisor.close()

    def _supervisor(self, stream: Stream) -> Supervisor:
        supervisor = self._supervisors.get(stream.id)
        if supervisor is None:
            supervisor = Supervisor(
                stream.id, script_spec(stream), self._publisher(stream.id),
                grace_seconds=self._grace,
            )  # fmt: skip
            self._supervisors[stream.id] = supervisor
        return supervisor

    def _publisher(self, stream_id: str) -> Any:
        async def publish(drafts: list[Draft]) -> None:
            stream = await self._hub.stream(stream_id)
            if stream is None:
                raise BloomrError("not_found", f"stream {stream_id} was deleted")
            await self._hub.publish(stream, drafts)

        return publish
