"""Server CPU per published message over HTTP, without and (with --keyed) with an
Idempotency-Key: what the key bookkeeping costs, and that publishes without a key pay
nothing for it.

    .venv/bin/python bench/publish_cpu.py [--keyed] [N]
    PYTHONPATH=/tmp/other/src .venv/bin/python bench/publish_cpu.py   # another checkout

Starts a fresh `bloomr serve` (the one on PYTHONPATH, else this checkout), warms it
up, then publishes N single-message requests from 4 keep-alive clients and prints the
server's CPU seconds (user + system, from /proc) per message. Linux only. On a busy
machine compare interleaved runs of two checkouts, and their minimums."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from server import running_server  # noqa: E402  (tests/server.py)

CLIENTS = 4


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish(url: str, stream: str, token: str, count: int, keyed: bool) -> None:
    async def client() -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, headers=headers) as c:
            for i in range(count // CLIENTS):
                key = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
                body = b'{"data":"line %d"}' % i
                r = await c.post(f"/api/streams/{stream}/messages", content=body, headers=key)
                assert r.status_code == 201, r.text

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--keyed"]
    count = int(args[0]) if args else 8000
    path = os.environ.get("PYTHONPATH")
    with running_server(env={"PYTHONPATH": path} if path else None) as srv:
        stream, token = asyncio.run(srv.stream_and_token())
        asyncio.run(publish(srv.url, stream, token, 2000, False))  # warm-up
        for keyed in (False, True) if "--keyed" in sys.argv else (False,):
            before, start = cpu_seconds(srv.process.pid), time.monotonic()
            asyncio.run(publish(srv.url, stream, token, count, keyed))
            used, took = cpu_seconds(srv.process.pid) - before, time.monotonic() - start
            label = "with a key" if keyed else "without a key"
            print(f"{label}: {1e6 * used / count:.1f} us CPU/message, {count / took:.0f} msg/s")


if __name__ == "__main__":
    main()
