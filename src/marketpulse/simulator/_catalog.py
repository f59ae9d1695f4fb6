"""A catalog of markets that look like Kalshi's: series -> events -> markets.

Strike ladders (``KXBTCD-26NOV2417-T94999.99``), temperature buckets (``KXHIGHNY-26NOV24-B52.5``),
rate decisions (``KXFED-26DEC-T3.75``) and game winners (``KXNBAGAME-26NOV24LALBOS-LAL``), with
titles, close times and starting prices that follow from an underlying value. Everything is drawn
from the caller's ``random.Random`` and a base time, so a seed gives the same catalog.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from marketpulse.simulator._units import ONE

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ET = timedelta(hours=-5)  # the catalog pretends New York is on EST all year; only looks matter

STRUCTURES: dict[str, list[tuple[int, int, int]]] = {
    # (start, end, step) in price units, as Market.price_ranges
    "linear_cent": [(0, ONE, 100)],
    "deci_cent": [(0, ONE, 10)],
    "tapered_deci_cent": [(0, 1000, 10), (1000, 9000, 100), (9000, ONE, 10)],
    # $0.0001 near 0 and 1 (Kalshi, 2026-08-13); the order flow never draws these two, a
    # replayed recording's prices may need them (replay.catalog_from_recording).
    "center_deci_edge_centi_cent": [(0, 100, 1), (100, 9900, 10), (9900, ONE, 1)],
    "centi_cent": [(0, ONE, 1)],  # $0.0001 everywhere (combo markets since 2026-08-17)
}


def step_at(structure: str, price: int) -> int:
    """Tick size at ``price`` for a price level structure (price units)."""
    if structure == "linear_cent":
        return 100
    if structure == "deci_cent":
        return 10
    if structure == "tapered_deci_cent":
        return 10 if price < 1000 or price >= 9000 else 100
    ranges = STRUCTURES[structure]
    for start, end, step in ranges:
        if start <= price < end:
            return step
    return ranges[-1][2]


def on_grid(structure: str, price: int) -> bool:
    """Whether a bid ``price`` (strictly between $0 and $1) is on the structure's grid."""
    return 0 < price < ONE and any(
        start <= price <= end and (price - start) % step == 0
        for start, end, step in STRUCTURES[structure]
    )


def snap(structure: str, price: int) -> int:
    """Round a price down onto the structure's grid."""
    return price - price % step_at(structure, price)


def price_bounds(structure: str) -> tuple[int, int]:
    """Lowest and highest valid bid price (exclusive of $0 and $1)."""
    lo = step_at(structure, 0)
    return lo, ONE - step_at(structure, ONE - 1)


@dataclass(slots=True)
class Series:
    """A Kalshi series (``GET /series``)."""

    ticker: str
    title: str
    category: str
    frequency: str
    tags: list[str]
    source_name: str
    source_url: str


@dataclass(slots=True)
class Event:
    """A Kalshi event (``GET /events``)."""

    event_ticker: str
    series_ticker: str
    title: str
    sub_title: str
    category: str
    mutually_exclusive: bool
    strike_date_ms: int
    markets: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Market:
    """Static description of one market plus its starting prices (price units)."""

    ticker: str
    event_ticker: str
    series_ticker: str
    market_id: str
    title: str
    subtitle: str
    yes_sub_title: str
    no_sub_title: str
    rules_primary: str
    strike_type: str
    floor_strike: float | None
    cap_strike: float | None
    structure: str
    created_ms: int
    open_ms: int
    close_ms: int
    expected_expiration_ms: int
    initial_price: int
    previous_price: int
    previous_yes_bid: int
    previous_yes_ask: int
    status: str = "active"
    result: str = ""
    updated_ms: int = 0  # last change of the market's record (0: its open time)
    settlement_value: int | None = None  # price units, once determined
    settlement_ms: int | None = None  # when it settled


@dataclass(slots=True)
class Catalog:
    """Every series, event and market the simulator lists."""

    series: dict[str, Series]
    events: dict[str, Event]
    markets: dict[str, Market]


def _et(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC) + _ET


def _date_code(dt: datetime, hour: bool) -> str:
    code = f"{dt.year % 100:02d}{MONTHS[dt.month - 1]}{dt.day:02d}"
    return f"{code}{dt.hour:02d}" if hour else code


def _nice_date(dt: datetime) -> str:
    return f"{_MONTH_NAMES[dt.month - 1]} {dt.day}, {dt.year}"


def _prob_above(spot: float, strike: float, sigma: float) -> float:
    return 0.5 * (1.0 - math.erf((strike - spot) / (sigma * math.sqrt(2.0))))


