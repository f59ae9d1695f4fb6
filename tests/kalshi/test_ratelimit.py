"""The client-side token bucket of the REST client (Kalshi's per-tier read limits)."""

from __future__ import annotations

import asyncio
import time

import pytest

from marketpulse.kalshi import TokenBucket, _ratelimit


def test_tiers() -> None:
    rates = {t: TokenBucket.for_tier(t).rate for t in ("basic", "Advanced", "premier", "prime")}
    assert rates == {"basic": 20.0, "Advanced": 30.0, "premier": 100.0, "prime": 400.0}
    assert TokenBucket.for_tier("basic").burst == 20.0
    with pytest.raises(ValueError, match="unknown tier"):
        TokenBucket.for_tier("gold")
    with pytest.raises(ValueError):
        TokenBucket(0)


class _ExactSleeps:
    """The bucket's clock, moved on by its own sleeps only, each by exactly what it asked for
    (and the caller still really waits that long). A loaded host wakes a sleeper late, which
    the bucket rightly credits back as tokens, so 25 late wake-ups shave milliseconds each off
    ``waited``: with this clock the total is exact, whatever the host."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.Lock = asyncio.Lock

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.now += seconds


async def test_burst_then_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _ExactSleeps()
    monkeypatch.setattr(_ratelimit, "time", clock)
    monkeypatch.setattr(_ratelimit, "asyncio", clock)
    bucket = TokenBucket(50.0, burst=5)
    t0 = time.monotonic()
    for _ in range(5):
        await bucket.acquire()
    assert time.monotonic() - t0 < 0.05 and bucket.waited == 0.0  # the burst is free
    for _ in range(25):
        await bucket.acquire()
    took = time.monotonic() - t0
    assert 0.45 <= took < 2.0, took  # 25 more at 50/s: half a second
    assert bucket.waited == pytest.approx(0.5, abs=1e-9)
    assert clock.now == pytest.approx(1_000.5, abs=1e-9)


async def test_pause_holds_every_caller() -> None:
    bucket = TokenBucket(100.0, burst=10)
    bucket.pause(0.3)
    t0 = time.monotonic()
    await asyncio.gather(*(bucket.acquire() for _ in range(3)))
    assert time.monotonic() - t0 >= 0.3


async def test_pauses_overlap_and_do_not_add_up() -> None:
    # Ten callers refused by the same 429 burst each pause the bucket: it waits for the
    # longest of their delays, not ten of them end to end.
    bucket = TokenBucket(100.0, burst=10)
    for _ in range(10):
        bucket.pause(0.2)
    bucket.pause(0.1)  # a shorter pause does not shorten a longer one
    t0 = time.monotonic()
    await bucket.acquire()
    took = time.monotonic() - t0
    assert 0.2 <= took < 0.6, took
