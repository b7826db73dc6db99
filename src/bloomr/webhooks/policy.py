"""When to retry a batch, and when to give up on it. Pure functions of the attempt
count, the clock and a random number (passed in, so tests pin them)."""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY = 1.0  # seconds before the first retry
MAX_DELAY = 600.0  # 10 min
RETRY_FOR = 24 * 3600.0  # from a batch's first attempt
JITTER = 0.2  # each delay is scaled by a factor in [1 - JITTER, 1 + JITTER)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: float = FIRST_DELAY
    max_delay: float = MAX_DELAY
    retry_for: float = RETRY_FOR
    jitter: float = JITTER

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1, 2, ...): about 1 s,
        2 s, 4 s, ... doubling, scaled by a jitter from `rand` in [0, 1), at most
        `max_delay`. Jitter spreads the retries of many webhooks failing together."""
        base = self.first_delay * 2.0 ** min(max(failures - 1, 0), 64)
        factor = 1.0 + self.jitter * (2.0 * rand - 1.0)
        return min(base * factor, self.max_delay)

    def next_attempt_ms(
        self, failures: int, first_attempt_ms: int, now_ms: int, rand: float
    ) -> int | None:
        """When to try a batch again after its `failures`-th failure at `now_ms`, or None
        to drop it: its retry window (from its first attempt) is over. The last retry is
        made at the end of the window rather than skipped."""
        deadline = first_attempt_ms + int(self.retry_for * 1000)
        if now_ms >= deadline:
            return None
        return min(now_ms + int(self.delay(failures, rand) * 1000), deadline)


DEFAULT_POLICY = RetryPolicy()