def _to_price(prob: float, structure: str) -> int:
    lo, hi = price_bounds(structure)
    return min(hi, max(lo, snap(structure, round(prob * ONE))))


_SERIES = [
    Series(
        "KXBTCD",
        "Bitcoin price above/below",
        "Crypto",
        "daily",
        ["BTC"],
        "CF Benchmarks",
        "https://www.cfbenchmarks.com/data/indices/BRTI",
    ),
    Series(
        "KXETHD",
        "Ethereum price above/below",
        "Crypto",
        "daily",
        ["ETH"],
        "CF Benchmarks",
        "https://www.cfbenchmarks.com/data/indices/ETHUSD_RTI",
    ),
    Series(
        "KXHIGHNY",
        "Highest temperature in NYC",
        "Climate and Weather",
        "daily",
        ["Weather"],
        "National Weather Service",
        "https://www.weather.gov/wrh/climate?wfo=okx",
    ),
    Series(
        "KXFED",
        "Fed funds rate",
        "Economics",
        "custom",
        ["Fed", "Interest rates"],
        "Federal Reserve",
        "https://www.federalreserve.gov/monetarypolicy/openmarket.htm",
    ),
    Series(
        "KXNBAGAME",
        "Professional basketball game",
        "Sports",
        "custom",
        ["Basketball"],
        "NBA",
        "https://www.nba.com/",
    ),
]

_TEAMS = [
    ("LAL", "Los Angeles L"),
    ("BOS", "Boston"),
    ("GSW", "Golden State"),
    ("NYK", "New York"),
    ("MIA", "Miami"),
    ("DEN", "Denver"),
    ("PHX", "Phoenix"),
    ("MIL", "Milwaukee"),
    ("DAL", "Dallas"),
    ("OKC", "Oklahoma City"),
    ("CHI", "Chicago"),
    ("PHI", "Philadelphia"),
]


@dataclass(slots=True)
class _Draft:
    """One market before ids and previous-day prices are drawn."""

    suffix: str
    yes_sub_title: str
    strike_type: str
    floor_strike: float | None
    cap_strike: float | None
    prob: float


