"""How long the event loop was unavailable: its wake-up lag and the collector's pauses.

Every client of the store waits on one event loop. Anything that holds the loop's thread (an
fsync, a long CPU run, a full garbage collection) delays every push and ping by as much, so
the store exports both as Prometheus histograms on ``/metrics``:

* ``marketpulse_event_loop_lag_seconds``: a task asks to wake every ``interval`` seconds and
  records how late it actually woke (what Node's ``monitorEventLoopDelay`` measures). A stall
  of the thread shows up as one sample as long as the stall.
* ``marketpulse_event_loop_lag_off_cpu_seconds``: of each such sample, the part the loop's
  thread was not running: the lag minus the thread's CPU time over the sample (at least that
  much). A long callback is lag on the CPU; waiting for a core on a busy machine, or a blocking
  system call (an fsync), is lag off it. The two call for different cures.
* ``marketpulse_event_loop_lag_on_cpu_seconds``: the rest of each sample (at most the thread's
  CPU time over it): how long the store's own work held the loop, whatever the host did.
* ``marketpulse_event_loop_lag_blocked_seconds``: of the part off the CPU, what the thread did
  not spend waiting for a core either (at least the lag minus its CPU time and its run-queue
  wait, which Linux keeps per thread in ``schedstat``): asleep in a blocking system call, or
  on the GIL while another thread of the store held it. This is what the store itself can
  cure; the rest of the time off the CPU is the host's other work. Not exported where the
  kernel keeps no run-queue time.
* ``marketpulse_gc_pause_seconds{generation}``: the duration of each collection, timed from
  ``gc.callbacks``' start to stop phases (a collection runs on whichever thread allocated,
  usually the loop's), and ``marketpulse_gc_pause_cpu_seconds{generation}`` its CPU time,
  which a busy machine's scheduling does not inflate.

:class:`LagRecorder` and :class:`GcPauseRecorder` are the sans-I/O parts (clock readings in,
observations out); :class:`LoopWatch` drives them on a running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

__all__ = ["LAG_BUCKETS", "GcPauseRecorder", "LagRecorder", "LoopWatch", "RunQueueClock"]

LAG_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    1.0,
    2.5,
)
"""Histogram bounds (s): fine below 10 ms, where the goals are (loop lag p999 <= 5 ms), and
fine enough up to 50 ms to tell a busy store's turns apart: at 10,000 msg/s the lag's p99 and
p999 both fell in one 10-20 ms bucket, where a change to the turns could not show."""


class LagRecorder:
    """Turns "asked to wake at t, woke at t'" into lag observations, and tells how much of
    each lag the thread spent off the CPU, and of that how much it was blocked.

    Args:
        observe: called with each lag, the part of it the thread was not running, and the
            part of that it was not waiting for a core either (None where the run-queue wait
            is not known), in seconds (never negative; each at most the one before).
    """

    def __init__(self, observe: Callable[[float, float, float | None], None]) -> None:
        self._observe = observe
        self._due: float | None = None
        self._cpu = 0.0
        self._waited: float | None = None

    def asleep(self, now: float, interval: float, cpu: float, waited: float | None = None) -> None:
        """The watcher goes to sleep at ``now`` for ``interval`` seconds; ``cpu`` is the
        thread's CPU time now, ``waited`` its time spent waiting for a core so far (if known)."""
        self._due = now + interval
        self._cpu = cpu
        self._waited = waited

    def woke(self, now: float, cpu: float, waited: float | None = None) -> float:
        """The watcher woke at ``now`` (the thread's CPU and run-queue times: ``cpu``,
        ``waited``); returns (and observes) how late that was."""
        if self._due is None:
            raise RuntimeError("woke() before asleep()")
        lag = max(0.0, now - self._due)
        self._due = None
        # The thread ran cpu - self._cpu over the sleep and the lag together: at most that much
        # of the lag was the thread's own work, the rest it waited.
        off_cpu = max(0.0, lag - (cpu - self._cpu))
        # Likewise at most its whole run-queue wait over both was a wait for a core.
        blocked = None
        if waited is not None and self._waited is not None:
            blocked = max(0.0, off_cpu - (waited - self._waited))
        self._observe(lag, off_cpu, blocked)
        return lag


