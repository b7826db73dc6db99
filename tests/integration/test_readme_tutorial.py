"""README's "Your first script", run exactly as written: its two shell blocks taken from
README.md and run by bash in a directory laid out like a fresh clone (`.venv` there),
with an environment that has no virtualenv on its PATH, so the script gets the system's
`python3`, which has no bloomr installed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
URL_RE = re.compile(r"bloomr listening on (http://\S+)")

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def tutorial_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Your first script", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def plain_env(**extra: str) -> dict[str, str]:
    """A terminal without the virtualenv: nothing of this test's environment but HOME."""
    return {"PATH": SYSTEM_PATH, "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"} | extra


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A directory with the project's virtualenv at `.venv`, as `scripts/setup.sh` makes it."""
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    return tmp_path


@contextlib.contextmanager
def first_terminal(block: str, cwd: Path) -> Iterator[str]:
    """The server block, run by bash on a free port (BLOOMR_PORT=0); yields its URL."""
    process = subprocess.Popen(
        ["bash", "-c", block],
        cwd=cwd,
        env=plain_env(BLOOMR_PORT="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the whole group is stopped afterwards, bash and bloomr
    )
    assert process.stdout is not None
    output: list[str] = []
    url = None
    for line in process.stdout:
        output.append(line)
        if match := URL_RE.search(line):
            url = match.group(1)
            break
    assert url is not None, "the server block did not start bloomr:\n" + "".join(output)
    drain = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    drain.start()
    try:
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drain.join(5)
        process.stdout.close()


def test_the_first_script_tutorial_runs_as_written(clone: Path) -> None:
    system_python = shutil.which("python3", path=SYSTEM_PATH)
    if system_python is None:
        pytest.skip("no system python3 on " + SYSTEM_PATH)
    bare = subprocess.run(
        [system_python, "-c", "import bloomr"], env=plain_env(), cwd=clone, capture_output=True
    )
    assert bare.returncode != 0, f"{system_python} has bloomr installed: the test proves nothing"

    server_block, client_block = tutorial_blocks()[:2]
    assert server_block.startswith(".venv/bin/bloomr serve")
    with first_terminal(server_block, clone) as url:
        done = subprocess.run(
            ["bash", "-c", client_block],
            cwd=clone,
            env=plain_env(BLOOMR_URL=url),
            capture_output=True,
            text=True,
            timeout=60,
        )
    # stderr says what was made (and, in time, what the script did): never an error
    assert "error" not in done.stderr.lower() and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("started the script of stream ")
    assert lines[1:6] == [f"step {i}" for i in range(1, 6)]  # the first tail
    progress = [json.loads(line) for line in lines[6:11]]  # the second, with --metadata
    assert [p["data"] for p in progress] == [{"pct": 20 * i} for i in range(1, 6)]
    assert all(p["channel"] == "progress" and p["replayed"] for p in progress)
    shown = "\n".join(lines[11:])  # streams show
    assert re.search(r"script:\s+exited \(exit code 0", shown), done.stdout
