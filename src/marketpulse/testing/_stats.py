"""Latency figures as tests and benchmarks report them."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "summarize_ms"]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: the smallest value with at least q % of
    the values at or below it; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    # Rounded first: 99.9 % of 1,000 must be rank 999, not 1,000 by a float's last bit.
    rank = math.ceil(round(q * len(ordered) / 100, 9))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def summarize_ms(values: Sequence[float]) -> dict[str, float]:
    """Count, p50, p99, p99.9 and max of millisecond latencies, rounded to 0.001 ms."""
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "p999_ms": round(percentile(values, 99.9), 3),
        "max_ms": round(max(values), 3) if values else float("nan"),
    }
