"""Sans-I/O coalescing of feed events into ``marketData:applyUpdates`` batches.

On the sans-I/O convention of every protocol core here: events go in as they arrive (one
method per kind: :meth:`Coalescer.book`, :meth:`~Coalescer.price`, :meth:`~Coalescer.trade`,
...), then the driver drains :meth:`Coalescer.batches_to_send`, whose batch carries the latest
state of every market that changed since the previous batch. A market whose book moved 1,000
times in a flush window is one entry; trades are events, so each one is kept (bounded). Books
are rendered at drain time from the live :class:`BookLike`, so the batch always carries the
newest state and nothing is copied per tick.

No sockets, no clocks: the driver passes timestamps and decides when to drain.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from typing import Any, Protocol

from marketpulse.marketdata.limits import BOOK_LEVELS
from marketpulse.marketdata.packed_levels import level_count, pack_decimal_levels

__all__ = ["BookLike", "Coalescer", "PendingBatch"]

_MAX_PENDING_TRADES = 20_000
MAX_ENTRIES_PER_BATCH = 32
"""Books, prices, trades and statuses in one batch, at most (see ``Coalescer``). At 10,000 msg/s
nearly every batch is full; 32 made shorter commit groups than 48 and a ~10 % lower p50 there,
with the same 1,000 msg/s figures (bench/results/HISTORY.md, session 30)."""
_MAX_BOOK_LEVELS_PER_BATCH = 20_000
_FORGOTTEN_KEPT = 10_000
"""Removed markets remembered for ``requeue``: only a batch in flight when its market was
removed needs the entry, and the writer keeps a few batches in flight, not thousands."""
# One batch is one mutation, which the store runs within its time limit (1 s by default) on a
# loop it shares with every subscriber: checking and writing a book costs it per level, so a
# backlog of deep books (up to 400 levels each) is spread over several batches rather than
# sent at once.


class BookLike(Protocol):
    """What the coalescer needs of an order book (``marketpulse.kalshi.OrderBook`` fits)."""

    @property
    def valid(self) -> bool: ...

    def bids(self, depth: int | None = ...) -> list[tuple[Decimal, Decimal]]: ...

    def asks(self, depth: int | None = ...) -> list[tuple[Decimal, Decimal]]: ...


@dataclass
class PendingBatch:
    """One batch ready to send, and what it covers (for metrics and latency)."""

    args: dict[str, Any]
    events: int
    first_event_at: float
    books: int
    prices: int
    trades: int
    markets: int
    seq: int = 0
    """Its place in the order batches were taken (1, 2, ...)."""


@dataclass
class _Rendered:
    """A book as a batch that was not written carried it (put back by ``requeue``)."""

    bids: bytes
    asks: bytes


class Coalescer:
    """Latest state per market since the last batch.

    Driver's duties: feed every event to its input method (each returns None); when ready to
    write, call :meth:`batches_to_send` and write what it returns, in order (several batches may
    be in flight if the store applies them in the order sent); then, while ``len(coalescer)`` is
    non-zero, call it again (a large backlog comes out one bounded batch per call, rendered just
    before it is written). A batch that may not have been written goes back with
    :meth:`requeue`, never re-sent as it was; several go back newest first.

    A batch carries at most ``max_entries`` entries: the pending trades first, oldest first, then
    books, prices and statuses in fair shares of what is left (so a state goes out only with
    every trade before it). The store runs a batch as one mutation on the event loop it shares
    with every subscriber, and a mutation is one callback that nothing can slice: at ~60 us of
    the store's CPU per entry, 32 entries keep it within ~2 ms, where an unbounded catch-up after
    a stall (every market of the feed at once) held the loop 12-18 ms. A backlog goes out as
    several batches in flight instead.

    Args:
        book_levels: Levels per side to write for each book.
        max_entries: Entries per batch, at most.
    """

    def __init__(
        self, book_levels: int = BOOK_LEVELS, max_entries: int = MAX_ENTRIES_PER_BATCH
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self._book_levels = book_levels
        self._max_entries = max_entries
        # ticker -> live book (rendered at take time), a book as an unwritten batch rendered it
        # (requeue), or None (= write an invalid mark)
        self._books: dict[str, tuple[BookLike | _Rendered | None, float]] = {}
        self._prices: dict[str, dict[str, Any]] = {}
        self._markets: dict[str, str] = {}
        self._settlements: dict[str, dict[str, Any]] = {}
        self._trades: deque[dict[str, Any]] = deque()
        # Last ts written per ticker (books, prices). The store skips an update older than the
        # stored one, and invalid marks carry our clock while books carry the exchange's: keeping
        # every ticker's ts non-decreasing in write order means no mark or book is ever skipped
        # because of clock skew between us and the exchange.
        self._book_ts: dict[str, float] = {}
        self._price_ts: dict[str, float] = {}
        self._events = 0
        self._first_at = 0.0
        self._taken = 0  # batches taken so far
        # ticker -> batches taken when it was last forgotten: requeue skips its state in them
        self._forgotten: dict[str, int] = {}
        self.dropped_trades = 0

    def __len__(self) -> int:
        """Number of entries waiting (markets with a change, plus trades)."""
        return len(self._books) + len(self._prices) + len(self._markets) + len(self._trades)

    def _touch(self, now: float) -> None:
        if self._events == 0:
            self._first_at = now
        self._events += 1

    def book(self, ticker: str, book: BookLike, ts_ms: float, now: float) -> None:
        """The book of ``ticker`` changed (snapshot or delta); ``book`` is the live object."""
        self._touch(now)
        self._books[ticker] = (book, ts_ms)

    def book_invalid(self, ticker: str, ts_ms: float, now: float) -> None:
        """The book of ``ticker`` must not be served until a fresh snapshot arrives."""
        self._touch(now)
        self._books[ticker] = (None, ts_ms)

    def price(self, ticker: str, fields: dict[str, Any], ts_ms: float, now: float) -> None:
        """Ticker-channel update; fields given as ``None`` keep the earlier pending value."""
        self._touch(now)
        entry = self._prices.get(ticker)
        if entry is None:
            entry = self._prices[ticker] = {"ticker": ticker}
        for key, value in fields.items():
            if value is not None:
                entry[key] = value
        entry["ts"] = ts_ms

    def trade(self, trade: dict[str, Any], now: float) -> None:
        """A trade (kept individually; the oldest are dropped past a bound)."""
        self._touch(now)
        if len(self._trades) >= _MAX_PENDING_TRADES:
            self._trades.popleft()
            self.dropped_trades += 1
        self._trades.append(trade)

    def market_status(
        self, ticker: str, status: str, now: float, settlement: dict[str, Any] | None = None
    ) -> None:
        """A market's lifecycle status changed (with its result and settlement, once known)."""
        self._touch(now)
        self._markets[ticker] = status
        if settlement:
            self._settlements.setdefault(ticker, {}).update(settlement)

    def forget(self, tickers: set[str]) -> None:
        """Drop pending updates of markets no longer streamed (their invalid marks stay).

        Batches already taken forget them too, should they come back through :meth:`requeue`.
        """
        for t in tickers:
            self._forgotten.pop(t, None)  # re-inserted: the oldest stay first, for the trim
            self._forgotten[t] = self._taken
            entry = self._books.get(t)
            if entry is not None and entry[0] is not None:
                del self._books[t]
            self._prices.pop(t, None)
        self._trades = deque(tr for tr in self._trades if tr.get("ticker") not in tickers)
        while len(self._forgotten) > _FORGOTTEN_KEPT:
            del self._forgotten[next(iter(self._forgotten))]  # the longest forgotten

    def requeue(self, batch: PendingBatch) -> None:
        """Put back a batch that may not have been written, beneath what is pending.

        Whatever is pending for a market is newer than the batch (it came later), so it wins:
        the batch's book, price fields, status and settlement fields fill only what is not
        pending, and its trades go before the pending ones. The next batches then carry the
        newest state, never the batch's older one over a newer (the writer puts back several
        unwritten batches newest first). Its ``ts`` stay as the batch wrote them. A market
        forgotten since the batch was taken gets back only its invalid mark, as :meth:`forget`
        leaves it.
        """
        body = batch.args["batch"]
        forgotten = self._forgotten

        def gone(ticker: str) -> bool:
            return forgotten.get(ticker, -1) >= batch.seq

        for entry in body.get("books", ()):
            ticker = entry["ticker"]
            if entry.get("valid") and gone(ticker):
                continue
            if ticker not in self._books:
                book = _Rendered(entry["bids"], entry["asks"]) if entry.get("valid") else None
                self._books[ticker] = (book, entry["ts"])
        for entry in body.get("prices", ()):
            ticker = entry["ticker"]
            if gone(ticker):
                continue
            self._prices[ticker] = {**entry, **self._prices.get(ticker, {})}
        for entry in body.get("markets", ()):
            ticker = entry["ticker"]
            self._markets.setdefault(ticker, entry["status"])
            settlement = {k: v for k, v in entry.items() if k not in ("ticker", "status")}
            if settlement:
                self._settlements[ticker] = {**settlement, **self._settlements.get(ticker, {})}
        trades = [t for t in body.get("trades", ()) if not gone(t.get("ticker", ""))]
        self._trades.extendleft(reversed(trades))
        while len(self._trades) > _MAX_PENDING_TRADES:
            self._trades.popleft()  # the oldest go first, as in trade()
            self.dropped_trades += 1
        if batch.events:
            self._first_at = (
                batch.first_event_at
                if self._events == 0
                else min(self._first_at, batch.first_event_at)
            )
            self._events += batch.events

    def batches_to_send(self) -> list[PendingBatch]:
        """The batches to write now, in order (empty when nothing changed).

        Everything pending goes out as one ``applyUpdates`` argument, unless there is more than
        one batch holds (``max_entries``, or deep books' levels): then the oldest trades, and
        after them the longest-pending states, go in this call's one batch (see the class) and
        the remainder stays pending for the next call. Books
        are rendered here, so a backlog is rendered a batch at a time, between the driver's
        writes, and whatever arrives meanwhile joins the next batch.
        """
        batch = self._next_batch()
        return [] if batch is None else [batch]

    def _next_batch(self) -> PendingBatch | None:
        if not len(self):
            return None
        self._taken += 1
        batch: dict[str, Any] = {}
        books: list[dict[str, Any]] = []
        levels = 0
        # Trades first, in order; the states fill what they leave. So a book, price or status
        # goes only in a batch that carries every trade before it: none shows ahead of them.
        trades = [self._trades.popleft() for _ in range(min(len(self._trades), self._max_entries))]
        n_books, n_prices, n_markets = fair_shares(
            self._max_entries - len(trades),
            (len(self._books), len(self._prices), len(self._markets)),
        )
        for ticker in list(islice(self._books, n_books)):
            if levels >= _MAX_BOOK_LEVELS_PER_BATCH:
                break
            live, ts_ms = self._books.pop(ticker)
            ts_ms = self._book_ts[ticker] = max(ts_ms, self._book_ts.get(ticker, ts_ms))
            if isinstance(live, _Rendered):
                levels += level_count(live.bids) + level_count(live.asks)
                books.append(
                    {
                        "ticker": ticker,
                        "bids": live.bids,
                        "asks": live.asks,
                        "ts": ts_ms,
                        "valid": True,
                    }
                )
            elif live is None or not live.valid:
                books.append({"ticker": ticker, "valid": False, "ts": ts_ms})
            else:
                # Packed (packed_levels), not as lists: as lists, each number cost this process
                # and the store a Convex-JSON walk; as bytes a side is one base64 string.
                bid_levels = live.bids(self._book_levels)
                ask_levels = live.asks(self._book_levels)
                levels += len(bid_levels) + len(ask_levels)
                bids, asks = pack_decimal_levels(bid_levels), pack_decimal_levels(ask_levels)
                books.append(
                    {"ticker": ticker, "bids": bids, "asks": asks, "ts": ts_ms, "valid": True}
                )
        prices = [self._prices.pop(t) for t in list(islice(self._prices, n_prices))]
        for entry in prices:
            t = entry["ticker"]
            entry["ts"] = self._price_ts[t] = max(entry["ts"], self._price_ts.get(t, entry["ts"]))
        markets = [
            {"ticker": t, "status": self._markets.pop(t), **self._settlements.pop(t, {})}
            for t in list(islice(self._markets, n_markets))
        ]
        if books:
            batch["books"] = books
        if prices:
            batch["prices"] = prices
        if trades:
            batch["trades"] = trades
        if markets:
            batch["markets"] = markets
        out = PendingBatch(
            args={"batch": batch},
            events=self._events,
            first_event_at=self._first_at,
            books=len(books),
            prices=len(prices),
            trades=len(trades),
            markets=len(markets),
            seq=self._taken,
        )
        self._events = 0 if not len(self) else 1
        return out


def fair_shares(total: int, wants: tuple[int, ...]) -> tuple[int, ...]:
    """Split ``total`` among ``wants``: equal shares, and what one leaves unused to the others.

    >>> fair_shares(40, (100, 3, 100))
    (19, 3, 18)
    """
    shares = [0] * len(wants)
    left = total
    open_ = [i for i, want in enumerate(wants) if want > 0]
    while left > 0 and open_:
        each, extra = divmod(left, len(open_))
        for rank, i in enumerate(list(open_)):
            give = min(each + (rank < extra), wants[i] - shares[i])
            shares[i] += give
            left -= give
            if shares[i] == wants[i]:
                open_.remove(i)
    return tuple(shares)
