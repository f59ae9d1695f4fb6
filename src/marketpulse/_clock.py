"""Wall-clock time in the unit every stored and reported time uses: epoch milliseconds."""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> float:
    """Wall-clock time in epoch milliseconds."""
    return time.time() * 1000.0
