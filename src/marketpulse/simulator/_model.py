"""The exchange model: books, a plausible order flow, and the events it produces.

Pure and deterministic: all randomness comes from one ``random.Random`` and all time from the
``now_ms`` the caller passes in, so a seed and a sequence of clock readings give the same events.

Order flow, per step, in a market chosen by a skewed weight (a few hot markets, a long tail):
limit orders that rest on the YES or NO side (a crossing one trades first, and only its
remainder rests), cancels, and market orders that walk the opposite side. Every change becomes an
:class:`Delta`; every fill a :class:`Trade` at the maker's price (the book stays uncrossed by
construction); and whenever a ticker field changes, a :class:`Ticker` with the last trade price,
the top of book from the book itself, volume and open interest.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from marketpulse.simulator._book import Book
from marketpulse.simulator._catalog import Catalog, Market, price_bounds, snap, step_at
from marketpulse.simulator._units import ONE, price_str


class Event:
    """Base of everything the model emits; ``enc`` caches the encoded ``msg`` per variant."""

    __slots__ = ("enc", "ticker", "ts_ms")
    channel = ""

    def __init__(self, ticker: str, ts_ms: int) -> None:
        self.ticker = ticker
        self.ts_ms = ts_ms
        self.enc: dict[int, bytes] | None = None


class Delta(Event):
    """A signed change of resting size at one price on one side (native NO prices)."""

    __slots__ = ("delta", "price", "side")
    channel = "orderbook_delta"

    def __init__(self, ticker: str, ts_ms: int, side: str, price: int, delta: int) -> None:
        super().__init__(ticker, ts_ms)
        self.side = side
        self.price = price
        self.delta = delta


class Trade(Event):
    """One fill; ``yes_price`` is what the YES holder paid, ``taker`` the taker's outcome side."""

    __slots__ = ("count", "taker", "trade_id", "yes_price")
    channel = "trade"

    def __init__(
        self, ticker: str, ts_ms: int, trade_id: str, yes_price: int, count: int, taker: str
    ) -> None:
        super().__init__(ticker, ts_ms)
        self.trade_id = trade_id
        self.yes_price = yes_price
        self.count = count
        self.taker = taker


class Ticker(Event):
    """The market's ticker fields after a change."""

    __slots__ = (
        "last_trade_size",
        "open_interest",
        "price",
        "volume",
        "yes_ask",
        "yes_ask_size",
        "yes_bid",
        "yes_bid_size",
    )
    channel = "ticker"

    def __init__(
        self, ticker: str, ts_ms: int, fields: tuple[int, ...], last_trade_size: int
    ) -> None:
        super().__init__(ticker, ts_ms)
        (
            self.price,
            self.yes_bid,
            self.yes_ask,
            self.yes_bid_size,
            self.yes_ask_size,
            self.volume,
            self.open_interest,
        ) = fields
        self.last_trade_size = last_trade_size


class Lifecycle(Event):
    """A ``market_lifecycle_v2`` event (status changes)."""

    __slots__ = ("event_type", "fields")
    channel = "market_lifecycle_v2"

    def __init__(self, ticker: str, ts_ms: int, event_type: str, fields: dict[str, object]) -> None:
        super().__init__(ticker, ts_ms)
        self.event_type = event_type
        self.fields = fields


@dataclass(slots=True)
class MarketState:
    """Live state of one market."""

    market: Market
    book: Book
    fair: int
    last_price: int
    volume: int
    open_interest: int
    last_trade_size: int = 0
    last_ticker: tuple[int, ...] = ()

    def ticker_fields(self) -> tuple[int, ...]:
        """(price, yes_bid, yes_ask, yes_bid_size, yes_ask_size, volume, open_interest)."""
        by = self.book.best("yes")
        bn = self.book.best("no")
        return (
            self.last_price,
            by[0] if by else 0,
            ONE - bn[0] if bn else ONE,
            by[1] if by else 0,
            bn[1] if bn else 0,
            self.volume,
            self.open_interest,
        )


