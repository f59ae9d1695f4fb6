"""REST v2 market-data endpoints and the ``/_sim`` control API, as plain functions.

``handle(sim, method, path, query, body)`` returns ``(status, json_body)``; the HTTP adapter only
parses and writes. Shapes follow Kalshi's OpenAPI 3.13 (current fields only: ``*_dollars``
strings, ``*_fp`` sizes; no integer cents unless the simulator runs in legacy mode).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson

from marketpulse.simulator._catalog import STRUCTURES, Event, Market, Series
from marketpulse.simulator._frames import rfc3339
from marketpulse.simulator._history import candlesticks
from marketpulse.simulator._units import ONE, cents, contracts, price_str, size_str

if TYPE_CHECKING:
    from marketpulse.simulator._server import Simulator

API = "/trade-api/v2"

# GET /markets status filter -> Market.status values (docs/protocols/kalshi.md §5 "vocabulary gotcha")
STATUS_FILTER = {
    "unopened": {"initialized"},
    "open": {"active"},
    "paused": {"inactive"},
    "closed": {"closed"},
    "settled": {"determined", "disputed", "amended", "finalized", "settled"},
}
EVENT_STATUS = {"unopened", "open", "closed", "settled"}


class HttpError(Exception):
    """An HTTP error with a Kalshi-style JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


def iso(ms: int) -> str:
    """Epoch ms -> RFC 3339 as Kalshi writes it (``Z``, trailing zeros of the fraction trimmed)."""
    return rfc3339(ms)


def _int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "invalid_parameters", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, "invalid_parameters", f"{name} must be between {lo} and {hi}")
    return value


def _cursor(query: Mapping[str, str]) -> int | None:
    """The position a ``cursor`` names (None: no cursor, the first page)."""
    cursor = query.get("cursor") or ""
    if not cursor:
        return None
    try:
        pos = int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "invalid_parameters", "invalid cursor") from None
    if pos < 0:
        raise HttpError(400, "invalid_parameters", "invalid cursor")
    return pos


def _encode_cursor(pos: int) -> str:
    return base64.urlsafe_b64encode(str(pos).encode()).decode()


def _paginate(
    items: list[Any], query: Mapping[str, str], default: int, lo: int, hi: int
) -> tuple[list[Any], str]:
    """One page and the next cursor ("" on the last page); ``limit=0`` means the default.

    The cursor is an offset: for lists that do not change while a client pages (the catalog).
    """
    limit = _int(query, "limit", default, lo, hi) or default
    start = _cursor(query) or 0
    page = items[start : start + limit]
    nxt = start + limit
    return page, _encode_cursor(nxt) if nxt < len(items) else ""


