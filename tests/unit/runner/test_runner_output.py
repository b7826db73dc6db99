"""What a real script prints becomes messages: stdout, stderr, the emit fd."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
from runner_helpers import Collector, Factory, py, wait_until

from bloomr.model import Draft


async def run_to_end(supervise: Factory, command: list[str], **kwargs: object) -> None:
    sup = supervise(command, **kwargs)
    await sup.start()
    await wait_until(lambda: sup.status().state in ("exited", "crashed"))


INTERLEAVED = r"""
import os, sys
emit = int(os.environ["BLOOMR_EMIT_FD"])
for i in range(300):
    print(f"out {i}")
    print(f"err {i}", file=sys.stderr)
    os.write(emit, b'{"channel": "count", "data": %d}\n' % i)
"""


async def test_each_pipe_keeps_its_order(supervise: Factory, collector: Collector) -> None:
    await run_to_end(supervise, py(INTERLEAVED))
    assert collector.on("") == [f"out {i}" for i in range(300)]
    assert collector.on("errors") == [f"err {i}" for i in range(300)]
    assert collector.on("count") == list(range(300))


ENVIRONMENT = r"""
import os, sys
print(os.environ["BLOOMR_STREAM"], os.environ["MY_SETTING"], os.environ["PYTHONUNBUFFERED"])
print(os.getcwd())
print(repr(sys.stdin.read()))
"""


async def test_environment_cwd_and_empty_stdin(
    supervise: Factory, collector: Collector, tmp_path: Path
) -> None:
    await run_to_end(supervise, py(ENVIRONMENT), cwd=str(tmp_path), env={"MY_SETTING": "42"})
    assert collector.on("") == ["TestStream 42 1", str(tmp_path), "''"]


async def test_binary_crlf_and_a_last_line_without_newline(
    supervise: Factory, collector: Collector
) -> None:
    code = r"import sys; sys.stdout.buffer.write(b'\xff\xfe bin\r\nwin\r\nlast')"
    await run_to_end(supervise, py(code))
    assert collector.on("") == ["\ufffd\ufffd bin", "win", "last"]


async def test_long_lines_are_split(supervise: Factory, collector: Collector) -> None:
    code = "import sys; print('é' * 100_000); print('x' * 70_000, file=sys.stderr)"
    await run_to_end(supervise, py(code))
    out = collector.on("")
    assert [len(p.encode()) for p in out] == [65536, 65536, 65536, 3392]
    assert "".join(out) == "é" * 100_000
    assert [len(p) for p in collector.on("errors")] == [65536, 70_000 - 65536]


MALFORMED = r"""
import os
fd = int(os.environ["BLOOMR_EMIT_FD"])
for line in [b'not json', b'[1]', b'{"data": 1}', b'{"channel": "bad name", "data": 1}',
             b'{"channel": "ok"}', b'{"channel": "ok", "data": "after the bad ones"}']:
    os.write(fd, line + b"\n")
print("still running")
"""


async def test_malformed_emit_lines_are_reported_and_the_script_goes_on(
    supervise: Factory, collector: Collector
) -> None:
    await run_to_end(supervise, py(MALFORMED))
    errors = collector.events("emit_error")
    assert [e["line"] for e in errors] == [
        "not json",
        "[1]",
        '{"data": 1}',
        '{"channel": "bad name", "data": 1}',
        '{"channel": "ok"}',
    ]
    assert all(e["message"] for e in errors)
    assert collector.on("ok") == ["after the bad ones"]
    assert collector.on("") == ["still running"]
    assert not collector.events("exit")  # exit 0: nothing reported on errors


FLOOD = r"""
import sys
out = sys.stdout.buffer
total, block, pad = int(sys.argv[1]), 2000, b"x" * 100
for start in range(0, total, block):
    out.write(b"".join(b"%d %s\n" % (i, pad) for i in range(start, start + block)))
