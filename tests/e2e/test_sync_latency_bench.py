"""bench/sync_latency.py runs end to end (a tiny configuration) and reports every receipt."""

from __future__ import annotations

import pytest

from .bench_run import run_bench

pytestmark = pytest.mark.e2e


def test_bench_reports_all_receipts_and_its_figures() -> None:
    figures, _ = run_bench(
        "sync_latency.py", "--subscribers", "20", "--rounds", "3", "--gap", "0.05", timeout=120
    )
    assert figures["receipts"] == figures["expected_receipts"] == 60
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["server_fanout_cpu_ms_per_commit"] > 0
