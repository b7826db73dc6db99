"""Memory stays bounded when readers stall during a large replay: four websockets ask
for a replay of 48 messages of 1 MiB and read nothing. Each is cut off as a slow
consumer (none of them reads), and the server's resident memory (VmRSS of the real
`bloomr serve`) grows by less than the replays would take if they were queued whole."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from raw import STALLED_RCVBUF, RawSocketIO, assert_serves, slow_consumers

from server import running_server

pytestmark = pytest.mark.timeout(90)

MIB = 1024 * 1024
MESSAGES = 48
READERS = 4


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_stalled_readers_of_a_large_replay_keep_memory_bounded() -> None:
    env = {"BLOOMR_STALL_TIMEOUT": "2", "BLOOMR_AUTH_FAILURES": "0"}
    with running_server(env=env) as server:
        stream, token = await server.stream_and_token()
        async with server.client() as http:
            for n in range(MESSAGES):
                body = {"data": f"{n:04d}" + "m" * (MIB - 4)}
                r = await http.post(
                    f"/api/streams/{stream}/messages", json=body, headers=server.admin
                )
                assert r.status_code == 201
            before = rss(server.process.pid)
            peak = before
            readers = []
            for _ in range(READERS):
                reader = await RawSocketIO.open(server, rcvbuf=STALLED_RCVBUF)
                auth = {"stream": stream, "token": token, "replayLimit": MESSAGES}
                reader.send("40" + json.dumps(auth))
                readers.append(reader)
            try:
                async with asyncio.timeout(30):
                    while await slow_consumers(http) < READERS:
                        peak = max(peak, rss(server.process.pid))
                        await asyncio.sleep(0.05)
            finally:
                for reader in readers:
                    reader.close()
            grown = peak - before
            print(f"VmRSS {before / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB (+{grown / MIB:.0f})")
            # Queued whole (before), the replays held 2 x 4 x 48 MiB (messages and their
            # frames) for as long as the sockets stayed open. Now each holds ~1 MiB once
            # read; what is left is the snapshot each read takes whole (the broker's
            # `replay`), at the same moment for the four: below 3/4 of one copy each.
            assert grown < READERS * MESSAGES * MIB * 3 // 4, grown / MIB
        await assert_serves(server)
