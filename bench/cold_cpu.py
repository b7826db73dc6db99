"""How much slower this machine runs a few microseconds of work right after the process
slept, than after a busy wait, than in a tight loop: what every step of a publish pays
when publishes arrive a few milliseconds apart (bench/RESULTS.md, session 8).

    .venv/bin/python bench/cold_cpu.py [PAUSE_MS] [N]

Prints the p50 and p90 of two small pieces of work (a `select 1` on an in-memory SQLite
database; 100 dict lookups) in three conditions: after sleeping PAUSE_MS (default 5),
after spinning as long, and back to back."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable


def main() -> None:
    pause = (float(sys.argv[1]) if len(sys.argv) > 1 else 5.0) / 1000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    conn = sqlite3.connect(":memory:", isolation_level=None)
    table = {i: i for i in range(1000)}

    def select_one() -> None:
        conn.execute("select 1").fetchall()

    def lookups() -> None:
        total = 0
        for i in range(100):
            total += table[i]

    def spin() -> None:
        end = time.perf_counter() + pause
        while time.perf_counter() < end:
            pass

    waits: dict[str, Callable[[], None]] = {
        "after a sleep": lambda: time.sleep(pause),
        "after a spin": spin,
        "back to back": lambda: None,
    }
    for name, work in (("select 1", select_one), ("100 dict lookups", lookups)):
        for label, wait in waits.items():
            took = []
            for _ in range(n):
                wait()
                start = time.perf_counter_ns()
                work()
                took.append(time.perf_counter_ns() - start)
            took.sort()
            p50, p90 = took[n // 2] / 1000, took[n * 9 // 10] / 1000
            print(f"{name:17s} {label:14s} p50 {p50:6.1f} µs  p90 {p90:6.1f} µs")


if __name__ == "__main__":
    main()
