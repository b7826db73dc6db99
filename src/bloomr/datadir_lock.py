"""One data directory, one process: an OS lock on `<data-dir>/bloomr.lock`.

flock(2) rather than a pid file alone: the kernel drops the lock when its holder dies,
SIGKILL included, so a stale file never keeps the next start out. The holder's pid is
written inside only to name it in the refusal."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "bloomr.lock"
# The holder writes its pid right after taking the lock: a refusal reading the file in
# between finds it empty, so it looks again for this long before giving up on the pid.
_PID_PATIENCE = 1.0


class DataDirInUse(Exception):
    """Another live process holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"data directory {data_dir} is in use by bloomr {holder}")
        self.pid = pid


def lock_data_dir(data_dir: Path) -> int:
    """Take the lock (creating the directory if need be) and return its descriptor, to
    keep open for the life of the process. Raises DataDirInUse at once if it is taken."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    # not inheritable (Python's default): a script bloomr runs must not keep the lock
    # after bloomr itself is gone
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUse(data_dir, _holder_pid(path)) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder_pid(path: Path) -> int | None:
    deadline = time.monotonic() + _PID_PATIENCE
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)