"""


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_flooding_script_uses_bounded_memory(supervise: Factory) -> None:
    """500k lines through a publish slower than the script (200k lines/s). Without
    backpressure ~60 MB pile up in this process (measured by lifting the Batcher's
    limit); with it resident memory grows by ~2 MB, and every line arrives, in order,
    in large batches."""
    total = 500_000
    baseline = rss_bytes()
    seen = {"next": 0, "calls": 0, "peak": baseline}

    async def slow_checking_publish(batch: list[Draft]) -> None:
        seen["calls"] += 1
        for draft in batch:  # checked on the fly: keeping 500k drafts would cost memory
            assert draft.data_json.startswith(b'"%d ' % seen["next"])
            seen["next"] += 1
        seen["peak"] = max(seen["peak"], rss_bytes())
        await asyncio.sleep(0.005)

    sup = supervise(py(FLOOD, str(total)), publish=slow_checking_publish)
    await sup.start()
    await wait_until(lambda: sup.status().state == "exited", timeout=40)
    assert seen["next"] == total
    assert seen["calls"] <= total // 500  # batched: ~1000 lines per publish
    growth = seen["peak"] - baseline
    assert growth < 24 * 1024 * 1024, f"resident memory grew by {growth / 1e6:.0f} MB"


BLOCKABLE = r"""
import sys, pathlib
progress = pathlib.Path(sys.argv[1])
for start in range(0, 100_000, 1000):
    sys.stdout.buffer.write(b"".join(b"%d blocked line with some padding\n" % i
                                     for i in range(start, start + 1000)))
    progress.write_text(str(start + 1000))
"""


async def test_a_stalled_publish_blocks_the_script_instead_of_buffering(
    supervise: Factory, tmp_path: Path
) -> None:
    release = asyncio.Event()
    published: list[Draft] = []

    async def stalled(batch: list[Draft]) -> None:
        await release.wait()
        published.extend(batch)

    progress = tmp_path / "progress"
    sup = supervise(py(BLOCKABLE, str(progress)), publish=stalled)
    await sup.start()
    written = await settled(progress)
    # the script is stuck in write(): only pipe, reader and batch buffers' worth got out
    assert 0 < written < 20_000
    assert sup.status().state == "running"
    release.set()
    await wait_until(lambda: sup.status().state == "exited")
    assert [int(orjson.loads(d.data_json).split()[0]) for d in published] == list(range(100_000))


async def settled(progress: Path) -> int:
    """The script's progress once it has stopped moving for a while."""
    last, still = -1, 0
    async with asyncio.timeout(10):
        while still < 10:
            await asyncio.sleep(0.02)
            now = int(progress.read_text() or 0) if progress.exists() else 0
            still = still + 1 if now == last and now > 0 else 0
            last = now
    return last


async def test_a_failing_publish_does_not_stop_the_script(supervise: Factory) -> None:
    got: list[Draft] = []

    async def fails_once(batch: list[Draft]) -> None:
        if not got and orjson.loads(batch[0].data_json) == "first":
            got.append(batch[0])
            raise RuntimeError("store unavailable")
        got.extend(batch)

    code = "import sys, time; print('first'); time.sleep(0.1); print('second')"
    sup = supervise(py(code), publish=fails_once)
    await sup.start()
    await wait_until(lambda: sup.status().state == "exited")
    assert [orjson.loads(d.data_json) for d in got] == ["first", "second"]


async def test_output_of_a_process_that_left_the_group_does_not_hold_up_the_exit(
    supervise: Factory, collector: Collector
) -> None:
    """A child that calls setsid escapes the group kill but still holds stdout open;
    bloomr stops waiting for that pipe instead of hanging in `running`."""
    code = "import subprocess; print(subprocess.Popen(['sleep', '30'], start_new_session=True).pid)"
    sup = supervise(py(code))
    await sup.start()
    try:
        await wait_until(lambda: sup.status().state == "exited", timeout=5)
    finally:
        for pid in collector.on(""):
            os.kill(int(pid), 9)
    assert len(collector.on("")) == 1
