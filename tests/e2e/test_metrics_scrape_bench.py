"""bench/metrics_scrape.py in its quick form: a real ``serve`` scraped at a set rate, and a
second store started from the ``--before`` checkout (here this one's ``src/``), each measured
from its own loop-lag histogram."""

from __future__ import annotations

from pathlib import Path

import pytest

from .bench_run import run_bench

pytestmark = pytest.mark.e2e

SRC = Path(__file__).resolve().parents[2] / "src"


def test_both_stores_are_scraped_at_the_rate_and_measured() -> None:
    figures, output = run_bench(
        "metrics_scrape.py", "--quick", "--rate", "20", "--before", str(SRC), timeout=120
    )
    assert figures["before_src"] == str(SRC)
    for name in ("before", "this"):
        [run] = figures["runs"][name]
        # The pacing held (a scrape is a few ms) and the lag sampler ran throughout (every
        # 10 ms for 5 s).
        assert 15 <= run["scrapes_per_s"] <= 20.5
        assert run["samples"] >= 300
        assert 0 < run["lag_p50_ms"] <= run["lag_p99_ms"] <= run["lag_p999_ms"]
        assert 0 <= run["over_3ms_pct"] <= run["over_2ms_pct"] <= 100
    assert "loop lag under /metrics scrapes alone" in output
