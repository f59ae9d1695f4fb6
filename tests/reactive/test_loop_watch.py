"""LoopWatch: the loop's wake-up lag and the collector's pauses, as Prometheus histograms."""

from __future__ import annotations

import asyncio
import gc
import os
import time

import pytest
from prometheus_client import CollectorRegistry

from marketpulse.reactive._loop_watch import (
    GcPauseRecorder,
    LagRecorder,
    LoopWatch,
    RunQueueClock,
)

Seen = list[tuple[float, float, float | None]]


def _recorder(seen: Seen) -> LagRecorder:
    return LagRecorder(lambda lag, off_cpu, blocked: seen.append((lag, off_cpu, blocked)))


def test_lag_is_how_late_the_watcher_woke_never_negative() -> None:
    seen: Seen = []
    lag = _recorder(seen)
    lag.asleep(10.0, 0.01, cpu=1.0)
    assert lag.woke(10.31, cpu=1.31) == pytest.approx(0.3)
    lag.asleep(20.0, 0.01, cpu=2.0)
    assert lag.woke(20.005, cpu=2.0) == 0.0  # early (clock granularity) counts as on time
    assert seen == [(pytest.approx(0.3), 0.0, None), (0.0, 0.0, None)]


def test_lag_the_thread_did_not_run_is_off_the_cpu() -> None:
    seen: Seen = []
    lag = _recorder(seen)
    lag.asleep(10.0, 0.01, cpu=1.0)
    lag.woke(10.31, cpu=1.05)  # 0.3 s late, having run 0.05 s: 0.25 s waiting at least
    assert seen == [(pytest.approx(0.3), pytest.approx(0.25), None)]


def test_off_the_cpu_and_not_waiting_for_a_core_is_blocked() -> None:
    seen: Seen = []
    lag = _recorder(seen)
    lag.asleep(10.0, 0.01, cpu=1.0, waited=5.0)
    # 0.3 s late, having run 0.05 s and waited 0.2 s for a core: blocked 0.05 s at least.
    lag.woke(10.31, cpu=1.05, waited=5.2)
    lag.asleep(20.0, 0.01, cpu=2.0, waited=6.0)
    lag.woke(20.31, cpu=2.0, waited=6.5)  # waited longer than it was off the CPU: not blocked
    assert seen == [
        (pytest.approx(0.3), pytest.approx(0.25), pytest.approx(0.05)),
        (pytest.approx(0.3), pytest.approx(0.3), 0.0),
    ]


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstat")
def test_the_run_queue_clock_reads_this_threads_wait_for_a_core() -> None:
    clock = RunQueueClock.open()
    assert clock is not None
    first = clock()
    assert 0 <= first <= clock()  # a total: it never goes back
    clock.close()
    clock.close()  # idempotent


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
    lag, off, on, blocked = (
        f"marketpulse_event_loop_lag{part}_seconds"
        for part in ("", "_off_cpu", "_on_cpu", "_blocked")
    )
    # Linux keeps each thread's run-queue wait: there a stall off the CPU is told apart from
    # a wait for a core.
    probe = RunQueueClock.open()
    linux = probe is not None
    if probe is not None:
        probe.close()

    def count(name: str) -> float:
        return _sample(registry, f"{name}_count")

    def over(name: str, le: str) -> float:
        return count(name) - _sample(registry, f"{name}_bucket", le=le)

    async def sample_of_the_stall() -> dict[tuple[str, str], float]:
        """What the watcher's next sample (the one covering a stall of the loop's thread that
        just ended) adds over each bound. Its timer is overdue, so it wakes at the loop's next
        turn: stepping turn by turn, no later sample (and no unrelated stall of a busy host)
        is counted with it."""
        before = {(n, le): over(n, le) for n in (lag, off, on, blocked) for le in ("0.2", "1.0")}
        seen = count(lag)
        async with asyncio.timeout(10):
            while count(lag) == seen:
                await asyncio.sleep(0)
        assert count(lag) == seen + 1
        return {key: over(*key) - value for key, value in before.items()}

    watch.start()
    try:
        async with asyncio.timeout(10):
            while count(lag) < 2:
                await asyncio.sleep(0.005)  # it samples on its own
        # The loop's thread is held off the CPU, as an fsync on it would hold it. The bounds
        # leave a loaded host room: this stall is 1.2 s, and the CPU stall below is counted
        # over 0.2 s on the CPU while its time off the CPU stays under 1 s unless the thread
        # got less than a fifth of a core.
        time.sleep(1.2)
        added = await sample_of_the_stall()
        assert added[lag, "1.0"] == 1  # one sample as long as the stall
        assert added[off, "1.0"] == 1  # and off the CPU
        assert added[on, "0.2"] == 0
        # Asleep, not waiting for a core: blocked (unless the host kept it off a core for
        # most of a second after the sleep).
        assert added[blocked, "0.2"] == (1 if linux else 0)
        end = time.thread_time() + 0.25
        while time.thread_time() < end:
            pass  # now the thread holds the loop on the CPU, as a long callback does
        added = await sample_of_the_stall()
        assert added[lag, "0.2"] == 1
        assert added[off, "1.0"] == 0
        assert added[blocked, "1.0"] == 0
        assert added[on, "0.2"] == 1
        gc.collect()
        assert _sample(registry, "marketpulse_gc_pause_seconds_count", generation="2") >= 1
        assert _sample(registry, "marketpulse_gc_pause_cpu_seconds_count", generation="2") >= 1
    finally:
        await watch.stop()
    await watch.stop()  # idempotent
    stopped = count(lag)
    await asyncio.sleep(0.03)
    assert count(lag) == stopped  # stopped