class RunQueueClock:
    """The calling thread's total time runnable but waiting for a core, in seconds.

    Read from Linux's ``/proc/thread-self/schedstat`` (its second field, in ns), kept open: a
    read is one ``pread``. :meth:`open` on the thread to be measured; it returns None where the
    kernel does not keep the figure.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls) -> RunQueueClock | None:
        """The clock of the calling thread, or None where there is none."""
        try:
            fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            return None
        clock = cls(fd)
        try:
            clock()
        except (OSError, ValueError, IndexError):
            clock.close()
            return None
        return clock

    def __call__(self) -> float:
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    def close(self) -> None:
        """Close the file; idempotent."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class GcPauseRecorder:
    """Times each garbage collection from its ``gc.callbacks`` start and stop phases, in wall
    time (what every waiting client feels) and in the collecting thread's CPU time (the
    collection's own work, apart from a busy machine's scheduling).

    Args:
        observe: called with (generation, wall seconds, CPU seconds) after each collection.
        clock: a monotonic clock in seconds.
        cpu_clock: the calling thread's CPU time in seconds.
    """

    def __init__(
        self,
        observe: Callable[[int, float, float], None],
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self._observe = observe
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._started: tuple[float, float] | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        """The ``gc.callbacks`` entry point."""
        if phase == "start":
            self._started = (self._clock(), self._cpu_clock())
        elif phase == "stop" and self._started is not None:
            wall, cpu = self._started
            self._started = None
            generation = int(info.get("generation", -1))
            self._observe(generation, self._clock() - wall, self._cpu_clock() - cpu)


class LoopWatch:
    """Measures the running loop's wake-up lag and every GC pause into ``registry``.

    Args:
        registry: where the histograms are registered.
        interval: seconds between two lag samples (each one costs a timer wake-up).
    """

    def __init__(self, registry: CollectorRegistry, interval: float = 0.01) -> None:
        self.interval = interval
        self.lag = Histogram(
            "marketpulse_event_loop_lag_seconds",
            "How late the event loop woke a task that asked to sleep (a stalled loop thread)",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.lag_off_cpu = Histogram(
            "marketpulse_event_loop_lag_off_cpu_seconds",
            "Of each loop lag sample, the part the loop's thread was not running (waiting for a "
            "core, or in a blocking system call): at least the lag minus its CPU time",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.lag_on_cpu = Histogram(
            "marketpulse_event_loop_lag_on_cpu_seconds",
            "Of each loop lag sample, the part the loop's thread was running (the store's own "
            "long loop turns): at most its CPU time over the sample",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.lag_blocked = Histogram(
            "marketpulse_event_loop_lag_blocked_seconds",
            "Of each loop lag sample, the part the loop's thread was neither running nor waiting "
            "for a core (a blocking system call, or the GIL held by another thread): at least "
            "the lag minus its CPU and run-queue times (Linux only)",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.gc_pause, self.gc_cpu = (
            Histogram(
                name,
                doc,
                labelnames=["generation"],
                buckets=LAG_BUCKETS,
                registry=registry,
            )
            for name, doc in (
                (
                    "marketpulse_gc_pause_seconds",
                    "Duration of each garbage collection, by generation",
                ),
                (
                    "marketpulse_gc_pause_cpu_seconds",
                    "CPU time of each garbage collection, by generation (apart from scheduling)",
                ),
            )
        )
        self._lag = LagRecorder(self._observe_lag)
        self._gc = GcPauseRecorder(self._observe_gc)
        self._task: asyncio.Task[None] | None = None

    def _observe_lag(self, lag: float, off_cpu: float, blocked: float | None) -> None:
        self.lag.observe(lag)
        self.lag_off_cpu.observe(off_cpu)
        self.lag_on_cpu.observe(lag - off_cpu)
        if blocked is not None:
            self.lag_blocked.observe(blocked)

    def _observe_gc(self, generation: int, wall: float, cpu: float) -> None:
        label = str(generation)
        self.gc_pause.labels(label).observe(wall)
        self.gc_cpu.labels(label).observe(cpu)

    def start(self) -> None:
        """Start sampling on the running loop and timing collections."""
        if self._task is not None:
            return
        gc.callbacks.append(self._gc)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-watch")

    async def stop(self) -> None:
        """Stop both; idempotent."""
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        clock = asyncio.get_running_loop().time
        cpu = time.thread_time
        run_queue = RunQueueClock.open()  # here: on the loop's thread
        waited = run_queue or (lambda: None)
        try:
            while True:
                self._lag.asleep(clock(), self.interval, cpu(), waited())
                await asyncio.sleep(self.interval)
                self._lag.woke(clock(), cpu(), waited())
        finally:
            if run_queue is not None:
                run_queue.close()
