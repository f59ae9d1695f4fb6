"""Parsing of every server message the spec lists, current and transition-era shapes."""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import orjson
import pytest

from marketpulse.kalshi import (
    ERROR_TEXTS,
    ErrorCode,
    ErrorMessage,
    EventLifecycle,
    MalformedMessage,
    MarketLifecycle,
    OkMessage,
    OrderbookDelta,
    OrderbookSnapshot,
    OtherMessage,
    SubscribedMessage,
    TickerMessage,
    TradeMessage,
    UnknownMessage,
    UnsubscribedMessage,
    parse_message,
)

# Real frames captured from Kalshi (sources and licenses: tests/fixtures/kalshi/README.md).
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kalshi" / "ws"


def _lines(name: str) -> list[str]:
    path = FIXTURES / name
    # A missing fixture is a broken checkout: fail, never skip.
    assert path.is_file(), f"fixture {path} is missing (see tests/fixtures/kalshi/README.md)"
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    assert lines, f"fixture {path} is empty"
    return lines


def test_subscribed_unsubscribed() -> None:
    m = parse_message('{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}')
    assert m == SubscribedMessage(id=1, channel="orderbook_delta", sid=1)
    u = parse_message('{"id":102,"sid":2,"seq":7,"type":"unsubscribed"}')
    assert u == UnsubscribedMessage(id=102, sid=2, seq=7)
    assert parse_message('{"sid":2,"type":"unsubscribed"}') == UnsubscribedMessage(None, 2, None)


def test_ok_both_shapes() -> None:
    new = parse_message(
        '{"id":123,"sid":456,"seq":222,"type":"ok","msg":{"market_tickers":["M-1","M-2"]}}'
    )
    old = parse_message('{"id":123,"sid":456,"type":"ok","market_tickers":["M-1","M-2"]}')
    assert isinstance(new, OkMessage) and isinstance(old, OkMessage)
    assert new.market_tickers == old.market_tickers == ["M-1", "M-2"]
    assert new.seq == 222 and old.seq is None
    lst_new = parse_message(
        '{"id":3,"type":"ok","msg":[{"channel":"orderbook_delta","sid":1},{"channel":"ticker","sid":2}]}'
    )
    lst_old = parse_message(
        '{"id":3,"type":"ok","subscriptions":[{"channel":"orderbook_delta","sid":1},{"channel":"ticker","sid":2}]}'
    )
    assert isinstance(lst_new, OkMessage) and isinstance(lst_old, OkMessage)
    assert lst_new.subscriptions == lst_old.subscriptions == [("orderbook_delta", 1), ("ticker", 2)]
    bare = parse_message('{"id":9,"type":"ok"}')  # skip_ticker_ack: no market list
    assert isinstance(bare, OkMessage) and bare.market_tickers is None


@pytest.mark.parametrize("code", list(range(1, 29)))
def test_error_codes(code: int) -> None:
    m = parse_message(
        json.dumps(
            {"id": 5, "sid": 3, "seq": 9, "type": "error", "msg": {"code": code, "msg": "x"}}
        )
    )
    assert isinstance(m, ErrorMessage)
    assert m.code == code == ErrorCode(code).value
    assert m.sid == 3 and m.seq == 9
    assert m.terminal == (code in (10, 25))
    assert m.text == "x"  # as sent
    bare = parse_message(json.dumps({"id": 5, "type": "error", "msg": {"code": code}}))
    assert isinstance(bare, ErrorMessage) and bare.text == ERROR_TEXTS[code]


