"""A disk that stalls now and then: fault injection for tests and benchmarks only.

This machine's virtual disk was seen taking 30 ms to 1.5 s for one fsync while other work
wrote heavily. :func:`inject_slow_disk` makes an SQLite store's writer sleep (on whichever
thread the write runs, as a slow fsync would block it) on the first flush after every
``every_s`` seconds, so a test or benchmark can show what such a stall does to the event loop
and to subscribers. ``marketpulse serve`` applies it only when ``MARKETPULSE_TEST_SLOW_DISK_S``
is set; nothing else uses it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._types import Commit, Persistence

__all__ = ["SlowFlushes", "inject_slow_disk"]


class SlowFlushes:
    """Decides which flushes stall: the first one after every ``every_s`` seconds.

    Args:
        sleep_s: how long a stalled flush sleeps.
        every_s: least time between two stalls (the first flush stalls).
        clock: a monotonic clock in seconds.
    """

    def __init__(
        self, sleep_s: float, every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if sleep_s <= 0 or every_s <= 0:
            raise ValueError("a slow disk needs sleep_s > 0 and every_s > 0")
        self.sleep_s = sleep_s
        self.every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()
        self.stalls = 0

    def delay(self) -> float:
        """Seconds the flush starting now must sleep (0 for most)."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.every_s:
                return 0.0
            self._last = now
            self.stalls += 1
            return self.sleep_s


def inject_slow_disk(persistence: Persistence, sleep_s: float, every_s: float) -> SlowFlushes:
    """Make ``persistence``'s writer sleep ``sleep_s`` on one flush every ``every_s`` seconds.

    Raises:
        ValueError: not an SQLite store (the only one with a writer to slow down), or a
            non-positive duration.
    """
    from .sqlite import SqlitePersistence

    if not isinstance(persistence, SqlitePersistence):
        raise ValueError(f"a slow disk can only be injected into SQLite, not {persistence!r}")
    flushes = SlowFlushes(sleep_s, every_s)
    write = persistence._write_sync

    def slow_write(commits: list[Commit]) -> None:
        pause = flushes.delay()
        if pause:
            time.sleep(pause)
        write(commits)

    # An instance attribute shadows the method for every caller, inline or on the thread.
    persistence._write_sync = slow_write  # type: ignore[method-assign]
    return flushes
