"""Short garbage collections for a server holding many long-lived objects.

Every collection holds the event loop (it runs on whichever thread allocated, holding the GIL),
so a collection's pause is a stall of every push. CPython 3.11's collector is generational and
not incremental: a pass walks every tracked object of the generations it collects, and frees
the cyclic garbage it finds, in one go. Its cost is roughly proportional to the objects it
walks plus the objects it frees. Measured in ``serve`` under ``bench/hostile.py``'s attacks
(``gc.callbacks`` probe, CPU time), with CPython's default schedule and the former
survivor freezer:

* young passes (generation 0: at most ~700 new objects) stayed under ~2 ms;
* generation 1 passes (up to 10 young passes' survivors) took up to 12-23 ms while sockets
  churned: most of that is freeing closed connections' reference cycles;
* full passes (generation 2) took up to 12-44 ms (110 ms under the profiler): CPython starts
  one when the objects promoted since the last pass exceed a quarter of the last pass's
  survivors, so its size follows the heap, not a bound.

So :class:`GcPacer` bounds every pass by count, not by the heap:

* what is alive at start-up is frozen (``gc.freeze``): no pass walks it again;
* generation 1 is collected when more than ``young[1]`` young passes ran since the last
  one (CPython counts so): with 0, every second collection is a generation 1 pass over at
  most two young passes' survivors (CPython's default, 10, lets eleven accumulate; the
  pacer's former 3, four: 1.9-3.2 ms passes under ``bench/slow_disk.py``, in turns that
  already held a commit's work);
* CPython never starts a full pass on its own (its threshold is out of reach). Instead, after
  every ``full_after`` generation 1 passes (default: each one), one full pass runs on the event
  loop, in its own loop turn (not inside the callback that happened to allocate), and its
  survivors are frozen at once. Each full pass therefore walks only what was promoted since
  the previous one (one generation 1 pass's survivors, or the few that ran before the loop
  got to it), however large the heap. That walks those survivors a second time (the
  collector's total CPU over the same attacks was no higher: 129-142 against 130-281 ms) and
  freezes objects younger than before: one that dies in a cycle after that waits for the
  sweep.

With the pacer, the same attacks: generation 1 passes at most 1.7 ms, full passes 2.7 ms (CPU;
3.6 ms wall at most), on a host at load 3-11 (``bench/results/HISTORY.md``).

Frozen objects are still freed by reference counting the moment nothing refers to them. Only a
reference cycle among frozen objects waits: every ``sweep_interval`` everything is unfrozen,
collected once and frozen again. That sweep walks the whole heap (its pause grows with it: one
per ``sweep_interval``, logged with its duration), so cycles that objects can break themselves
should be broken when they are done (a closed socket drops its parser's buffer at once).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import structlog

__all__ = ["GcPacer"]

log = structlog.get_logger("marketpulse.gc")

_NEVER = 1_000_000_000
"""A generation 2 threshold CPython's count of generation 1 passes never reaches."""


class GcPacer:
    """Keeps every collection short: small young generations, full passes over recent
    survivors only, on the event loop; a sweep of everything now and then.

    Args:
        loop: the server's event loop (full passes and sweeps run on it).
        young: CPython's thresholds for generations 0 and 1: net new objects before a young
            pass, and young passes that, once exceeded, start a generation 1 pass.
        full_after: generation 1 passes between two full passes.
        sweep_interval: seconds between full unfrozen collections (cycles among long-lived
            objects are reclaimed then).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        young: tuple[int, int] = (700, 0),
        full_after: int = 1,
        sweep_interval: float = 600.0,
    ) -> None:
        self._loop = loop
        self._young = young
        self._full_after = full_after
        self._sweep_interval = sweep_interval
        self._saved: tuple[int, int, int] | None = None
        self._scheduled = False
        self._sweeper: asyncio.TimerHandle | None = None
        self.full_passes = 0
        self.sweeps = 0
        self.last_sweep_s = 0.0

    def start(self) -> None:
        """Freeze what is alive now and take over the collector's schedule."""
        gc.collect()
        gc.freeze()
        self._saved = gc.get_threshold()
        gc.set_threshold(self._young[0], self._young[1], _NEVER)
        gc.callbacks.append(self._on_gc)
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)

    def stop(self) -> None:
        """Hand the schedule back to CPython; frozen objects stay frozen (the process is
        ending)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, on whatever thread triggered it: only schedule. A
        # generation 1 pass has just added one to the count of generation 2.
        if (
            phase == "stop"
            and info.get("generation") == 1
            and not self._scheduled
            and gc.get_count()[2] >= self._full_after
        ):
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._full_pass)
            except RuntimeError:  # the loop is closed
                self._scheduled = False

    def _full_pass(self) -> None:
        self._scheduled = False
        gc.collect(2)
        gc.freeze()
        self.full_passes += 1

    def _sweep(self) -> None:
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self.last_sweep_s = time.perf_counter() - started
        self.sweeps += 1
        log.info(
            "garbage collection sweep",
            ms=round(self.last_sweep_s * 1000, 1),
            collected=collected,
            frozen=gc.get_freeze_count(),
        )
        self._sweeper = self._loop.call_later(self._sweep_interval, self._sweep)
