"""Percentiles by nearest rank, as every benchmark reports them."""

from __future__ import annotations

import math

from marketpulse.testing import percentile, summarize_ms


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1..1000, shuffled order must not matter
    values.reverse()
    assert percentile(values, 50) == 500.0
    assert percentile(values, 99) == 990.0
    assert percentile(values, 99.9) == 999.0
    assert percentile(values, 100) == 1000.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert math.isnan(percentile([], 50))


def test_summary_of_millisecond_latencies() -> None:
    summary = summarize_ms([1.0, 2.0, 3.0, 4.0])
    assert summary == {"n": 4, "p50_ms": 2.0, "p99_ms": 4.0, "p999_ms": 4.0, "max_ms": 4.0}
    assert math.isnan(summarize_ms([])["max_ms"])
