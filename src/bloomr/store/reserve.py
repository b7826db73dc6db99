"""A reserve of disk space for the embedded database: a ballast file in the data
directory, given up the first time the disk is full, made again once there is room.

Why a ballast: on a full disk SQLite cannot even write the few pages that deleting a
stream or trimming its history needs (the write-ahead log must grow first), so bloomr
could not free space itself. Giving up a few MiB at the first ENOSPC leaves room for
exactly that. While the reserve is given up the disk counts as full: publishes are
refused (`unavailable`) and `/healthz` says so, until the ballast fits again, which is
when retention, a deleted stream or the operator have made room."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("bloomr.store")

RESERVE_BYTES = 4 * 1024 * 1024
_RETRY_SECONDS = 1.0  # at most this often, a full disk is looked at again
_CHUNK = 1024 * 1024


class DiskReserve:
    """The ballast file's state. Synchronous and quick: a few MiB written at most once
    a second while the disk is full."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self.full = False  # the reserve is given up: the disk counts as full
        self.reason = ""
        self._next_try = 0.0

    def release(self, reason: str) -> None:
        """The disk is full: give the reserve up (once) so trims and deletes can work."""
        if not self.full:
            log.error(
                "disk full (%s): giving up the %d MiB reserve in %s; publishes are refused "
                "until there is room again",
                reason,
                self.size >> 20,
                self.path,
            )
        self.full, self.reason = True, reason
        self._next_try = time.monotonic() + _RETRY_SECONDS
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def restore(self, force: bool = False) -> bool:
        """Whether the reserve is in place, making it again if it was given up and there
        is room for it now (tried at most once a second unless `force`)."""
        if not self.full and not force:
            return True  # the hot path: no system call
        now = time.monotonic()
        if not force and now < self._next_try:
            return False
        self._next_try = now + _RETRY_SECONDS
        try:
            self._make()
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.full, self.reason = True, self.reason or f"no room for the reserve: {exc}"
            return False
        if self.full:
            log.warning("disk reserve restored in %s: accepting publishes again", self.path)
        self.full, self.reason = False, ""
        return True

    def _in_place(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except OSError:
            return False

    def _make(self) -> None:
        if self._in_place():
            return
        # room for the reserve and as much again: making it must not be what fills the
        # disk (publishes would then fail and give it up again at once)
        stat = os.statvfs(self.path.parent)
        if self.full and stat.f_bavail * stat.f_frsize < 2 * self.size:
            raise OSError(28, "still too little room for the reserve and for publishes")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, self.size)  # really allocated, not sparse
            except OSError as exc:
                if exc.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: write it instead
                    raise
                zeros = bytes(_CHUNK)
                for _ in range(0, self.size, _CHUNK):
                    os.write(fd, zeros)
            os.fsync(fd)
        finally:
            os.close(fd)
