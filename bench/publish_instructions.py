"""Instructions per publish in the hub and the SQLite store, without HTTP and without
an idempotency key: a count that load on the machine does not move, unlike timings.

    valgrind --tool=callgrind .venv/bin/python bench/publish_instructions.py 0
    valgrind --tool=callgrind .venv/bin/python bench/publish_instructions.py 2000

(N on-the-spot publishes, then N queued ones in groups of 50.) The difference of the two
totals ("Collected"), divided by 2N, is the cost of one publish; run it for two
checkouts (PYTHONPATH=other/src) to compare them."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from bloomr.broker.embedded import EmbeddedBroker
from bloomr.control import Control
from bloomr.control.local import LocalControl
from bloomr.hub import Hub
from bloomr.model import Draft, Stream
from bloomr.store.sqlite import SQLiteStore

N = int(sys.argv[1])


async def main() -> None:
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "b.db")
    await store.open()
    hub = Hub(EmbeddedBroker(store), Control(LocalControl()))
    await hub.start()
    s = Stream(id="benchAAAAA", name="b")
    drafts = [Draft("", b'"a line of output"')]
    for _ in range(200):
        hub.try_publish_now(s, drafts)
    for _ in range(N):
        hub.try_publish_now(s, drafts)
    for _ in range(N // 50):
        await asyncio.gather(*(hub.publish(s, drafts) for _ in range(50)))
    await hub.stop()
    await store.close()


asyncio.run(main())