def _crypto(
    name: str, spot0: float, step: float, k: int
) -> Callable[..., tuple[str, str, list[_Draft]]]:
    def make(rng: random.Random, close: datetime) -> tuple[str, str, list[_Draft]]:
        spot = spot0 * (1 + rng.uniform(-0.04, 0.04))
        sigma = spot * 0.015
        centre = round(spot / step) * step
        drafts = []
        for j in range(-(k // 2), k - k // 2):
            strike = centre + j * step
            floor = strike - 0.01
            drafts.append(
                _Draft(
                    f"T{floor:.2f}",
                    f"${strike:,.0f} or above",
                    "greater",
                    floor,
                    None,
                    _prob_above(spot, strike, sigma),
                )
            )
        hour = close.hour % 12 or 12
        title = f"{name} price on {_nice_date(close)} at {hour}{'pm' if close.hour >= 12 else 'am'} EST?"
        return title, f"At {hour}{'pm' if close.hour >= 12 else 'am'} EST", drafts

    return make


def _temperature(rng: random.Random, close: datetime) -> tuple[str, str, list[_Draft]]:
    mean = rng.uniform(38, 62)
    sigma = 2.5
    lo = math.floor(mean) - 5
    drafts = []
    for j in range(6):
        a = lo + 2 * j
        pa = _prob_above(mean, a - 0.5, sigma) - _prob_above(mean, a + 1.5, sigma)
        drafts.append(_Draft(f"B{a + 0.5:.1f}", f"{a}° to {a + 1}°", "between", a, a + 1, pa))
    return f"Highest temperature in NYC on {_nice_date(close)}?", f"On {_nice_date(close)}", drafts


def _fed(rng: random.Random, close: datetime) -> tuple[str, str, list[_Draft]]:
    rate = rng.choice([3.25, 3.5, 3.75, 4.0])
    drafts = []
    for j in range(-3, 3):
        strike = rate + 0.25 * j
        drafts.append(
            _Draft(
                f"T{strike:.2f}",
                f"Above {strike:.2f}%",
                "greater",
                strike,
                None,
                _prob_above(rate + 0.05, strike, 0.2),
            )
        )
    month = _MONTH_NAMES[close.month - 1]
    return (
        f"Fed funds rate after the {month} {close.year} meeting?",
        f"After {month} {close.year}",
        drafts,
    )


def _game(rng: random.Random, close: datetime) -> tuple[str, str, list[_Draft]]:
    (ha, hn), (aa, an) = rng.sample(_TEAMS, 2)
    p = rng.uniform(0.2, 0.8)
    drafts = [
        _Draft(aa, an, "custom", None, None, p),
        _Draft(ha, hn, "custom", None, None, 1 - p),
    ]
    return f"{an} at {hn} Winner?", f"{an} vs {hn} ({_nice_date(close)})", drafts


def _structure(rng: random.Random) -> str:
    r = rng.random()
    return "linear_cent" if r < 0.7 else ("tapered_deci_cent" if r < 0.9 else "deci_cent")


def build_catalog(rng: random.Random, n_markets: int, epoch_ms: int, n_closed: int = 0) -> Catalog:
    """Draw ``n_markets`` active markets (and ``n_closed`` settled ones from past events).

    Args:
        rng: The simulator's seeded generator.
        n_markets: How many tradable markets.
        epoch_ms: Base time; close times are laid out after it (settled ones before it).
        n_closed: Extra finalized markets, so status filters have something to filter.
    """
    series = {s.ticker: s for s in _SERIES}
    events: dict[str, Event] = {}
    markets: dict[str, Market] = {}
    makers: list[tuple[str, Callable[..., tuple[str, str, list[_Draft]]], bool]] = [
        ("KXBTCD", _crypto("Bitcoin", 95_000.0, 500.0, 8), True),
        ("KXETHD", _crypto("Ethereum", 3_600.0, 50.0, 8), True),
        ("KXHIGHNY", _temperature, False),
        ("KXFED", _fed, False),
        ("KXNBAGAME", _game, False),
    ]
    base = _et(epoch_ms)
    day = 1  # first events close tomorrow, so nothing starts already expired
    used: set[str] = set()
    for want, settled in ((n_markets, False), (n_closed, True)):
        made = 0
        i = 0
        while made < want:
            s_ticker, make, hourly = makers[i % len(makers)]
            i += 1
            offset = -(1 + i // len(makers)) if settled else day + i // len(makers)
            close = (base + timedelta(days=offset)).replace(
                hour=17 if hourly else 23, minute=0 if hourly else 59, second=0, microsecond=0
            )
            if s_ticker == "KXFED":
                close = (
                    base + timedelta(days=30 * (abs(offset) + 1) * (-1 if settled else 1))
                ).replace(hour=14, minute=0, second=0, microsecond=0)
            title, sub_title, drafts = make(rng, close)
            code = _date_code(close, hourly)
            if s_ticker == "KXFED":
                code = f"{close.year % 100:02d}{MONTHS[close.month - 1]}"
            if s_ticker == "KXNBAGAME":
                code += drafts[0].suffix + drafts[1].suffix
            ev_ticker = f"{s_ticker}-{code}"
            if ev_ticker in used:
                continue
            used.add(ev_ticker)
            close_ms = int((close - _ET).timestamp() * 1000)
            sr = series[s_ticker]
            ev = Event(
                ev_ticker,
                s_ticker,
                title,
                sub_title,
                sr.category,
                s_ticker in ("KXHIGHNY", "KXNBAGAME"),
                close_ms,
            )
            structure = _structure(rng)
            for d in drafts[: want - made]:
                ticker = f"{ev_ticker}-{d.suffix}"
                price = _to_price(d.prob, structure)
                prev = _to_price(min(0.99, max(0.01, d.prob + rng.uniform(-0.08, 0.08))), structure)
                spread = step_at(structure, prev) * rng.randint(1, 3)
                m = Market(
                    ticker=ticker,
                    event_ticker=ev_ticker,
                    series_ticker=s_ticker,
                    market_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    title=title,
                    subtitle=d.yes_sub_title,
                    yes_sub_title=d.yes_sub_title,
                    no_sub_title=d.yes_sub_title,
                    rules_primary=f"If the outcome is {d.yes_sub_title} for {title.rstrip('?')}, "
                    "then the market resolves to Yes.",
                    strike_type=d.strike_type,
                    floor_strike=d.floor_strike,
                    cap_strike=d.cap_strike,
                    structure=structure,
                    created_ms=close_ms - 3 * 86_400_000,
                    open_ms=close_ms - 3 * 86_400_000,
                    close_ms=close_ms,
                    expected_expiration_ms=close_ms + 300_000,
                    initial_price=price,
                    previous_price=prev,
                    previous_yes_bid=max(0, prev - spread),
                    previous_yes_ask=min(ONE, prev + spread),
                )
                if settled:
                    m.status = "finalized"
                    m.result = "yes" if rng.random() < d.prob else "no"
                    m.settlement_value = ONE if m.result == "yes" else 0
                    m.settlement_ms = m.updated_ms = close_ms + 3_600_000
                markets[ticker] = m
                ev.markets.append(ticker)
                made += 1
            events[ev_ticker] = ev
    return Catalog(series, events, markets)
