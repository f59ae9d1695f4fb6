"""bench/sync_latency.py runs end to end (a tiny configuration) and reports every receipt."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sync_latency.py"


def test_bench_reports_all_receipts_and_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--subscribers", "20", "--rounds", "3", "--gap", "0.05"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["receipts"] == figures["expected_receipts"] == 60
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["server_fanout_cpu_ms_per_commit"] > 0