def market_json(sim: Simulator, m: Market) -> dict[str, Any]:
    """A Market object with its live prices."""
    st = sim.model.states[m.ticker]
    price, yes_bid, yes_ask, bid_size, ask_size, volume, oi = st.ticker_fields()
    no_bid = ONE - yes_ask
    no_ask = ONE - yes_bid
    d: dict[str, Any] = {
        "ticker": m.ticker,
        "event_ticker": m.event_ticker,
        "market_type": "binary",
        "title": m.title,
        "subtitle": m.subtitle,
        "yes_sub_title": m.yes_sub_title,
        "no_sub_title": m.no_sub_title,
        "created_time": iso(m.created_ms),
        "open_time": iso(m.open_ms),
        "close_time": iso(m.close_ms),
        "expected_expiration_time": iso(m.expected_expiration_ms),
        "expiration_time": iso(m.close_ms + 7 * 86_400_000),
        "latest_expiration_time": iso(m.close_ms + 7 * 86_400_000),
        "settlement_timer_seconds": 300,
        "status": m.status,
        "response_price_units": "usd_cent",
        "yes_bid_dollars": price_str(yes_bid),
        "yes_bid_size_fp": size_str(bid_size),
        "yes_ask_dollars": price_str(yes_ask),
        "yes_ask_size_fp": size_str(ask_size),
        "no_bid_dollars": price_str(no_bid),
        "no_ask_dollars": price_str(no_ask),
        "last_price_dollars": price_str(price),
        "previous_yes_bid_dollars": price_str(m.previous_yes_bid),
        "previous_yes_ask_dollars": price_str(m.previous_yes_ask),
        "previous_price_dollars": price_str(m.previous_price),
        "volume_fp": size_str(volume),
        "volume_24h_fp": size_str(volume // 7),
        "open_interest_fp": size_str(oi),
        "notional_value_dollars": "1.0000",
        "liquidity_dollars": "0.0000",
        "result": m.result,
        "can_close_early": True,
        "expiration_value": "",
        "rules_primary": m.rules_primary,
        "rules_secondary": "",
        "price_level_structure": m.structure,
        "price_ranges": [
            {"start": price_str(a), "end": price_str(b), "step": price_str(s)}
            for a, b, s in STRUCTURES[m.structure]
        ],
        "strike_type": m.strike_type,
        # Deprecated by price_level_structure but still sent: cents of the coarsest tick.
        "tick_size": STRUCTURES[m.structure][0][2] // 100 or 1,
        "fractional_trading_enabled": True,
        "updated_time": iso(m.updated_ms or m.open_ms),
    }
    if m.floor_strike is not None:
        d["floor_strike"] = m.floor_strike
    if m.cap_strike is not None:
        d["cap_strike"] = m.cap_strike
    if m.settlement_value is not None:
        d["settlement_value_dollars"] = price_str(m.settlement_value)
    if m.settlement_ms is not None:
        d["settlement_ts"] = iso(m.settlement_ms)
    if sim.config.legacy:
        d.update(
            yes_bid=cents(yes_bid),
            yes_ask=cents(yes_ask),
            no_bid=cents(no_bid),
            no_ask=cents(no_ask),
            last_price=cents(price),
            volume=contracts(volume),
            open_interest=contracts(oi),
            previous_price=cents(m.previous_price),
        )
    return d


def event_json(sim: Simulator, ev: Event, nested: bool) -> dict[str, Any]:
    """An EventData object."""
    d: dict[str, Any] = {
        "event_ticker": ev.event_ticker,
        "series_ticker": ev.series_ticker,
        "title": ev.title,
        "sub_title": ev.sub_title,
        "category": ev.category,
        "mutually_exclusive": ev.mutually_exclusive,
        "collateral_return_type": "MECNET" if ev.mutually_exclusive else "",
        "strike_date": iso(ev.strike_date_ms),
        "strike_period": "",
        "available_on_brokers": False,
    }
    if nested:
        d["markets"] = [market_json(sim, sim.catalog.markets[t]) for t in ev.markets]
    return d


def series_json(s: Series) -> dict[str, Any]:
    """A Series object."""
    return {
        "ticker": s.ticker,
        "frequency": s.frequency,
        "title": s.title,
        "category": s.category,
        "tags": s.tags,
        "settlement_sources": [{"name": s.source_name, "url": s.source_url}],
        "contract_url": f"https://kalshi-public-docs.s3.amazonaws.com/regulatory/product-certifications/{s.ticker}.pdf",
        "contract_terms_url": f"https://kalshi-public-docs.s3.amazonaws.com/contract_terms/{s.ticker}.pdf",
        "fee_type": "quadratic",
        "fee_multiplier": 1,
        "additional_prohibitions": [],
    }


def _event_status(sim: Simulator, ev: Event) -> str:
    statuses = {sim.catalog.markets[t].status for t in ev.markets}
    if statuses & {"active", "inactive"}:
        return "open"
    if statuses <= STATUS_FILTER["settled"]:
        return "settled"
    if "initialized" in statuses:
        return "unopened"
    return "closed"


def _markets(sim: Simulator, q: Mapping[str, str]) -> dict[str, Any]:
    items = list(sim.catalog.markets.values())
    status = q.get("status")
    if status:
        if status not in STATUS_FILTER:
            raise HttpError(400, "invalid_parameters", f"invalid status filter {status!r}")
        items = [m for m in items if m.status in STATUS_FILTER[status]]
    if q.get("event_ticker"):
        if "," in q["event_ticker"]:
            raise HttpError(400, "invalid_parameters", "event_ticker takes one event")
        items = [m for m in items if m.event_ticker == q["event_ticker"]]
    if q.get("series_ticker"):
        items = [m for m in items if m.series_ticker == q["series_ticker"]]
    if q.get("tickers"):
        wanted = set(q["tickers"].split(","))
        items = [m for m in items if m.ticker in wanted]
    for name, op in (("min_close_ts", int.__ge__), ("max_close_ts", int.__le__)):
        if q.get(name):
            bound = _int(q, name, 0, 0, 2**40) * 1000
            items = [m for m in items if op(m.close_ms, bound)]
    page, cursor = _paginate(items, q, 100, 0, 1000)
    return {"markets": [market_json(sim, m) for m in page], "cursor": cursor}


def _orderbook(sim: Simulator, ticker: str, q: Mapping[str, str]) -> dict[str, Any]:
    depth = _int(q, "depth", 0, 0, 100)
    book = sim.model.book(ticker)
    ob: dict[str, Any] = {}
    for side in ("yes", "no"):
        levels = book.levels(side)
        if depth:
            levels = levels[-depth:]
        ob[f"{side}_dollars"] = [[price_str(p), size_str(s)] for p, s in levels]
    return {"orderbook_fp": ob}


def _trades(sim: Simulator, q: Mapping[str, str]) -> dict[str, Any]:
    """Newest first, like Kalshi. The cursor names the trade to continue below (its number in
    the order trades were made), not an offset: trades made while a client pages go on top
    and do not push the ones it has read into its next page."""
    ticker = q.get("ticker") or None
    lo = _int(q, "min_ts", 0, 0, 2**40) * 1000 if q.get("min_ts") else None
    hi = _int(q, "max_ts", 0, 0, 2**40) * 1000 if q.get("max_ts") else None
    limit = _int(q, "limit", 100, 1, 1000)
    model = sim.model
    below = _cursor(q)
    page: list[Any] = []
    cursor = ""
    number = model.trades_total
    for t in reversed(model.trades):
        number -= 1
        if below is not None and number >= below:
            continue
        if (
            (ticker is not None and t.ticker != ticker)
            or (lo is not None and t.ts_ms < lo)
            or (hi is not None and t.ts_ms > hi)
        ):
            continue
        if len(page) == limit:
            cursor = _encode_cursor(number + 1)  # more below: continue under the last one sent
            break
        page.append(t)
    out = []
    for t in page:
        d: dict[str, Any] = {
            "trade_id": t.trade_id,
            "ticker": t.ticker,
            "count_fp": size_str(t.count),
            "yes_price_dollars": price_str(t.yes_price),
            "no_price_dollars": price_str(ONE - t.yes_price),
            "taker_side": t.taker,
            "taker_outcome_side": t.taker,
            "taker_book_side": "bid" if t.taker == "yes" else "ask",
            "is_block_trade": False,
            "created_time": rfc3339(t.ts_ms),
        }
        out.append(d)
    return {"trades": out, "cursor": cursor}


PERIODS = {1, 60, 1440}


def _candles(sim: Simulator, tickers: list[str], q: Mapping[str, str]) -> list[dict[str, Any]]:
    start = _int(q, "start_ts", -1, 0, 2**40)
    end = _int(q, "end_ts", -1, 0, 2**40)
    period = _int(q, "period_interval", -1, 1, 1440)
    if start < 0 or end < 0 or period < 0:
        raise HttpError(400, "invalid_parameters", "start_ts, end_ts and period_interval required")
    if period not in PERIODS:
        raise HttpError(400, "invalid_parameters", "period_interval must be 1, 60 or 1440")
    if end < start:
        raise HttpError(400, "invalid_parameters", "end_ts must not be before start_ts")
    if (end - start) // (60 * period) > 5000 * max(1, len(tickers)):
        raise HttpError(400, "invalid_parameters", "too many candlesticks requested")
    trades = list(sim.model.trades)
    out = []
    for t in tickers:
        oi = sim.model.states[t].ticker_fields()[6]
        sticks = candlesticks(sim.past(t), trades, start * 1000, end * 1000, period, oi)
        out.append({"market_ticker": t, "candlesticks": sticks})
    return out


def _events(sim: Simulator, q: Mapping[str, str]) -> dict[str, Any]:
    items = list(sim.catalog.events.values())
    nested = q.get("with_nested_markets", "").lower() == "true"
    if q.get("series_ticker"):
        items = [e for e in items if e.series_ticker == q["series_ticker"]]
    if q.get("status"):
        if q["status"] not in EVENT_STATUS:
            raise HttpError(400, "invalid_parameters", f"invalid status filter {q['status']!r}")
        items = [e for e in items if _event_status(sim, e) == q["status"]]
    if q.get("tickers"):
        wanted = set(q["tickers"].split(","))
        items = [e for e in items if e.event_ticker in wanted]
    page, cursor = _paginate(items, q, 200, 1, 200)
    return {
        "events": [event_json(sim, e, nested) for e in page],
        "milestones": [],
        "cursor": cursor,
    }


def _control(sim: Simulator, body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        raise HttpError(400, "invalid_body", "body must be JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("action"), str):
        raise HttpError(400, "invalid_body", 'expected {"action": ...}')
    try:
        result = sim.control(obj)
    except (KeyError, ValueError, TypeError) as exc:
        raise HttpError(400, "invalid_action", str(exc)) from None
    return {"ok": True, "result": result}


def handle(
    sim: Simulator, method: str, path: str, query: Mapping[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    """Route one HTTP request; returns ``(status, body)``."""
    try:
        return 200, _route(sim, method, unquote(path), query, body)
    except HttpError as exc:
        return exc.status, exc.body


def _route(
    sim: Simulator, method: str, path: str, q: Mapping[str, str], body: bytes
) -> dict[str, Any]:
    cat = sim.catalog
    if path == "/_sim/control":
        if method != "POST":
            raise HttpError(405, "method_not_allowed", "POST only")
        return _control(sim, body)
    if method != "GET":
        raise HttpError(405, "method_not_allowed", "GET only")
    if path.startswith("/_sim/"):
        rest = path[len("/_sim/") :]
        if rest == "markets":
            return {"markets": list(cat.markets), "stats": sim.stats()}
        if rest.startswith("book/"):
            ticker = rest[len("book/") :]
            if ticker not in cat.markets:
                raise HttpError(404, "not_found", f"unknown market {ticker}")
            lv = sim.book_levels(ticker)
            return {side: [[str(p), str(s)] for p, s in lv[side]] for side in ("yes", "no")}
        if rest == "stats":
            return sim.stats()
        if rest == "sends":
            since = _int(q, "since", 0, 0, 2**53)
            return {"sends": [[stamp, at] for stamp, at in sim.send_log if stamp >= since]}
        raise HttpError(404, "not_found", path)
    if not path.startswith(API + "/"):
        raise HttpError(404, "not_found", path)
    parts = path[len(API) + 1 :].strip("/").split("/")
    if parts == ["exchange", "status"]:
        return {
            "exchange_active": True,
            "trading_active": not sim.paused,
            "exchange_estimated_resume_time": None,
        }
    if parts[0] == "markets":
        if len(parts) == 1:
            return _markets(sim, q)
        if parts[1:] == ["trades"]:
            return _trades(sim, q)
        if parts[1:] == ["candlesticks"]:
            tickers = [t for t in q.get("market_tickers", "").split(",") if t]
            if not 1 <= len(tickers) <= 100:
                raise HttpError(400, "invalid_parameters", "market_tickers: 1 to 100 markets")
            unknown = [t for t in tickers if t not in cat.markets]
            if unknown:
                raise HttpError(404, "not_found", f"market {unknown[0]} not found")
            return {"markets": _candles(sim, tickers, q)}
        if parts[1:] == ["orderbooks"]:
            tickers = [t for t in q.get("tickers", "").split(",") if t]
            if not 1 <= len(tickers) <= 100:
                raise HttpError(400, "invalid_parameters", "tickers: 1 to 100 market tickers")
            unknown = [t for t in tickers if t not in cat.markets]
            if unknown:
                raise HttpError(404, "not_found", f"market {unknown[0]} not found")
            return {"orderbooks": [{"ticker": t, **_orderbook(sim, t, {})} for t in tickers]}
        m = cat.markets.get(parts[1])
        if m is None:
            raise HttpError(404, "not_found", f"market {parts[1]} not found")
        if len(parts) == 2:
            return {"market": market_json(sim, m)}
        if parts[2:] == ["orderbook"]:
            return _orderbook(sim, m.ticker, q)
    if parts[0] == "events":
        if len(parts) == 1:
            return _events(sim, q)
        ev = cat.events.get(parts[1])
        if ev is None or len(parts) > 2:
            raise HttpError(404, "not_found", f"event {parts[1]} not found")
        nested = q.get("with_nested_markets", "").lower() == "true"
        d: dict[str, Any] = {"event": event_json(sim, ev, nested)}
        if not nested:
            d["markets"] = [market_json(sim, cat.markets[t]) for t in ev.markets]
        return d
    if parts[0] == "series" and len(parts) == 5 and parts[2] == "markets":
        m = cat.markets.get(parts[3])
        if m is None or m.series_ticker != parts[1] or parts[4] != "candlesticks":
            raise HttpError(404, "not_found", path)
        return {"ticker": m.ticker, "candlesticks": _candles(sim, [m.ticker], q)[0]["candlesticks"]}
    if parts[0] == "series":
        if len(parts) == 1:
            items = list(cat.series.values())
            if q.get("category"):
                items = [s for s in items if s.category == q["category"]]
            return {"series": [series_json(s) for s in items]}
        s = cat.series.get(parts[1])
        if s is None or len(parts) > 2:
            raise HttpError(404, "not_found", f"series {parts[1]} not found")
        return {"series": series_json(s)}
    raise HttpError(404, "not_found", path)
