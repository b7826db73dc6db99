"""Failed authentications per client address: a token bucket each, so that guessing
secrets from one address is slowed to `per_minute` tries. Pure but for the clock."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

# Addresses remembered at most (least recently failed forgotten first): a bounded map
# however many addresses an attacker has.
_MAX_ADDRESSES = 100_000


class FailureThrottle:
    """`per_minute` failures per address, refilled continuously; 0 turns it off."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again (0: now)."""
        if self.per_minute <= 0:
            return 0.0
        tokens = self._tokens(address)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self._rate

    def failed(self, address: str) -> None:
        if self.per_minute <= 0:
            return
        self._buckets[address] = (max(self._tokens(address) - 1.0, 0.0), self._clock())
        self._buckets.move_to_end(address)
        if len(self._buckets) > _MAX_ADDRESSES:
            self._buckets.popitem(last=False)

    def _tokens(self, address: str) -> float:
        found = self._buckets.get(address)
        if found is None:
            return float(self.per_minute)
        tokens, at = found
        return min(float(self.per_minute), tokens + (self._clock() - at) * self._rate)


class ConnectionCount:
    """Open connections (or sessions) per key, at most `limit` each (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, key: str | None) -> bool:
        """Count one more for `key`; False (and nothing counted) when it is at its limit."""
        if self.limit <= 0 or key is None:
            return True
        count = self._open.get(key, 0)
        if count >= self.limit:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: str | None) -> None:
        if self.limit <= 0 or key is None:
            return
        count = self._open.get(key, 0) - 1
        if count > 0:
            self._open[key] = count
        else:
            self._open.pop(key, None)
