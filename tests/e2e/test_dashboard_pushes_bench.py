"""bench/dashboard_pushes.py in a small configuration: the dashboard's chart (a live window of
the newest candles and the history before its middle) and its market list (asked without
prices) cost a step far less than the subscriptions they replace, show as much, and the
chart's history moves once the window has slid past its middle."""

from __future__ import annotations

import pytest

from .bench_run import run_bench

pytestmark = pytest.mark.e2e


def test_a_tick_resends_the_live_window_not_the_day_nor_the_list() -> None:
    figures, _ = run_bench(
        "dashboard_pushes.py", "--steps", "700", "--viewers", "5", "--rounds", "1", timeout=300
    )
    chart, market_list = figures["scenarios"]["chart"], figures["scenarios"]["list"]
    # Bytes are exact: 64 candles a push instead of ~1,500; the list is not pushed at all.
    assert chart["ratios"]["bytes_per_viewer"] < 0.1
    assert market_list["figures"]["prices: false"]["bytes_per_viewer"] == 0
    assert market_list["figures"]["with prices"]["bytes_per_viewer"] > 10_000
    # CPU moves with the host's load; the re-runs replaced cost several times what is left.
    assert chart["ratios"]["commit_cpu_us"] < 0.5
    assert market_list["ratios"]["commit_cpu_us"] < 0.5
    assert chart["shown"]["live window"] >= chart["shown"]["one query"]
    assert market_list["shown"] == {"with prices": 100, "prices: false": 100}
    # 700 trades 3 s apart slide the window 35 minutes: the history moved once.
    assert chart["figures"]["live window"]["moves"] == 1
