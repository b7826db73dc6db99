"""`bloomr run` when the server's answers are lost (SPEC §3: a 5xx or no answer means
the outcome is unknown; a retry with the same key stores it once). A proxy in front
of a real server passes every request on but swallows the first answers to publishes
that stored something, closing the connection instead, as a network cut right after
the server committed would: `bloomr run` retries each batch with its key, and every
line is stored once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from httpkit import Api

from server import ADMIN_KEY, Server

pytestmark = pytest.mark.timeout(60)

LINES = 300
SCRIPT = f"""
import time
for i in range({LINES}):
    print(i, flush=True)
    if i % 50 == 0:
        time.sleep(0.05)  # several batches
"""


class AnswerEater:
    """A TCP proxy that forwards everything but the first `eat` answers that carry ids
    (a publish that stored something): for those it closes both connections."""

    def __init__(self, target_port: int, eat: int) -> None:
        self.target_port = target_port
        self.left = eat
        self.eaten = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        dst.close()

    async def _answers(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(65536):
                if self.left > 0 and b'"ids":["' in chunk:
                    self.left -= 1
                    self.eaten += 1
                    break  # stored, but the publisher never hears of it
                dst.write(chunk)
                await dst.drain()
        dst.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._answers(up_reader, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AnswerEater]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self.server.close()


async def bloomr_run(url: str, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOOMR_")}
    env.update(BLOOMR_URL=url, BLOOMR_ADMIN_KEY=ADMIN_KEY)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bloomr", "run", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 45)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_run_retries_lost_answers_with_its_keys_and_stores_each_line_once(
    server: Server,
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    async with server.client() as client, AnswerEater(port, eat=3).running() as proxy:
        api = Api(server, client)
        stream_id, token = await api.stream_and_token()
        code, err = await bloomr_run(
            proxy.url, "--stream", stream_id, "--token", token, "--", sys.executable, "-c", SCRIPT
        )
        assert code == 0, err
        assert proxy.eaten == 3, "the answers to three stored batches were lost"
        lines: list[Any] = [m["data"] for m in await api.poll_all(stream_id, token)]
        assert lines == [str(i) for i in range(LINES)]  # each once, in order
