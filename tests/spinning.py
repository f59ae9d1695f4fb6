"""Holding a thread on the CPU in tests, as a long callback or function run does."""

from __future__ import annotations

import time


def spin(seconds: float) -> None:
    """Busy-wait ``seconds`` of wall-clock time (not a sleep: the thread keeps the GIL and the
    event loop, which is what the tests using it mean to show)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
