"""The order-flow model: uncrossed books, trades that match the book, consistent tickers."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from marketpulse.simulator._book import Book
from marketpulse.simulator._catalog import build_catalog, price_bounds, snap
from marketpulse.simulator._model import Delta, Event, ExchangeModel, Ticker, Trade
from marketpulse.simulator._units import ONE

EPOCH = 1_795_000_000_000


def make(seed: int, markets: int = 12) -> ExchangeModel:
    rng = random.Random(seed)
    return ExchangeModel(build_catalog(rng, markets, EPOCH), rng)


def fingerprint(ev: Event) -> tuple[object, ...]:
    if isinstance(ev, Delta):
        return ("d", ev.ticker, ev.side, ev.price, ev.delta, ev.ts_ms)
    if isinstance(ev, Trade):
        return ("t", ev.ticker, ev.trade_id, ev.yes_price, ev.count, ev.taker, ev.ts_ms)
    assert isinstance(ev, Ticker)
    return ("k", ev.ticker, ev.price, ev.yes_bid, ev.yes_ask, ev.volume, ev.open_interest)


def check_book(model: ExchangeModel) -> None:
    for ticker, state in model.states.items():
        book = state.book
        assert not book.is_crossed(), ticker
        lo, hi = price_bounds(state.market.structure)
        for side in ("yes", "no"):
            for price, size in book.levels(side):
                assert size > 0
                assert lo <= price <= hi
                assert snap(state.market.structure, price) == price, (ticker, price)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.integers(1, 3000))
def test_books_never_cross(seed: int, steps: int) -> None:
    model = make(seed)
    out: list[Event] = []
    for i in range(steps):
        model.step(EPOCH + i, out)
        if i % 50 == 0:
            check_book(model)
    check_book(model)


def test_long_run_many_seeds_stays_uncrossed_and_bounded() -> None:
    for seed in range(8):
        model = make(seed, markets=30)
        for chunk in range(20):
            model.generate(5000, EPOCH + chunk)
            check_book(model)
        for state in model.states.values():
            assert len(state.book.yes) + len(state.book.no) < 80


def test_same_seed_same_stream_and_different_seed_differs() -> None:
    a, b, c = make(42), make(42), make(43)
    ea = [fingerprint(e) for e in a.generate(20_000, EPOCH)]
    eb = [fingerprint(e) for e in b.generate(20_000, EPOCH)]
    ec = [fingerprint(e) for e in c.generate(20_000, EPOCH)]
    assert ea == eb
    assert ea != ec
    assert list(a.catalog.markets) == list(b.catalog.markets)


def test_trades_match_the_book_and_tickers_follow_it() -> None:
    model = make(5)
    ref = {t: s.book.copy() for t, s in model.states.items()}
    volume = {t: s.volume for t, s in model.states.items()}
    last = {t: s.last_price for t, s in model.states.items()}
    events = model.generate(50_000, EPOCH)
    kinds = {type(e) for e in events}
    assert kinds == {Delta, Trade, Ticker}
    n_trades = 0
    for i, ev in enumerate(events):
        book: Book = ref[ev.ticker]
        if isinstance(ev, Delta):
            nxt = events[i + 1] if i + 1 < len(events) else None
            if isinstance(nxt, Trade) and nxt.ticker == ev.ticker:
                # A fill: the maker level is the best bid of its side and covers the fill.
                best = book.best(ev.side)
                assert best is not None and best[0] == ev.price
                assert -ev.delta == nxt.count <= best[1]
                maker_yes_price = ev.price if ev.side == "yes" else ONE - ev.price
                assert nxt.yes_price == maker_yes_price
                assert nxt.taker == ("no" if ev.side == "yes" else "yes")
            book.change(ev.side, ev.price, ev.delta)
            assert not book.is_crossed()
        elif isinstance(ev, Trade):
            n_trades += 1
            prev = events[i - 1]
            assert isinstance(prev, Delta) and prev.delta == -ev.count
            last[ev.ticker] = ev.yes_price
            volume[ev.ticker] += ev.count
        else:
            assert isinstance(ev, Ticker)
            by, bn = book.best("yes"), book.best("no")
            assert ev.yes_bid == (by[0] if by else 0)
            assert ev.yes_bid_size == (by[1] if by else 0)
            assert ev.yes_ask == (ONE - bn[0] if bn else ONE)
            assert ev.yes_ask_size == (bn[1] if bn else 0)
            assert ev.price == last[ev.ticker]
            assert ev.volume == volume[ev.ticker]
    assert n_trades > 100
    for t, s in model.states.items():
        assert ref[t].levels("yes") == s.book.levels("yes")
        assert ref[t].levels("no") == s.book.levels("no")


def test_catalog_looks_like_kalshi() -> None:
    cat = build_catalog(random.Random(1), 40, EPOCH, n_closed=4)
    active = [m for m in cat.markets.values() if m.status == "active"]
    assert len(active) == 40
    assert sum(m.status == "finalized" for m in cat.markets.values()) == 4
    btc = [m for m in active if m.series_ticker == "KXBTCD"]
    assert btc and all(m.ticker.startswith(m.event_ticker + "-T") for m in btc)
    assert btc[0].ticker.endswith(".99")
    for m in active:
        assert m.close_ms > EPOCH
        assert m.event_ticker in cat.events and m.ticker in cat.events[m.event_ticker].markets
        assert 0 < m.previous_price < ONE
    # strike ladders: a higher strike is never more likely
    ladder = [m for m in btc if m.event_ticker == btc[0].event_ticker]
    prices = [m.initial_price for m in ladder]
    assert prices == sorted(prices, reverse=True)


def test_stream_does_not_depend_on_how_generation_is_chunked() -> None:
    # The server asks for a different number of messages each tick (wall-clock paced); the
    # stream must still be the same for a seed, up to timestamps.
    def strip(ev: Event) -> tuple[object, ...]:
        fp = fingerprint(ev)
        return fp[:-1] if fp[0] in ("d", "t") else fp

    whole = [strip(e) for e in make(8).generate(30_000, EPOCH)]
    model = make(8)
    chunked: list[tuple[object, ...]] = []
    rnd = random.Random(1)
    while len(chunked) < len(whole):
        chunked += [strip(e) for e in model.generate(rnd.randint(1, 400), EPOCH + len(chunked))]
    assert chunked[: len(whole)] == whole
