"""What happens when a script exits: how it ended, whether it restarts, and after how
long. Pure: no I/O, no clock."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

from bloomr.model import RestartPolicy


@dataclass(frozen=True, slots=True)
class ExitInfo:
    code: int | None  # None when killed by a signal
    signal: str | None  # e.g. "SIGKILL"

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitInfo:
        """asyncio reports death by signal N as returncode -N."""
        if returncode >= 0:
            return cls(returncode, None)
        return cls(None, signal_name(-returncode))

    @property
    def failed(self) -> bool:
        return self.code != 0


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name of its own
        return f"SIG{number}"


def should_restart(policy: RestartPolicy, ended: ExitInfo) -> bool:
    """Called only for exits stop() did not cause: a stopped script never restarts."""
    if policy == "always":
        return True
    return policy == "on-failure" and ended.failed


@dataclass
class Backoff:
    """Exponential delays between restarts: initial, doubling, capped at maximum. A run
    that stayed up `reset_after` seconds was healthy, so the next delay starts over."""

    initial: float = 1.0
    maximum: float = 60.0
    reset_after: float = 10.0
    _next: float = field(init=False)

    def __post_init__(self) -> None:
        self.initial = min(self.initial, self.maximum)
        self._next = self.initial

    def reset(self) -> None:
        self._next = self.initial

    def next_delay(self, uptime: float) -> float:
        if uptime >= self.reset_after:
            self.reset()
        delay = self._next
        self._next = min(delay * 2, self.maximum)
        return delay
