"""One run of a script: the child in its own process group, its three pipes, and the
end of it all (the group terminated, every line read and published)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import BinaryIO

import bloomr
from bloomr.model import DEFAULT_CHANNEL, ERRORS_CHANNEL

from .batcher import Batcher
from .lines import Decoder, EmitLines, OutputLines
from .policy import ExitInfo
from .reaper import REAPER
from .spec import Publish, ScriptSpec

logger = logging.getLogger("bloomr.runner")

READ_CHUNK = 64 * 1024
GROUP_POLL = 0.03  # how often to look whether a terminated group is gone
# After the group is gone, a pipe that stays open this long without data is held by a
# process that left the group (setsid): stop waiting for its end of file.
EOF_PATIENCE = 0.5


# The directory holding the server's own `bloomr` package: first on a script's
# PYTHONPATH, so `import bloomr` (for bloomr.emit, standard library only) works in
# whatever python3 the script finds first, not only in the server's virtualenv.
PACKAGE_PARENT = str(Path(bloomr.__file__).resolve().parent.parent)


def child_env(stream_id: str, spec: ScriptSpec, emit_fd: int) -> dict[str, str]:
    """What a script inherits: the server's environment, the stream's `env` over it,
    then bloomr's own variables (README, "Scripts")."""
    env = {**os.environ, **(spec.env or {})}
    return {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")])),
        "BLOOMR_EMIT_FD": str(emit_fd),
        "BLOOMR_STREAM": stream_id,
        "PYTHONUNBUFFERED": "1",  # Python scripts' lines arrive as they print them
    }


class Run:
    """A started child. Build it with `await Run.spawn(...)`; finish it with `wait()`."""

    def __init__(self, proc: asyncio.subprocess.Process, batcher: Batcher, grace: float) -> None:
        self._proc = proc
        self._batcher = batcher
        self._grace = grace
        self._transports: list[asyncio.ReadTransport] = []
        self._pumps: list[asyncio.Task[None]] = []
        self._terminating: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        self.bytes_read = 0

    @classmethod
    async def spawn(cls, stream_id: str, spec: ScriptSpec, publish: Publish, grace: float) -> Run:
        """Start the child; raises what subprocess raises for a command it cannot run."""
        reads, writes = _open_pipes(3)
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=writes[0],
                stderr=writes[1],
                pass_fds=(writes[2],),
                cwd=spec.cwd,
                env=child_env(stream_id, spec, writes[2]),
                start_new_session=True,  # its own process group, so stop() reaches its children
            )
        except BaseException:
            _close_fds(reads)
            raise
        finally:
            _close_fds(writes)  # the child has its copies; ours would keep end of file away
        REAPER.watch(proc.pid)  # the group is the child's pid (start_new_session)
        run = cls(proc, Batcher(publish), grace)
        files = [os.fdopen(fd, "rb", buffering=0) for fd in reads]
        decoders: list[Decoder] = [
            OutputLines(DEFAULT_CHANNEL),
            OutputLines(ERRORS_CHANNEL),
            EmitLines(),
        ]
        try:
            for file, decoder in zip(files, decoders, strict=True):
                await run._listen(file, decoder)
        except BaseException:
            run.abort()
            for file in files:
                file.close()  # closing twice is harmless: some already belong to transports
            raise
        return run

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def uptime(self) -> float:
        return (self._ended or time.monotonic()) - self._started

    def terminate(self, grace: float | None = None) -> asyncio.Task[None]:
        """SIGTERM the whole group, SIGKILL what is left after the grace period (this
        run's unless given). Calling it again returns the same termination."""
        if self._terminating is None:
            grace = self._grace if grace is None else grace
            self._terminating = asyncio.create_task(terminate_group(self.pid, grace))
        return self._terminating

    async def wait(self) -> ExitInfo:
        """Wait for the child to exit, then for all its output to be published."""
        returncode = await self._proc.wait()
        self._ended = time.monotonic()
        # The script is its main process: what it leaves behind in its group goes too,
        # so a restarted script never runs beside the remains of the previous one.
        await self.terminate()
        REAPER.forget(self.pid)
        await self._finish_output()
        return ExitInfo.from_returncode(returncode)

    def abort(self) -> None:
        """Last-resort cleanup when supervision itself is cancelled or failed."""
        signal_group(self.pid, signal.SIGKILL)
        REAPER.forget(self.pid)
        for task in (*self._pumps, self._terminating):
            if task is not None:
                task.cancel()
        self._batcher.cancel()
        self._close_pipes()

    async def _listen(self, pipe: BinaryIO, decoder: Decoder) -> None:
        loop = asyncio.get_running_loop()
        # limit bounds what asyncio buffers before it pauses reading the pipe
        reader = asyncio.StreamReader(limit=READ_CHUNK)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
        self._transports.append(transport)
        self._pumps.append(asyncio.create_task(self._pump(reader, decoder)))

    async def _pump(self, reader: asyncio.StreamReader, decoder: Decoder) -> None:
        try:
            while chunk := await reader.read(READ_CHUNK):
                self.bytes_read += len(chunk)
                if drafts := decoder.feed(chunk):
                    await self._batcher.add(drafts)
        except OSError as exc:  # e.g. EIO: treat as end of file, keep what was read
            logger.warning("reading script pid %d's output failed: %s", self.pid, exc)
        if drafts := decoder.close():
            await self._batcher.add(drafts)

    async def _finish_output(self) -> None:
        pending: set[asyncio.Task[None]] = set(self._pumps)
        seen = -1
        while pending:
            _, pending = await asyncio.wait(pending, timeout=EOF_PATIENCE)
            if pending and self.bytes_read == seen and not self._batcher.waiting:
                logger.warning("script pid %d left a process holding its output open", self.pid)
                self._close_pipes()  # the readers get end of file after what is buffered
            seen = self.bytes_read
        for pump in self._pumps:
            if not pump.cancelled() and (exc := pump.exception()) is not None:
                logger.error("reading script output failed", exc_info=exc)
        await self._batcher.aclose()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for transport in self._transports:
            transport.close()


def _open_pipes(count: int) -> tuple[list[int], list[int]]:
    reads: list[int] = []
    writes: list[int] = []
    try:
        for _ in range(count):
            read, write = os.pipe()
            reads.append(read)
            writes.append(write)
    except OSError:
        _close_fds(reads + writes)
        raise
    return reads, writes


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to every process of the group (0: only look); False when it is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed user: it is there, we cannot touch it
        return True
    return True


async def terminate_group(pgid: int, grace: float) -> None:
    if not signal_group(pgid, signal.SIGTERM):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while loop.time() < deadline:
        await asyncio.sleep(GROUP_POLL)
        if not group_alive(pgid):
            return
    signal_group(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: a killed child
    whose parent is gone waits for init to reap it, which takes seconds with some inits
    (or forever with none), and must not hold stop() for the whole grace period."""
    if not signal_group(pgid, 0):
        return False
    try:
        with os.scandir("/proc") as entries:
            return any(e.name.isdigit() and _runs_in_group(e.name, pgid) for e in entries)
    except OSError:  # no /proc (not Linux): trust kill(0)
        return True


def _runs_in_group(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:  # it exited while we looked
        return False
    state, _ppid, pgrp = stat.rsplit(b")", 1)[1].split()[:3]  # after "pid (comm)"
    return int(pgrp) == pgid and state != b"Z"
