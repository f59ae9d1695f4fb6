"""LoopWatch: the loop's wake-up lag and the collector's pauses, as Prometheus histograms."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from prometheus_client import CollectorRegistry

from marketpulse.reactive._loop_watch import GcPauseRecorder, LagRecorder, LoopWatch


def test_lag_is_how_late_the_watcher_woke_never_negative() -> None:
    seen: list[float] = []
    lag = LagRecorder(seen.append)
    lag.asleep(10.0, 0.01)
    assert lag.woke(10.31) == pytest.approx(0.3)
    lag.asleep(20.0, 0.01)
    assert lag.woke(20.005) == 0.0  # early (clock granularity) counts as on time
    assert len(seen) == 2 and seen[1] == 0.0


def test_a_gc_pause_is_timed_from_start_to_stop() -> None:
    now = [0.0]
    cpu = [1.0]
    seen: list[tuple[int, float, float]] = []
    rec = GcPauseRecorder(
        lambda g, w, c: seen.append((g, w, c)), clock=lambda: now[0], cpu_clock=lambda: cpu[0]
    )
    rec("start", {"generation": 2})
    now[0] = 0.004
    cpu[0] = 1.001  # the thread was off the CPU for most of the pause
    rec("stop", {"generation": 2})
    rec("stop", {"generation": 0})  # a stop without its start is ignored
    assert seen == [(2, 0.004, pytest.approx(0.001))]


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_a_blocked_loop_and_a_full_collection_show_in_the_histograms() -> None:
    registry = CollectorRegistry()
    watch = LoopWatch(registry, interval=0.005)
    watch.start()
    try:
        await asyncio.sleep(0.05)
        quiet = _sample(registry, "marketpulse_event_loop_lag_seconds_count")
        assert quiet >= 2  # it samples on its own
        time.sleep(0.12)  # the loop's thread is held, as an fsync on it would hold it
        await asyncio.sleep(0.02)
        over = _sample(registry, "marketpulse_event_loop_lag_seconds_count") - _sample(
            registry, "marketpulse_event_loop_lag_seconds_bucket", le="0.1"
        )
        assert over == 1  # one sample as long as the stall
        gc.collect()
        assert _sample(registry, "marketpulse_gc_pause_seconds_count", generation="2") >= 1
        assert _sample(registry, "marketpulse_gc_pause_cpu_seconds_count", generation="2") >= 1
    finally:
        await watch.stop()
    await watch.stop()  # idempotent
    count = _sample(registry, "marketpulse_event_loop_lag_seconds_count")
    await asyncio.sleep(0.03)
    assert _sample(registry, "marketpulse_event_loop_lag_seconds_count") == count  # stopped
