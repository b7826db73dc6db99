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
