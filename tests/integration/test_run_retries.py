"""`bloomr run` when the server's answers are lost (SPEC §3: a 5xx or no answer means
the outcome is unknown; a retry with the same key stores it once). A proxy in front
of a real server passes every request on but cuts the connection as the answers to
three publishes start (each stored already), as a network cut right after the server
committed would: `bloomr run` retries each batch with its key, and every line is
stored once, in order."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from httpkit import Api, wait_until

from proxy import Proxy
from server import ADMIN_KEY

pytestmark = pytest.mark.timeout(60)

LINES = 300
# a first line, then, once told to go on, the rest in bursts: several batches
SCRIPT = f"""
import os, sys, time
print(0, flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
for i in range(1, {LINES}):
    print(i, flush=True)
    if i % 50 == 0:
        time.sleep(0.05)
"""


async def start_run(url: str, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOOMR_")}
    env.update(BLOOMR_URL=url, BLOOMR_ADMIN_KEY=ADMIN_KEY)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bloomr", "run", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_run_retries_lost_answers_with_its_keys_and_stores_each_line_once(
    api: Api, tmp_path: Path
) -> None:
    stream_id, token = await api.stream_and_token()
    go = tmp_path / "go"
    port = int(api.server.url.rsplit(":", 1)[1])

    async def stored() -> list[Any]:
        return [m["data"] for m in await api.poll_all(stream_id, token)]

    async def started() -> bool:
        return bool(await stored())

    async with Proxy("127.0.0.1", port) as proxy:
        args = ["--stream", stream_id, "--token", token, "--"]
        run = await start_run(proxy.url, *args, sys.executable, "-c", SCRIPT, str(go))
        await wait_until(started)  # its start-up check (an empty publish) is behind it
        proxy.drop_replies = 3  # the next three answers to publishes are lost
        go.touch()
        _, err = await asyncio.wait_for(run.communicate(), 45)
        assert run.returncode == 0, err.decode()
        assert proxy.drop_replies == 0, "three answers were lost"
    assert await stored() == [str(i) for i in range(LINES)]  # each once, in order
    assert "cannot publish to" in err.decode()  # it noticed, and retried