_SIZES = (100, 200, 500, 1000, 1000, 2000, 2500, 5000, 10000, 25000, 50000)

TRADABLE = frozenset({"active"})


class ExchangeModel:
    """Books and order flow for every market of a catalog."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random,
        trade_history: int = 5000,
        empty_books: bool = False,
        trade_id_salt: int = 0,
    ) -> None:
        """Seed every active market's book around its starting price.

        Args:
            catalog: The markets.
            rng: The only source of randomness (seeded by the caller).
            trade_history: How many recent trades to keep for ``GET /markets/trades``.
            empty_books: Start with empty books (replay fills them from the recording).
            trade_id_salt: Mixed into every trade id (128 bits), so two runs of one seed
                that are not the same run (another ``--epoch-ms``: the server's start time by
                default) never make the same trade id, as the exchange never does: a store
                that outlives a simulator restart skips a trade id it already holds.
        """
        self.catalog = catalog
        self.rng = rng
        self._trade_id_salt = trade_id_salt
        self.empty_books = empty_books
        self.states: dict[str, MarketState] = {}
        self.trades: deque[Trade] = deque(maxlen=trade_history)
        self.trades_total = 0
        """Trades ever made: ``trades[i]`` is trade number ``trades_total - len(trades) + i``
        (what a ``GET /markets/trades`` cursor points at)."""
        for m in catalog.markets.values():
            self.states[m.ticker] = self._seed(m)
        self._reweight()

    def _reweight(self) -> None:
        active = [t for t, s in self.states.items() if s.market.status in TRADABLE]
        weights = [1.0 / (1 + i) ** 0.8 for i in range(len(active))]
        self.rng.shuffle(weights)
        self._active = active
        self._cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            self._cum.append(total)
        self._total = total

    def _seed(self, m: Market) -> MarketState:
        rng = self.rng
        lo, hi = price_bounds(m.structure)
        fair = min(max(m.initial_price, lo * 3), hi - lo * 2)
        volume = 100 * rng.randint(500, 200_000)
        st = MarketState(m, Book(), fair, m.initial_price, volume, volume // rng.randint(3, 12))
        if m.status not in TRADABLE or self.empty_books:
            return st
        for side, top in (("yes", fair), ("no", ONE - fair)):
            p = snap(m.structure, top - step_at(m.structure, top) * rng.randint(1, 2))
            for _ in range(rng.randint(4, 12)):
                if p < lo or p > hi:
                    break
                st.book.change(side, p, rng.choice(_SIZES))
                p = snap(m.structure, p - step_at(m.structure, p) * rng.randint(1, 3))
        st.last_ticker = st.ticker_fields()
        return st

    # ----------------------------------------------------------------------------- queries

    def book(self, ticker: str) -> Book:
        """The live book of a market (KeyError if unknown)."""
        return self.states[ticker].book

    # -------------------------------------------------------------------------- order flow

    def generate(self, n_messages: int, now_ms: int) -> list[Event]:
        """Run order-flow steps until at least ``n_messages`` events exist."""
        out: list[Event] = []
        if not self._active:
            return out
        while len(out) < n_messages:
            self.step(now_ms, out)
        return out

    def step(self, now_ms: int, out: list[Event]) -> None:
        """One order-flow action in one market; appends its events to ``out``."""
        rng = self.rng
        i = bisect.bisect_right(self._cum, rng.random() * self._total)
        st = self.states[self._active[min(i, len(self._active) - 1)]]
        book = st.book
        r = rng.random()
        side = "yes" if rng.random() < 0.5 else "no"
        n_side = len(book.yes if side == "yes" else book.no)
        if (r < 0.30 and n_side > 3) or n_side > 25:
            self._cancel(st, side, now_ms, out)
        elif r < 0.42 and (book.no if side == "yes" else book.yes):
            self._market_order(st, side, now_ms, out)
        else:
            self._limit(st, side, now_ms, out)
        if rng.random() < 0.04:
            self._drift(st)
        fields = st.ticker_fields()
        if fields != st.last_ticker:
            st.last_ticker = fields
            out.append(Ticker(st.market.ticker, now_ms, fields, st.last_trade_size))

    def _drift(self, st: MarketState) -> None:
        m = st.market
        lo, hi = price_bounds(m.structure)
        move = step_at(m.structure, st.fair) * (1 if self.rng.random() < 0.5 else -1)
        st.fair = min(max(snap(m.structure, st.fair + move), lo * 3), hi - lo * 2)

    def _size(self) -> int:
        rng = self.rng
        size = rng.choice(_SIZES)
        if rng.random() < 0.1:  # fractional contracts exist since Apr 2026
            size = max(1, size // 10 + rng.randint(1, 99))
        return size

    def _limit(self, st: MarketState, side: str, now_ms: int, out: list[Event]) -> None:
        rng = self.rng
        m = st.market
        lo, hi = price_bounds(m.structure)
        top = st.fair if side == "yes" else ONE - st.fair
        step = step_at(m.structure, top)
        # Now and then an aggressive order one tick through the fair price: it may cross and trade.
        aggressive = rng.random() < 0.08
        price = top + step if aggressive else top - step * (1 + int(rng.expovariate(0.35)))
        price = min(max(snap(m.structure, price), lo), hi)
        size = self._size()
        size = self._take(st, side, price, size, now_ms, out)
        if size > 0:
            st.book.change(side, price, size)
            out.append(Delta(m.ticker, now_ms, side, price, size))

    def _market_order(self, st: MarketState, side: str, now_ms: int, out: list[Event]) -> None:
        # A market order is a marketable limit at the worst price it accepts: up to 3 levels deep.
        opp = st.book.no if side == "yes" else st.book.yes
        if not opp:
            return
        keys = opp.keys()
        worst = keys[max(0, len(keys) - 3)]
        self._take(st, side, ONE - worst, self._size(), now_ms, out)

    def _take(
        self, st: MarketState, side: str, limit: int, size: int, now_ms: int, out: list[Event]
    ) -> int:
        """Fill a ``side`` buy at up to ``limit`` against the opposite bids; returns the rest."""
        opp_side = "no" if side == "yes" else "yes"
        opp = st.book.no if side == "yes" else st.book.yes
        ticker = st.market.ticker
        while size > 0 and opp:
            q, qsize = opp.peekitem(-1)
            if limit + q < ONE:
                break
            fill = min(size, qsize)
            size -= fill
            st.book.change(opp_side, q, -fill)
            out.append(Delta(ticker, now_ms, opp_side, q, -fill))
            yes_price = ONE - q if side == "yes" else q
            trade = Trade(
                ticker,
                now_ms,
                str(uuid.UUID(int=self.rng.getrandbits(128) ^ self._trade_id_salt, version=4)),
                yes_price,
                fill,
                side,
            )
            out.append(trade)
            self.record_trade(trade)
            if self.rng.random() < 0.55:
                st.open_interest += fill
            else:
                st.open_interest = max(0, st.open_interest - fill)
        return size

    def _cancel(self, st: MarketState, side: str, now_ms: int, out: list[Event]) -> None:
        rng = self.rng
        levels = st.book.yes if side == "yes" else st.book.no
        if not levels:
            return
        # Far levels get cancelled more often than the top, so books keep a shape.
        idx = int(len(levels) * (1 - rng.random() ** 2))
        price, size = levels.peekitem(min(idx, len(levels) - 1) - len(levels))
        if rng.random() < 0.5 or size <= 100:
            amount = size
        else:
            amount = min(size, 100 * rng.randint(1, max(1, size // 100)))
        st.book.change(side, price, -amount)
        out.append(Delta(st.market.ticker, now_ms, side, price, -amount))

    # ---------------------------------------------------------------- external manipulation

    def set_book(
        self,
        ticker: str,
        yes: Iterable[tuple[int, int]],
        no: Iterable[tuple[int, int]],
        now_ms: int,
    ) -> list[Event]:
        """Make a market's book equal to the given levels; returns the deltas that do it.

        Replay uses this for a recorded snapshot, so subscribers see the reset as ordinary deltas.
        """
        st = self.states[ticker]
        out: list[Event] = []
        for side, target in (("yes", dict(yes)), ("no", dict(no))):
            levels = st.book.side(side)
            for price in list(levels.keys()):
                if price not in target:
                    size = levels[price]
                    st.book.change(side, price, -size)
                    out.append(Delta(ticker, now_ms, side, price, -size))
            for price, size in sorted(target.items()):
                cur = levels.get(price, 0)
                if size != cur and size >= 0:
                    st.book.change(side, price, size - cur)
                    out.append(Delta(ticker, now_ms, side, price, size - cur))
        return out

    def apply_delta(
        self, ticker: str, side: str, price: int, delta: int, now_ms: int
    ) -> list[Event]:
        """Apply one external delta, clamped so a level never goes negative."""
        st = self.states[ticker]
        cur = st.book.side(side).get(price, 0)
        delta = max(delta, -cur)
        if delta == 0:
            return []
        st.book.change(side, price, delta)
        return [Delta(ticker, now_ms, side, price, delta)]

    def record_trade(self, trade: Trade) -> None:
        """Account a trade (a fill here, or a replayed one) in last price, volume and history."""
        st = self.states[trade.ticker]
        st.last_price = trade.yes_price
        st.last_trade_size = trade.count
        st.volume += trade.count
        self.trades.append(trade)
        self.trades_total += 1

    def ticker_if_changed(self, ticker: str, now_ms: int) -> Ticker | None:
        """A ticker event if this market's ticker fields changed since the last one."""
        st = self.states[ticker]
        fields = st.ticker_fields()
        if fields == st.last_ticker:
            return None
        st.last_ticker = fields
        return Ticker(ticker, now_ms, fields, st.last_trade_size)

    def set_status(self, ticker: str, status: str, now_ms: int) -> list[Event]:
        """Change a market's status (``active``, ``inactive``, ``closed``, ``determined``, ...)."""
        st = self.states[ticker]
        old = st.market.status
        if old == status:
            return []
        st.market.status = status
        st.market.updated_ms = now_ms
        self._reweight()
        if status == "inactive":
            return [Lifecycle(ticker, now_ms, "deactivated", {"is_deactivated": True})]
        if status == "active":
            if old == "inactive":
                return [Lifecycle(ticker, now_ms, "deactivated", {"is_deactivated": False})]
            return [Lifecycle(ticker, now_ms, "activated", {})]
        if status == "closed":
            return [Lifecycle(ticker, now_ms, "close_date_updated", {"close_ts": now_ms // 1000})]
        events: list[Event] = []
        if status in ("determined", "settled", "finalized") and st.market.settlement_value is None:
            st.market.result = "yes" if st.fair >= ONE // 2 else "no"
            st.market.settlement_value = ONE if st.market.result == "yes" else 0
            events.append(
                Lifecycle(
                    ticker,
                    now_ms,
                    "determined",
                    {
                        "determination_ts": now_ms // 1000,
                        "result": st.market.result,
                        "settlement_value": price_str(st.market.settlement_value),
                    },
                )
            )
        if status in ("settled", "finalized"):
            st.market.status = "finalized"  # REST's word for a settled market
            st.market.settlement_ms = now_ms
            events.append(
                Lifecycle(
                    ticker,
                    now_ms,
                    "settled",
                    {
                        "settled_ts": now_ms // 1000,
                        "result": st.market.result,
                        "settlement_value": price_str(st.market.settlement_value or 0),
                    },
                )
            )
        return events
