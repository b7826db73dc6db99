"""A first run without surprises: a missing optional dependency names its extra, `bloomr
serve --help` lists every variable it reads, and the demo keeps its token across
restarts."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from server import ADMIN_KEY, Server, running_server

SRC = Path(__file__).resolve().parents[2] / "src" / "bloomr"
# read by the client commands or set for scripts, not by `bloomr serve`
NOT_SERVE = {"BLOOMR_EMIT_FD", "BLOOMR_STREAM", "BLOOMR_TOKEN", "BLOOMR_URL"}
CLUSTER = ["--redis", "redis://127.0.0.1:1/0", "--database", "postgresql://x@127.0.0.1:1/x"]

pytestmark = pytest.mark.timeout(60)


def bloomr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "BLOOMR_ADMIN_KEY": ADMIN_KEY, **(env or {})}
    command = [sys.executable, "-m", "bloomr", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=30)


def hide_modules(where: Path, *names: str) -> dict[str, str]:
    """An environment in which `import NAME` fails as if NAME were not installed: a
    package of that name first on PYTHONPATH that raises what a missing one raises."""
    for name in names:
        package = where / name
        package.mkdir()
        (package / "__init__.py").write_text(
            f"raise ModuleNotFoundError({f'No module named {name!r}'!r}, name={name!r})\n"
        )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(where), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize("missing", [("redis",), ("asyncpg",), ("redis", "asyncpg")])
def test_cluster_mode_without_its_drivers_names_the_extra(
    tmp_path: Path, missing: tuple[str, ...]
) -> None:
    done = bloomr("serve", "--port", "0", *CLUSTER, env=hide_modules(tmp_path, *missing))
    assert done.returncode == 1
    assert done.stderr == (
        "error: cluster mode needs the cluster extra: pip install 'bloomr[cluster]'\n"
    )
    assert done.stdout == ""


def test_embedded_mode_needs_no_cluster_driver(tmp_path: Path) -> None:
    (tmp_path / "hidden").mkdir()
    env = hide_modules(tmp_path / "hidden", "redis", "asyncpg")
    with running_server(env=env, data_dir=tmp_path / "data") as srv:
        assert httpx.get(f"{srv.url}/healthz", timeout=10).status_code == 200


def test_serve_help_lists_every_variable_serve_reads() -> None:
    read = set()
    for path in SRC.rglob("*.py"):
        read |= set(re.findall(r"BLOOMR_[A-Z0-9_]+", path.read_text()))
    assert "BLOOMR_MAX_BODY" in read and "BLOOMR_REDIS_URL" in read  # the search works
    done = bloomr("serve", "--help")
    assert done.returncode == 0
    unlisted = sorted(name for name in read - NOT_SERVE if name not in done.stdout)
    assert unlisted == []


# -- the demo ---------------------------------------------------------------------------


def demo_token(srv: Server) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if match := re.search(r"token: '([^']+)'", "".join(srv.output)):
            return match.group(1)
        time.sleep(0.05)
    raise AssertionError("no demo snippet:\n" + "".join(srv.output))


def demo_tokens(srv: Server) -> list[dict[str, object]]:
    r = httpx.get(f"{srv.url}/api/tokens", headers=srv.admin, timeout=10)
    return [t for t in r.json()["tokens"] if t["name"] == "demo"]


def test_the_demo_keeps_its_token_across_restarts(tmp_path: Path) -> None:
    with running_server("--demo", data_dir=tmp_path) as first:
        secret = demo_token(first)
    kept = tmp_path / "demo.token"
    assert kept.read_text() == secret + "\n"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    with running_server("--demo", data_dir=tmp_path) as second:
        assert demo_token(second) == secret
        assert len(demo_tokens(second)) == 1
        # revoked: the next start mints a new one, and keeps that
        (token,) = demo_tokens(second)
        r = httpx.delete(f"{second.url}/api/tokens/{token['id']}", headers=second.admin)
        assert r.status_code == 204
    with running_server("--demo", data_dir=tmp_path) as third:
        renewed = demo_token(third)
        assert renewed != secret
        assert kept.read_text() == renewed + "\n"
        stream = re.search(r"stream: '([^']+)'", "".join(third.output))
        assert stream is not None
        r = httpx.get(
            f"{third.url}/api/streams/{stream.group(1)}/messages",
            params={"token": renewed, "limit": 1},
            timeout=10,
        )
        assert r.status_code == 200
