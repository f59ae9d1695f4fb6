"""Derived price figures (pure functions)."""

from __future__ import annotations

from marketpulse.marketdata._pricing import (
    change_percent,
    display_price,
    history_bucket,
    mid,
    spread,
)


def test_mid_and_spread_round_away_float_noise() -> None:
    assert spread(0.55, 0.56) == 0.01
    assert mid(0.55, 0.56) == 0.555
    assert spread(None, 0.56) is None
    assert mid(0.55, None) is None


def test_display_price_prefers_last_trade() -> None:
    assert display_price(0.42, 0.40, 0.50) == 0.42
    assert display_price(None, 0.40, 0.50) == 0.45
    assert display_price(None, None, 0.50) is None


def test_change_percent_is_always_a_number() -> None:
    assert change_percent(0.55, 0.50) == 10.0
    assert change_percent(0.45, 0.50) == -10.0
    assert change_percent(None, 0.5) == 0.0
    assert change_percent(0.5, None) == 0.0
    assert change_percent(0.5, 0.0) == 0.0


def test_history_bucket() -> None:
    assert history_bucket(299_999.0) == 0.0
    assert history_bucket(300_000.0) == 300_000.0
