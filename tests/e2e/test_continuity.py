"""Continuity through every failure of worker, feed, store and Temporal (issue 13's table).

Each test runs the whole system (Temporal, store, simulator, worker and the stream workflow),
injects one fault while :class:`~tests.e2e.continuity.BookWatch` samples the served books
against the simulator's, and then checks that no book differing from the truth was served as
live for longer than the lease bound (``continuity.LEASE_BOUND_S``, 5 s: the worker's 3 s lease plus
the store's 1 s expiry cron and the sampling), and that every trade the simulator made is in
the store exactly once. ``pytest -s`` prints each fault's figures (``CONTINUITY ...``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from marketpulse.testing import BookWatch, LocalSystem, free_port

from .continuity import check_fault

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(400),
    pytest.mark.skipif(
        importlib.util.find_spec("marketpulse.reactive.server") is None,
        reason="needs the store server (marketpulse serve)",
    ),
]

MARKETS = 6
RATE = 40.0


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[tuple[LocalSystem, list[str]]]:
    with LocalSystem(tmp_path) as system:
        streaming = await system.start_streaming(
            markets=MARKETS, workflow_id="continuity", rate=RATE, persistent_temporal=True
        )
        yield system, streaming.markets


async def _until(check: object, timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled in a thread)."""
    start = time.monotonic()
    while not await asyncio.to_thread(check):  # type: ignore[arg-type]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not within {timeout:g}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - start


def _stale_status(system: LocalSystem) -> bool:
    return all(s["state"] == "stale" for s in system.query("marketData:getStreamStatus", {}))


async def test_worker_killed_and_restarted_after_3s(system: tuple[LocalSystem, list[str]]) -> None:
    sys_, tickers = system
    with BookWatch(sys_, tickers) as watch:
        await asyncio.sleep(2)
        at = time.monotonic()
        sys_.procs["worker"].kill()
        await asyncio.sleep(3)
        sys_.start_worker(metrics_port=free_port())
        back = await _until(lambda: sys_.converged(tickers), 90, "books live and right again")
        await asyncio.sleep(2)
    check_fault(watch, sys_, tickers, "worker SIGKILLed, restarted after 3 s", at, back_s=back + 3)


async def test_worker_killed_and_not_restarted(system: tuple[LocalSystem, list[str]]) -> None:
    sys_, tickers = system
    with BookWatch(sys_, tickers) as watch:
        await asyncio.sleep(2)
        at = time.monotonic()
        sys_.procs["worker"].kill()
        await asyncio.sleep(20)  # many leases long: stale stays stale
        assert await asyncio.to_thread(_stale_status, sys_)
        assert all(s.served == dict.fromkeys(tickers, False) for s in watch.samples[-10:])
        price = sys_.query("marketData:getPrice", {"ticker": tickers[0]})
        assert price is not None and price["live"] is False
        sys_.start_worker(metrics_port=free_port())
        await _until(lambda: sys_.converged(tickers), 90, "books live and right again")
    check_fault(watch, sys_, tickers, "worker SIGKILLed, not restarted for 20 s", at)


async def test_exchange_silent(system: tuple[LocalSystem, list[str]]) -> None:
    sys_, tickers = system
    with BookWatch(sys_, tickers) as watch:
        await asyncio.sleep(2)
        at = time.monotonic()
        sys_.sim("stall", seconds=20)
        await asyncio.sleep(8)
        await _until(lambda: sys_.converged(tickers), 60, "books live and right again")
    check_fault(watch, sys_, tickers, "exchange silent (simulator stall 20 s)", at)


async def test_store_restarted(system: tuple[LocalSystem, list[str]]) -> None:
    sys_, tickers = system
    with BookWatch(sys_, tickers) as watch:
        await asyncio.sleep(2)
        sys_.procs["store"].kill()
        await asyncio.sleep(5)
        at = time.monotonic()
        await asyncio.to_thread(sys_.restart, "store")
        # Every book the restarted store serves is one its writer renewed after the restart.
        back = await _until(lambda: sys_.converged(tickers), 60, "books live and right again")
    first = next(s for s in watch.samples if s.at >= at)
    check_fault(watch, sys_, tickers, "store restarted (killed, 5 s down)", at, back_s=back)
    assert not any(first.served.values()) or not any(first.wrong.values())


async def test_temporal_down_then_back(system: tuple[LocalSystem, list[str]]) -> None:
    sys_, tickers = system
    with BookWatch(sys_, tickers) as watch:
        await asyncio.sleep(2)
        at = time.monotonic()
        sys_.procs["temporal"].stop()
        await asyncio.sleep(15)
        await asyncio.to_thread(sys_.restart, "temporal")
        await asyncio.sleep(15)  # the activity's heartbeats reach the server again
        await _until(lambda: sys_.converged(tickers), 90, "books live and right again")
    check_fault(watch, sys_, tickers, "Temporal down 15 s, then back", at)
