"""Backends of the fault suite's own, to break for real: a private redis-server and a
private PostgreSQL on free ports (never the shared ones on 6379 and 5432), and a small
tmpfs data directory. Each is started by a context manager that always cleans up."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from glob import glob
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, up: bool, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} never went {'up' if up else 'down'}")


class PrivateRedis:
    """redis-server without persistence: a restart loses everything, as the fault
    needs, unless `save` wrote a snapshot, which the next `start` loads (a Redis back
    from an older RDB file). `stop`, `start` (same port), `flush`, `freeze`/`thaw`
    (SIGSTOP/SIGCONT)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.kill()  # as a crash: nothing saved
            self.process.wait(10)
        self.process = None
        _wait_port(self.port, up=False)

    def flush(self) -> None:
        self._cli("FLUSHALL")

    def save(self) -> None:
        """A snapshot of now (dump.rdb in its directory), loaded by the next start."""
        self._cli("SAVE")

    def _cli(self, *command: str) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), *command], check=True, capture_output=True
        )

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="bloomr-redis-") as workdir:
        redis = PrivateRedis(Path(workdir))
        redis.start()
        try:
            yield redis
        finally:
            redis.stop()


def _pg_bin(name: str) -> str | None:
    found = sorted(glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PrivatePostgres:
    """A PostgreSQL cluster in a temp dir, run as the unprivileged `postgres` user when
    the tests run as root (initdb refuses root); trust authentication on 127.0.0.1."""

    def __init__(self, datadir: Path) -> None:
        self.port = free_port()
        self.datadir = datadir

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        initdb = _pg_bin("initdb")
        assert initdb is not None
        self._run(initdb, "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-N")

    def start(self) -> None:
        pg_ctl = _pg_bin("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(pg_ctl, "-D", str(self.datadir), "-o", options, "-w", "-l",
                  str(self.datadir / "log"), "start")  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        pg_ctl = _pg_bin("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        _wait_port(self.port, up=False)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    with tempfile.TemporaryDirectory(prefix="bloomr-pg-") as parent:
        datadir = Path(parent) / "data"
        datadir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(datadir, "postgres", "postgres")
            os.chmod(parent, 0o755)
        pg = PrivatePostgres(datadir)
        pg.init()
        pg.start()
        try:
            yield pg
        finally:
            with contextlib.suppress(subprocess.CalledProcessError, TimeoutError):
                pg.stop()


@contextlib.contextmanager
def small_tmpfs(size: str = "16m") -> Iterator[Path]:
    """A data directory on a tmpfs of `size` (mounting needs root: skipped otherwise)."""
    with tempfile.TemporaryDirectory(prefix="bloomr-tmpfs-") as where:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or 'not root'}")
        try:
            yield Path(where)
        finally:
            subprocess.run(["umount", "-l", where], capture_output=True)
