"""A client-side token bucket per Kalshi rate-limit tier (docs/protocols/kalshi.md §4).

Kalshi meters reads per second by tier; staying under the budget on our side means a 429 is
the exception, not the flow control.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["READS_PER_SECOND", "TokenBucket"]

READS_PER_SECOND = {"basic": 20.0, "advanced": 30.0, "premier": 100.0, "prime": 400.0}
"""Read requests per second of each tier (the docs' token budgets at 10 tokens a read)."""


class TokenBucket:
    """``rate`` requests per second on average, bursts up to ``burst``.

    Args:
        rate: Tokens added per second (> 0).
        burst: Bucket size; defaults to one second's worth.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, rate if burst is None else burst)
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = asyncio.Lock()
        self.waited = 0.0
        """Seconds callers spent waiting for a token (a measure of how close to the limit)."""

    @classmethod
    def for_tier(cls, tier: str) -> TokenBucket:
        """The bucket of a Kalshi tier (``basic``, ``advanced``, ``premier``, ``prime``)."""
        try:
            return cls(READS_PER_SECOND[tier.lower()])
        except KeyError:
            raise ValueError(f"unknown tier {tier!r}: one of {sorted(READS_PER_SECOND)}") from None

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    async def acquire(self) -> None:
        """Wait until a token is free and take it (callers are served in order)."""
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.rate
                self.waited += wait
                await asyncio.sleep(wait)
                self._refill()
            self._tokens -= 1.0

    def pause(self, seconds: float) -> None:
        """The server said to slow down (a 429): no token for ``seconds`` from now.

        Pauses overlap rather than add up: concurrent callers refused together each report
        their 429, and the bucket waits for the longest of their delays, not their sum.
        """
        self._refill()
        self._tokens = min(self._tokens, -seconds * self.rate)
