"""Helpers for the runner tests: a real publish callback that keeps what it gets and
polling helpers (no fixed sleeps). Imported by name: pytest puts this folder on sys.path."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

import bloomr
from bloomr.model import Draft
from bloomr.runner import Supervisor

SRC = str(Path(bloomr.__file__).resolve().parent.parent)


class Collector:
    """A publish callback that stores every batch, in order."""

    def __init__(self) -> None:
        self.drafts: list[Draft] = []
        self.batches: list[int] = []

    async def __call__(self, batch: list[Draft]) -> None:
        self.batches.append(len(batch))
        self.drafts.extend(batch)

    def on(self, channel: str) -> list[Any]:
        return [orjson.loads(d.data_json) for d in self.drafts if d.channel == channel]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.on("errors") if isinstance(m, dict) and m.get("event") == name]


async def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def proc_alive(pid: int) -> bool:
    """A zombie counts as dead: it runs nothing, only waits for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# supervise(command, **ScriptSpec and Supervisor keywords) -> Supervisor (see conftest)
Factory = Callable[..., Supervisor]
