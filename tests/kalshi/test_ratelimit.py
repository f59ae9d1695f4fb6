"""The client-side token bucket of the REST client (Kalshi's per-tier read limits)."""

from __future__ import annotations

import asyncio
import time

import pytest

from marketpulse.kalshi import TokenBucket


def test_tiers() -> None:
    rates = {t: TokenBucket.for_tier(t).rate for t in ("basic", "Advanced", "premier", "prime")}
    assert rates == {"basic": 20.0, "Advanced": 30.0, "premier": 100.0, "prime": 400.0}
    assert TokenBucket.for_tier("basic").burst == 20.0
    with pytest.raises(ValueError, match="unknown tier"):
        TokenBucket.for_tier("gold")
    with pytest.raises(ValueError):
        TokenBucket(0)


async def test_burst_then_rate() -> None:
    bucket = TokenBucket(50.0, burst=5)
    t0 = time.monotonic()
    for _ in range(5):
        await bucket.acquire()
    assert time.monotonic() - t0 < 0.05 and bucket.waited == 0.0  # the burst is free
    for _ in range(25):
        await bucket.acquire()
    took = time.monotonic() - t0
    assert 0.45 <= took < 2.0, took  # 25 more at 50/s: half a second
    assert bucket.waited == pytest.approx(0.5, abs=0.05)


async def test_pause_holds_every_caller() -> None:
    bucket = TokenBucket(100.0, burst=10)
    bucket.pause(0.3)
    t0 = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(3)))
    assert time.monotonic() - t0 >= 0.3
