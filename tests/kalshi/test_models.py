"""REST models over current-shape payloads: the recorded fixtures and the simulator's own.

Every money (``_dollars``), count (``_fp``) and time (``_time``, ``_ts``) field the exchange sends
is declared and typed (Decimal, datetime, int): none is left as a string or float in the model,
and unknown fields are kept (and listed) rather than dropped.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from marketpulse.kalshi import Candlestick, Event, Market, RestTrade, Series
from marketpulse.simulator import Simulator, SimulatorConfig
from marketpulse.simulator._rest import handle

REST = Path(__file__).resolve().parent.parent / "fixtures" / "kalshi" / "rest"
TYPED_SUFFIXES = ("_dollars", "_fp", "_time", "_ts")


def fixture(name: str) -> Any:
    return json.loads((REST / f"{name}.json").read_text())["response"]


def walk(model: BaseModel, where: str = "") -> list[str]:
    """Where a declared field holds a float or an untyped string, or an extra field a
    typed-looking (``_dollars``, ``_fp``, ``_time``, ``_ts``) one."""
    bad: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, BaseModel):
                bad += walk(v, f"{where}{name}.")
            elif isinstance(v, float):
                bad.append(f"{where}{name}: float {v!r}")
            elif isinstance(v, tuple):
                bad += [f"{where}{name}: {x!r}" for x in v if not isinstance(x, Decimal)]
    for name in model.unknown_fields:  # type: ignore[attr-defined]
        if name.endswith(TYPED_SUFFIXES):
            bad.append(f"{where}{name}: undeclared, kept as {getattr(model, name)!r}")
    return bad


def markets_of_fixtures() -> list[dict[str, Any]]:
    return [
        *fixture("markets_list_response")["markets"],
        fixture("market_single_response")["market"],
        *fixture("event_single_response")["markets"],
    ]


def candles_of_fixtures() -> list[dict[str, Any]]:
    batch = fixture("candlesticks_batch_response")["markets"]
    return [
        *fixture("series_candlesticks_response")["candlesticks"],
        *[c for m in batch for c in m["candlesticks"]],
    ]


@pytest.fixture(scope="module")
def sim() -> Simulator:
    s = Simulator(SimulatorConfig(markets=12, seed=4, closed_markets=3))
    s.model.generate(400, 1_000)  # some trades for the trades endpoint
    return s


def sim_get(sim: Simulator, path: str, **query: Any) -> Any:
    status, body = handle(
        sim, "GET", f"/trade-api/v2{path}", {k: str(v) for k, v in query.items()}, b""
    )
    assert status == 200, body
    return body


def test_fixture_markets_are_typed_and_keep_unknown_fields() -> None:
    raw = markets_of_fixtures()
    assert len(raw) > 5
    for r in raw:
        m = Market.model_validate(r)
        assert walk(m) == [], (r["ticker"], walk(m))
        for key in ("close_time", "open_time", "created_time", "updated_time"):
            if r.get(key):
                assert isinstance(getattr(m, key), datetime), key
    single = Market.model_validate(fixture("market_single_response")["market"])
    assert "custom_strike" in single.unknown_fields  # kept as sent, and listed
    assert single.model_extra and single.model_extra["custom_strike"]


def test_fixture_candlesticks_trades_events_series_are_typed() -> None:
    candles = [Candlestick.model_validate(c) for c in candles_of_fixtures()]
    assert candles and all(walk(c) == [] for c in candles), [walk(c) for c in candles][:3]
    assert any(c.yes_ask.close is not None for c in candles)
    assert all(isinstance(c.yes_ask.close, Decimal | None) for c in candles)
    trades = [RestTrade.model_validate(t) for t in fixture("trades_list_response")["trades"]]
    assert trades and all(walk(t) == [] and isinstance(t.created_time, datetime) for t in trades)
    events = [Event.model_validate(e) for e in fixture("events_list_response")["events"]]
    assert events and all(walk(e) == [] for e in events)
    series = [Series.model_validate(s) for s in fixture("series_list_response")["series"]]
    assert series and all(walk(s) == [] for s in series)


def test_simulator_payloads_are_typed(sim: Simulator) -> None:
    raw = sim_get(sim, "/markets", limit=1000)["markets"]
    assert raw
    markets = [Market.model_validate(r) for r in raw]
    assert all(walk(m) == [] for m in markets), [walk(m) for m in markets if walk(m)][:3]
    for m in markets:
        assert isinstance(m.tick_size, int) and isinstance(m.fractional_trading_enabled, bool)
        assert isinstance(m.updated_time, datetime)
    settled = [m for m in markets if m.status == "finalized"]
    assert settled and all(
        m.settlement_value in (Decimal(0), Decimal(1)) and isinstance(m.settlement_ts, datetime)
        for m in settled
    )
    assert any(m.cap_strike is not None or m.floor_strike is not None for m in markets)
    t = markets[0].ticker
    series = t.split("-", 1)[0]
    end = sim.epoch_ms // 1000
    body = sim_get(
        sim, f"/series/{series}/markets/{t}/candlesticks",
        # Both ends are inclusive: an hour less a second holds 60 minute-ends wherever ``end``
        # falls (a whole hour held 61 when ``end`` was on a minute).
        start_ts=end - 3599, end_ts=end, period_interval=1,
    )  # fmt: skip
    candles = [Candlestick.model_validate(c) for c in body["candlesticks"]]
    assert len(candles) == 60 and all(walk(c) == [] for c in candles)
    assert all(isinstance(c.price.close, Decimal) for c in candles)
    trades = sim_get(sim, "/markets/trades", limit=100)["trades"]
    assert trades and all(walk(RestTrade.model_validate(x)) == [] for x in trades)


def test_trade_row_reads_candles_as_the_model_does() -> None:
    """The bulk reader (floats straight from the JSON) agrees with the typed model on every
    fixture candle, the legacy integer-cent shape included, and refuses what the model would."""
    raw = candles_of_fixtures()
    legacy = [
        {"end_period_ts": 60, "price": {"open": 35, "high": 40, "low": 30, "close": 38},
         "volume": 12},
        {"end_period_ts": 120, "price": {"open_dollars": "0.3500", "high_dollars": "0.4000",
         "low_dollars": "0.3000", "close_dollars": "0.3800"}, "volume_fp": "12.50"},
    ]  # fmt: skip
    traded = 0
    for r in [*raw, *legacy]:
        row = Candlestick.trade_row(r)
        c = Candlestick.model_validate(r)
        p = c.price
        if None in (p.open, p.high, p.low, p.close):
            assert row is None, r
            continue
        traded += 1
        want = (p.open, p.high, p.low, p.close, c.volume or Decimal(0))
        assert row == (c.end_period_ts, *(float(v) for v in want)), r  # type: ignore[arg-type]
    assert traded >= 3
    for bad in ("NaN", "inf", "0.5.1", None):
        candle = {"end_period_ts": 60, "price": {**legacy[1]["price"], "high_dollars": bad}}
        assert Candlestick.trade_row(candle) is None
    assert Candlestick.trade_row({"end_period_ts": "60", "price": legacy[1]["price"]}) is None
