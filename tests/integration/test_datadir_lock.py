"""One data directory, one process: a second `bloomr serve` on a data directory in use
is refused at once, naming the holder; the lock dies with its holder, SIGKILL included."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from backends import PG_DSN, REDIS_URL, PgSchema, delete_redis_prefix, drop_schema
from server import ADMIN_KEY, running_server

pytestmark = pytest.mark.timeout(60)


def second_serve(data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bloomr", "serve", "--port", "0", "--data-dir", str(data_dir)]
    env = {**os.environ, "BLOOMR_ADMIN_KEY": ADMIN_KEY}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=20)


def test_a_second_serve_on_a_data_dir_in_use_exits_naming_the_holder(tmp_path: Path) -> None:
    with running_server(data_dir=tmp_path) as first:
        second = second_serve(tmp_path)
        assert second.returncode == 1
        assert second.stdout == ""
        assert second.stderr == (
            f"error: data directory {tmp_path} is in use by bloomr pid {first.process.pid}\n"
        )
        assert first.process.poll() is None  # the holder is untouched


def test_the_lock_goes_with_a_holder_killed_by_sigkill(tmp_path: Path) -> None:
    with running_server(data_dir=tmp_path) as first:
        first.process.kill()
        first.process.wait(10)
    assert (tmp_path / "bloomr.lock").exists()  # left behind, but no longer held
    with running_server(data_dir=tmp_path) as again:
        assert (tmp_path / "bloomr.lock").read_text() == f"{again.process.pid}\n"
        assert httpx.get(f"{again.url}/healthz", timeout=10).status_code == 200


def test_a_script_left_running_by_a_killed_holder_does_not_hold_the_lock(
    tmp_path: Path,
) -> None:
    """The lock's descriptor is not inherited: a script bloomr started, even one still
    running after bloomr was killed, keeps nothing locked."""
    with running_server(data_dir=tmp_path) as first:
        headers = first.admin
        stream = {"command": [sys.executable, "-c", "import time; time.sleep(60)"]}
        r = httpx.post(f"{first.url}/api/streams", json=stream, headers=headers, timeout=10)
        assert r.status_code == 201, r.text
        r = httpx.post(f"{first.url}/api/streams/{r.json()['id']}/start", headers=headers)
        script_pid = r.json()["script"]["pid"]
        assert isinstance(script_pid, int)
        first.process.kill()
        first.process.wait(10)
    try:
        # the orphan may still run (nothing ties a script to a killed bloomr yet)
        assert second_serve_starts(tmp_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(script_pid, signal.SIGKILL)


def second_serve_starts(data_dir: Path) -> bool:
    with running_server(data_dir=data_dir) as again:
        return httpx.get(f"{again.url}/healthz", timeout=10).status_code == 200


def test_a_cluster_node_takes_no_lock(tmp_path: Path) -> None:
    """A cluster node has no data directory: --data-dir is not used, nothing is written."""
    name = "t_lock_" + os.urandom(6).hex()
    args = ["--redis", REDIS_URL, "--database", PG_DSN, "--cluster-name", name]
    try:
        with running_server(*args, data_dir=tmp_path / "unused"):
            assert not (tmp_path / "unused").exists()
    finally:
        asyncio.run(delete_redis_prefix(name))
        asyncio.run(drop_schema(PgSchema(PG_DSN, name)))
