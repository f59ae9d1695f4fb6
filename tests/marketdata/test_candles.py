"""Candle bucketing, merging, packing and gap filling (pure functions)."""

from __future__ import annotations

from marketpulse.marketdata._candles import (
    INTERVALS,
    OPEN_FIELDS,
    bucket_start,
    fill_gaps,
    merge_trade,
    new_candle,
    pack_open,
    unpack_open,
)


def test_bucket_start_aligns_to_interval() -> None:
    assert bucket_start(125_000, INTERVALS["1m"]) == 120_000
    assert bucket_start(299_999, INTERVALS["5m"]) == 0
    assert bucket_start(3_600_000, INTERVALS["1h"]) == 3_600_000


def test_merge_keeps_ohlc_even_out_of_order() -> None:
    c = new_candle("A", "1m", 0.0, 0.50, 2.0, 10_000.0)
    merge_trade(c, 0.60, 1.0, 20_000.0)
    merge_trade(c, 0.40, 3.0, 5_000.0)  # arrives late: becomes the open
    merge_trade(c, 0.55, 1.0, 15_000.0)  # in the middle: neither open nor close
    assert (c["open"], c["high"], c["low"], c["close"]) == (0.40, 0.60, 0.40, 0.60)
    assert c["volume"] == 7.0
    assert c["trades"] == 4.0


def test_volume_is_the_exact_sum_of_fixed_point_sizes() -> None:
    # Kalshi's sizes are fixed-point (count_fp "0.10"): the float sum 0.1 + 0.2 + ... drifted
    # (0.30000000000000004; 2871.6500000000005 against the exchange's 2871.65 in a live run).
    c = new_candle("A", "1m", 0.0, 0.50, 0.1, 1_000.0)
    merge_trade(c, 0.50, 0.2, 2_000.0)
    assert c["volume"] == 0.3
    for k in range(1000):
        merge_trade(c, 0.50, 2.87165, 3_000.0 + k)
    assert repr(c["volume"]) == "2871.95"


def test_fill_gaps_carries_last_close_and_is_oldest_first() -> None:
    m = INTERVALS["1m"]
    newest_first = [
        {**new_candle("A", "1m", 3 * m, 0.7, 1.0, 3 * m), "close": 0.72},
        new_candle("A", "1m", 0.0, 0.5, 2.0, 0.0),
    ]
    out = fill_gaps(newest_first, m, 10)
    assert [c["start"] for c in out] == [0.0, m, 2 * m, 3 * m]
    assert out[1] == {
        "start": m,
        "open": 0.5,
        "high": 0.5,
        "low": 0.5,
        "close": 0.5,
        "volume": 0.0,
        "trades": 0.0,
    }
    assert out[3]["close"] == 0.72


def test_fill_gaps_respects_limit_keeping_newest() -> None:
    m = INTERVALS["1m"]
    newest_first = [
        new_candle("A", "1m", 100 * m, 0.7, 1.0, 100 * m),
        new_candle("A", "1m", 0.0, 0.5, 1.0, 0.0),
    ]
    out = fill_gaps(newest_first, m, 5)
    assert [c["start"] for c in out] == [96 * m, 97 * m, 98 * m, 99 * m, 100 * m]
    assert all(c["close"] == 0.5 for c in out[:4])


def test_open_candles_pack_and_unpack_to_the_same_candles() -> None:
    candles = {
        interval: new_candle("A", interval, float(n * 1000), 0.25 + n, 2.0, 5.0 + n)
        for n, interval in enumerate(INTERVALS)
    }
    merge_trade(candles["1h"], 0.1, 3.0, 1.0)
    blob = pack_open(candles)
    assert len(blob) == 8 * len(OPEN_FIELDS) * len(INTERVALS)
    assert unpack_open("A", blob) == candles