def test_error_texts_are_the_published_table() -> None:
    # docs.kalshi.com (WebSocket quick start, "WebSocket Error Codes") and the AsyncAPI spec,
    # as quoted in docs/protocols/kalshi.md §3.1; the docs' own example frame:
    m = parse_message('{"id":123,"type":"error","msg":{"code":2,"msg":"Params required"}}')
    assert isinstance(m, ErrorMessage) and m.text == ERROR_TEXTS[2]
    assert set(ERROR_TEXTS) == {c.value for c in ErrorCode} == set(range(1, 29))
    assert ERROR_TEXTS[8] == "Unknown channel name"  # seen verbatim from the live exchange
    assert ERROR_TEXTS[25] == "Subscription buffer overflow"
    unknown = parse_message('{"type":"error","msg":{"code":99}}')
    assert isinstance(unknown, ErrorMessage) and unknown.text == "error 99"


def test_error_market_fields() -> None:
    m = parse_message(
        '{"id":1,"type":"error","msg":{"code":14,"msg":"Market Ticker required","market_ticker":"A","market_tickers":["B"]}}'
    )
    assert isinstance(m, ErrorMessage) and m.market_tickers == ["A", "B"] and not m.terminal
    assert m.code == ErrorCode.MARKET_TICKER_REQUIRED


def test_snapshot_current_with_subpenny() -> None:
    m = parse_message(
        '{"type":"orderbook_snapshot","sid":2,"seq":2,"msg":{"market_ticker":"FED-23DEC-T3.00",'
        '"market_id":"9b0f","yes_dollars_fp":[["0.0050","300.00"],["0.2200","333.00"]],'
        '"no_dollars_fp":[["0.9925","20.50"]]}}'
    )
    assert isinstance(m, OrderbookSnapshot)
    assert m.ticker == "FED-23DEC-T3.00" and m.sid == 2 and m.seq == 2 and m.id is None
    assert m.yes == [(D("0.0050"), D("300.00")), (D("0.2200"), D("333.00"))]
    assert m.no == [(D("0.9925"), D("20.50"))]


