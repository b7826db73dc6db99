"""Where a flood's time goes: each thread's CPU inside bloomr while a script prints.

    .venv/bin/python bench/flood_threads.py [LINES]

Starts a fresh `bloomr serve` (as run.py does), runs a script printing LINES lines and
waits until the last one is stored, then prints the rate and the CPU seconds of the
event loop's thread, of every other thread that used any (the appender, the
checkpointer, aiosqlite's), and of the script. Linux only (/proc)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (bench/run.py, beside this file)

_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`, by thread id."""
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:  # it ended while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds[int(tid)] = (int(fields[11]) + int(fields[12])) / _TICK
    return seconds


def main(lines: int) -> None:
    with run.running("bloomr") as server:
        command = ["python3", "-c", f"for i in range({lines}): print(i)"]
        stream, token = server.new_stream(command=command, restart="never")
        server.token = token
        pid = server.process.pid
        before, cpu0, t0 = thread_cpu(pid), server.cpu_seconds(), time.monotonic()
        server.api("POST", f"/api/streams/{stream}/start")
        deadline = t0 + 120
        while time.monotonic() < deadline:
            if server.api("GET", f"/api/streams/{stream}")["script"]["state"] != "running":
                if run.newest_data(server.url, stream, token) == str(lines - 1):
                    break
            time.sleep(0.02)
        else:
            sys.exit("the last line was not stored within 120 s")
        seconds = time.monotonic() - t0
        after, cpu1 = thread_cpu(pid), server.cpu_seconds()
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    loop = used.pop(pid, 0.0)
    others = sorted((s for s in used.values() if s >= 0.01), reverse=True)
    print(f"{lines / seconds:,.0f} lines/s ({lines:,} lines in {seconds:.2f} s)")
    print(f"  event loop thread {loop:.2f} s CPU")
    print(f"  other threads     {', '.join(f'{s:.2f}' for s in others) or '-'} s CPU")
    # server.cpu_seconds() counts the reaped script too (cutime + cstime)
    print(f"  the script        {cpu1 - cpu0 - loop - sum(used.values()):.2f} s CPU")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000)
