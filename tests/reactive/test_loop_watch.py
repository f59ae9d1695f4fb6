"""LoopWatch: the loop's wake-up lag and the collector's pauses, as Prometheus histograms."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from prometheus_client import CollectorRegistry

from marketpulse.reactive._loop_watch import GcPauseRecorder, LagRecorder, LoopWatch


def test_lag_is_how_late_the_watcher_woke_never_negative() -> None:
    seen: list[tuple[float, float]] = []
    lag = LagRecorder(lambda lag, off_cpu: seen.append((lag, off_cpu)))
    lag.asleep(10.0, 0.01, cpu=1.0)
    assert lag.woke(10.31, cpu=1.31) == pytest.approx(0.3)
    lag.asleep(20.0, 0.01, cpu=2.0)
    assert lag.woke(20.005, cpu=2.0) == 0.0  # early (clock granularity) counts as on time
    assert seen == [(pytest.approx(0.3), 0.0), (0.0, 0.0)]


def test_lag_the_thread_did_not_run_is_off_the_cpu() -> None:
    seen: list[tuple[float, float]] = []
    lag = LagRecorder(lambda lag, off_cpu: seen.append((lag, off_cpu)))
    lag.asleep(10.0, 0.01, cpu=1.0)
    lag.woke(10.31, cpu=1.05)  # 0.3 s late, having run 0.05 s: 0.25 s waiting at least
    assert seen == [(pytest.approx(0.3), pytest.approx(0.25))]


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

        def over(name: str) -> float:
            return _sample(registry, f"{name}_count") - _sample(
                registry, f"{name}_bucket", le="0.1"
            )

        assert over("marketpulse_event_loop_lag_seconds") == 1  # one sample as long as the stall
        assert over("marketpulse_event_loop_lag_off_cpu_seconds") == 1  # and off the CPU
        assert over("marketpulse_event_loop_lag_on_cpu_seconds") == 0
        end = time.thread_time() + 0.12
        while time.thread_time() < end:
            pass  # now the thread holds the loop on the CPU, as a long callback does
        await asyncio.sleep(0.02)
        assert over("marketpulse_event_loop_lag_seconds") == 2
        assert over("marketpulse_event_loop_lag_off_cpu_seconds") == 1
        assert over("marketpulse_event_loop_lag_on_cpu_seconds") == 1
        gc.collect()
        assert _sample(registry, "marketpulse_gc_pause_seconds_count", generation="2") >= 1
        assert _sample(registry, "marketpulse_gc_pause_cpu_seconds_count", generation="2") >= 1
    finally:
        await watch.stop()
    await watch.stop()  # idempotent
    count = _sample(registry, "marketpulse_event_loop_lag_seconds_count")
    await asyncio.sleep(0.03)
    assert _sample(registry, "marketpulse_event_loop_lag_seconds_count") == count  # stopped
