"""bench/chart_candles.py in a small configuration: the dashboard chart's two subscriptions
(a live window of the newest candles and the history before its middle) cost a trade far
less than one 1,500-candle query, show every candle it did, and the history moves once the
window has slid past its middle."""

from __future__ import annotations

import pytest

from .bench_run import run_bench

pytestmark = pytest.mark.e2e


def test_a_trade_resends_the_live_window_not_the_day() -> None:
    figures, _ = run_bench(
        "chart_candles.py", "--trades", "700", "--viewers", "5", "--rounds", "1", timeout=300
    )
    ratios = figures["ratios"]
    # Bytes are exact: 64 candles a push instead of ~1,500.
    assert ratios["bytes_per_viewer"] < 0.1
    # CPU moves with the host's load; the re-run of a day of candles is ~8x the window's.
    assert ratios["commit_cpu_us"] < 0.5
    shown = figures["candles_shown"]
    assert shown["live window"] >= shown["one query"]
    # 700 trades 3 s apart slide the window 35 minutes: the history moved once.
    assert figures["figures"]["live window"]["history_moves"] == 1
