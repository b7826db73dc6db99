"""Scripts die with their node, SIGKILL of the node included.

A script runs in a process group of its own (so that stopping it reaches its children),
which also means nothing ends it when the node dies. The reaper is a tiny process,
started with the first script, that knows the process groups of this node's scripts
and holds the read end of a pipe whose only write end is in the node. When the node
exits in any way (a crash, SIGKILL, a clean stop), the kernel closes that end, the
reaper reads end of file, SIGKILLs every group it was told of, and exits.

Why not the parent-death signal (`prctl(PR_SET_PDEATHSIG)`) alone: it reaches only the
script's own process, not the children it started, and it needs a `preexec_fn`
(fork without vfork, unsafe with the store's threads). What escapes: a process that
left its group (setsid), and a script spawned in the instant before it is registered."""

from __future__ import annotations

import atexit
import contextlib
import logging
import subprocess
import sys
from typing import IO

log = logging.getLogger("bloomr.runner")

# Ignores the signals a terminal or a service manager sends to the node's group, so it
# outlives a node that is interrupted; reads "+pgid" / "-pgid" lines until the node's
# end of the pipe closes.
_PROGRAM = """
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Reaper:
    """This process's reaper, started on first use and again if it died."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()

    def watch(self, pgid: int) -> None:
        """Kill this group if the node dies before `forget(pgid)`."""
        self._groups.add(pgid)
        self._tell(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        """The group is gone (its id may be reused by another process)."""
        if pgid in self._groups:
            self._groups.discard(pgid)
            self._tell(f"-{pgid}\n")

    def _tell(self, line: str) -> None:
        try:
            self._pipe().write(line.encode())
        except OSError as exc:  # it died (BrokenPipeError): a new one learns every group
            log.warning("the script reaper is gone (%s): starting another", exc)
            self._process = None
            try:
                self._pipe()
            except OSError:
                log.exception("cannot start the script reaper: scripts may outlive a crash")

    def _pipe(self) -> IO[bytes]:
        process = self._process
        if process is None or process.poll() is not None:
            process = self._process = _spawn()
            assert process.stdin is not None
            process.stdin.write("".join(f"+{g}\n" for g in self._groups).encode())
        assert process.stdin is not None
        return process.stdin

    def close(self) -> None:
        """At a clean exit: end of file now (what is left of the groups dies, as at a
        crash) and the reaper reaped, not left to the interpreter's teardown."""
        process, self._process = self._process, None
        if process is None or process.stdin is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2)


def _spawn() -> subprocess.Popen[bytes]:
    # unbuffered: each line reaches the reaper when written, never held in our buffer;
    # the pipe's write end is not inheritable (PEP 446), so no script keeps it open
    return subprocess.Popen(
        [sys.executable, "-I", "-c", _PROGRAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        start_new_session=True,  # Ctrl-C in a terminal must not end it before the node
    )


REAPER = Reaper()
atexit.register(REAPER.close)