@pytest.mark.parametrize(
    "msg",
    [
        {"market_ticker": "A"},
        {"market_ticker": "A", "yes_dollars_fp": None, "no_dollars_fp": None},
        {"market_ticker": "A", "yes": None, "no": None, "yes_dollars": None, "no_dollars": None},
    ],
)
def test_snapshot_omitted_or_null_sides_are_empty(msg: dict[str, object]) -> None:
    m = parse_message(orjson.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": msg}))
    assert isinstance(m, OrderbookSnapshot) and m.yes == [] and m.no == []


def test_snapshot_one_side_omitted_and_get_snapshot_id() -> None:
    m = parse_message(
        '{"type":"orderbook_snapshot","id":127,"sid":2,"seq":9,"msg":{"market_ticker":"A",'
        '"no_dollars_fp":[["0.5400","20.00"]]}}'
    )
    assert isinstance(m, OrderbookSnapshot) and m.yes == [] and m.id == 127
    assert m.no == [(D("0.5400"), D("20.00"))]


def test_snapshot_transition_era_shapes() -> None:
    # Before Mar 2026: cents arrays plus *_dollars with integer counts; no *_fp.
    m = parse_message(
        '{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A",'
        '"yes":[[8,300]],"yes_dollars":[["0.0800",300]],"no":[[54,20]]}}'
    )
    assert isinstance(m, OrderbookSnapshot)
    assert m.yes == [(D("0.0800"), D(300))]
    assert m.no == [(D("0.54"), D(20))]  # from integer cents


def test_delta_current_and_legacy() -> None:
    cur = parse_message(
        '{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"FED-23DEC-T3.00",'
        '"market_id":"9b0f","price_dollars":"0.9600","delta_fp":"-54.00","side":"yes",'
        '"ts":"2022-11-22T20:44:01Z","ts_ms":1669149841000,"client_order_id":"c1"}}'
    )
    assert cur == OrderbookDelta(
        2, 3, "FED-23DEC-T3.00", "yes", D("0.9600"), D("-54.00"), 1669149841000, "c1"
    )
    legacy = parse_message(
        '{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"A","price":96,'
        '"delta":-54,"side":"no","ts":"2026-04-19T18:43:37.662364Z"}}'
    )
    assert isinstance(legacy, OrderbookDelta)
    assert legacy.price == D("0.96") and legacy.delta == D(-54) and legacy.side == "no"
    assert legacy.ts_ms == 1776624217662  # RFC3339 ts on deltas, to the millisecond
    num = parse_message(
        '{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"A","price_dollars":0.0075,'
        '"delta_fp":74.77,"side":"no"}}'
    )
    assert isinstance(num, OrderbookDelta)
    assert num.price == D("0.0075") and num.delta == D("74.77")  # numbers, without float noise


def test_ticker_current() -> None:
    m = parse_message(
        '{"type":"ticker","sid":11,"msg":{"market_id":"9b0f","market_ticker":"FED-23DEC-T3.00",'
        '"price_dollars":"0.4800","yes_bid_dollars":"0.4500","yes_ask_dollars":"0.5300",'
        '"volume_fp":"33896.00","open_interest_fp":"20422.00","dollar_volume":16948,'
        '"dollar_open_interest":10211,"yes_bid_size_fp":"300.00","yes_ask_size_fp":"150.00",'
        '"last_trade_size_fp":"25.00","ts":1669149841,"ts_ms":1669149841123,"time":"2022-11-22T20:44:01Z"}}'
    )
    assert isinstance(m, TickerMessage)
    assert (m.price, m.yes_bid, m.yes_ask) == (D("0.48"), D("0.45"), D("0.53"))
    assert (m.volume, m.open_interest) == (D("33896"), D("20422"))
    assert (m.yes_bid_size, m.yes_ask_size, m.last_trade_size) == (D(300), D(150), D(25))
    assert m.dollar_volume == 16948 and m.ts_ms == 1669149841123


def test_ticker_fixture_file() -> None:
    lines = _lines("kalshi_ticker.jsonl")
    assert len(lines) >= 5
    for line in lines:
        raw = json.loads(line)["msg"]
        m = parse_message(line)
        assert isinstance(m, TickerMessage), m
        assert m.ticker == raw["market_ticker"]
        assert m.price == D(raw["price_dollars"]) == D(raw["price"]) / 100
        assert m.yes_bid == D(raw["yes_bid_dollars"]) and m.yes_ask == D(raw["yes_ask_dollars"])
        assert m.volume == D(raw["volume_fp"]) and m.open_interest == D(raw["open_interest_fp"])
        assert m.ts_ms == raw["ts"] * 1000  # transition era: seconds only


def test_trade_fixture_file_and_side_fallbacks() -> None:
    lines = _lines("kalshi_trade.jsonl")
    for line in lines:
        raw = json.loads(line)
        m = parse_message(line)
        assert isinstance(m, TradeMessage), m
        assert m.seq == raw["seq"] and m.trade_id == raw["msg"]["trade_id"]
        assert m.yes_price + m.no_price == 1
        assert m.yes_price == D(raw["msg"]["yes_price_dollars"])
        assert m.count == D(raw["msg"]["count_fp"])
        assert m.taker_side == raw["msg"]["taker_side"]  # deprecated field as fallback
    cur = parse_message(
        '{"type":"trade","sid":11,"seq":2,"msg":{"trade_id":"d91b","market_ticker":"HIGHNY-22DEC23-B53.5",'
        '"yes_price_dollars":"0.3600","no_price_dollars":"0.6400","count_fp":"136.00",'
        '"taker_side":"yes","taker_outcome_side":"no","taker_book_side":"ask",'
        '"is_block_trade":true,"ts":1669149841,"ts_ms":1669149841000}}'
    )
    assert isinstance(cur, TradeMessage)
    assert cur.taker_side == "no"  # taker_outcome_side wins over the deprecated taker_side
    assert cur.taker_book_side == "ask" and cur.is_block_trade and cur.ts_ms == 1669149841000
    book_only = parse_message(
        '{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"x","market_ticker":"A",'
        '"yes_price_dollars":"0.9925","count_fp":"1.50","taker_book_side":"bid"}}'
    )
    assert isinstance(book_only, TradeMessage)
    assert book_only.taker_side == "yes" and book_only.no_price == D("0.0075")


def test_lifecycle_messages() -> None:
    m = parse_message(
        '{"type":"market_lifecycle_v2","sid":5,"seq":1,"msg":{"market_ticker":"A","event_type":"determined",'
        '"result":"yes","settlement_value":"1.0000","determination_ts":1}}'
    )
    assert (
        isinstance(m, MarketLifecycle) and m.status == "determined" and m.fields["result"] == "yes"
    )
    paused = parse_message(
        '{"type":"market_lifecycle_v2","sid":5,"seq":2,"msg":{"market_ticker":"A",'
        '"event_type":"deactivated","is_deactivated":true}}'
    )
    assert isinstance(paused, MarketLifecycle) and paused.status == "inactive"
    meta = parse_message(
        '{"type":"market_lifecycle_v2","sid":5,"seq":3,"msg":{"market_ticker":"A","event_type":"metadata_updated"}}'
    )
    assert isinstance(meta, MarketLifecycle) and meta.status is None
    ev = parse_message(
        '{"type":"event_lifecycle","sid":5,"seq":4,"msg":{"event_ticker":"KXBTCD-26MAY2018",'
        '"title":"t","series_ticker":"KXBTCD","collateral_return_type":"MECNET"}}'
    )
    assert isinstance(ev, EventLifecycle) and ev.event_ticker == "KXBTCD-26MAY2018"


@pytest.mark.parametrize(
    ("event_type", "flag", "status"),
    [
        ("deactivated", True, "inactive"),
        ("deactivated", False, "active"),  # a resume, as the simulator sends it
        ("activated", False, "active"),
        ("activated", True, "inactive"),
        ("deactivated", None, "inactive"),
        ("activated", None, "active"),
    ],
)
def test_lifecycle_pause_flag_decides(event_type: str, flag: bool | None, status: str) -> None:
    msg: dict[str, object] = {"market_ticker": "A", "event_type": event_type}
    if flag is not None:
        msg["is_deactivated"] = flag
    m = parse_message(orjson.dumps({"type": "market_lifecycle_v2", "sid": 5, "seq": 1, "msg": msg}))
    assert isinstance(m, MarketLifecycle) and m.status == status


def test_other_unknown_and_malformed() -> None:
    fill = parse_message('{"type":"fill","sid":1,"msg":{"trade_id":"x"}}')
    assert isinstance(fill, OtherMessage) and fill.type == "fill"
    unk = parse_message('{"type":"brand_new","sid":1,"seq":4,"msg":{}}')
    assert isinstance(unk, UnknownMessage) and unk.type == "brand_new" and unk.seq == 4
    for bad in (
        "not json",
        "[1,2]",
        '{"no_type":1}',
        '{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"abc","delta_fp":"1","side":"yes"}}',
        '{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"0.1","delta_fp":"NaN","side":"yes"}}',
        '{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"0.1","delta_fp":"1","side":"up"}}',
        '{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_dollars_fp":[["0.1"]]}}',
        '{"type":"ticker","sid":1,"msg":"nope"}',
        '{"type":"trade","sid":1,"seq":1,"msg":{"market_ticker":"A","count_fp":"1"}}',
        b"\xff\xfe",
    ):
        m = parse_message(bad)
        assert isinstance(m, MalformedMessage), (bad, m)
        assert m.reason


_TRADE = {
    "trade_id": "t-1",
    "market_ticker": "A",
    "yes_price_dollars": "0.4500",
    "count_fp": "3.00",
    "taker_side": "yes",
}


@pytest.mark.parametrize(
    "msg",
    [
        {k: v for k, v in _TRADE.items() if k != "trade_id"},
        {**_TRADE, "trade_id": ""},
        {**_TRADE, "count_fp": "-1.00"},
        {**_TRADE, "count_fp": "1e400"},
    ],
    ids=["no id", "empty id", "negative count", "count past float64"],
)
def test_a_trade_the_store_could_not_keep_is_malformed(msg: dict[str, object]) -> None:
    # Each would make the store refuse the whole batch it rides in.
    m = parse_message(json.dumps({"type": "trade", "sid": 2, "seq": 1, "msg": msg}))
    assert isinstance(m, MalformedMessage), m


@pytest.mark.parametrize(
    ("field", "value"),
    [("volume_fp", "-5.00"), ("yes_bid_size_fp", "1e400"), ("open_interest_fp", "-0.01")],
)
def test_ticker_quantities_are_non_negative_and_bounded(field: str, value: str) -> None:
    msg = {"market_ticker": "A", "price_dollars": "0.4500", field: value}
    m = parse_message(json.dumps({"type": "ticker", "sid": 3, "msg": msg}))
    assert isinstance(m, MalformedMessage), m


def test_snapshot_sizes_are_bounded() -> None:
    msg = {"market_ticker": "A", "yes_dollars_fp": [["0.4000", "1e400"]]}
    m = parse_message(json.dumps({"type": "orderbook_snapshot", "sid": 1, "seq": 1, "msg": msg}))
    assert isinstance(m, MalformedMessage), m


# -- the other price convention: cents vs dollars ---------------------------------------------

_CENT_FIELDS = {
    "ticker": ("price", "yes_bid", "yes_ask"),
    "trade": ("yes_price", "no_price"),
}


@pytest.mark.parametrize("name", ["kalshi_ticker.jsonl", "kalshi_trade.jsonl"])
def test_a_frame_in_the_other_units_is_refused_even_below_50_cents(name: str) -> None:
    # From each real frame: its cents alone (read as before), then dollars put in the cents
    # fields and cents in the dollars fields. Values below 0.50 are the dangerous ones: "0.35"
    # in a cents field would read as a third of a cent, a price on some markets' grids.
    below_half = 0
    for line in _lines(name):
        frame = json.loads(line)
        m = frame["msg"]
        fields = _CENT_FIELDS[frame["type"]]
        dollars = {f: m.pop(f"{f}_dollars") for f in fields}
        as_cents = parse_message(orjson.dumps(frame))
        assert not isinstance(as_cents, MalformedMessage), as_cents
        assert as_cents == parse_message(line)  # the cents alone mean the same
        below_half += any(D(v) < D("0.5") for v in dollars.values())
        wrong = {**frame, "msg": {**m, **{f: float(dollars[f]) for f in fields}}}
        got = parse_message(orjson.dumps(wrong))
        if all(float(dollars[f]) == int(float(dollars[f])) for f in fields):
            continue  # 0 and 1 are the same in both units
        assert isinstance(got, MalformedMessage), got
        assert "not whole cents" in got.reason and "dollars value in a cents field" in got.reason
        cents_as_dollars = {f"{f}_dollars": str(m[f]) for f in fields if m[f] > 1}
        if cents_as_dollars:
            m2 = {k: v for k, v in m.items() if k not in fields}
            got = parse_message(orjson.dumps({**frame, "msg": {**m2, **cents_as_dollars}}))
            assert isinstance(got, MalformedMessage), got
            assert "cents value in a dollars field" in got.reason
    assert below_half  # the fixtures hold prices under 50 cents


def test_book_levels_in_the_other_units_are_refused() -> None:
    ok = parse_message(
        '{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A",'
        '"yes":[[35,300]],"no":[[54,20]]}}'
    )
    assert isinstance(ok, OrderbookSnapshot) and ok.yes == [(D("0.35"), D(300))]
    for frame in (
        '{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A",'
        '"yes":[[0.35,300]],"no":[[54,20]]}}',
        '{"type":"orderbook_delta","sid":1,"seq":2,"msg":{"market_ticker":"A","price":0.35,'
        '"delta":5,"side":"yes"}}',
    ):
        got = parse_message(frame)
        assert isinstance(got, MalformedMessage) and "not whole cents" in got.reason, got
