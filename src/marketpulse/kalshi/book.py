"""Exact Kalshi order books.

Kalshi's book holds bids only: YES bids and NO bids. A NO bid at price ``p`` is a YES ask at
``1 - p`` (docs/protocols/kalshi.md §5). The book stores both sides in Kalshi's *native* bid terms, keyed by
``Decimal`` price (``Decimal("0.45") == Decimal("0.4500")`` and they hash alike, so keys are
normalised for free) with ``Decimal`` sizes. With ``use_yes_price`` the exchange sends NO levels
already on the YES scale; :meth:`OrderBook.apply_snapshot` and :meth:`OrderBook.apply_delta` take
a ``yes_price`` flag and convert back, so :meth:`OrderBook.levels` is always native and compares
directly with the simulator's book.

Reads sort on demand: writes (deltas) vastly outnumber reads because readers are coalesced.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

__all__ = ["ONE", "BookError", "Level", "OrderBook", "PriceGrid", "price_problem"]

ONE = Decimal(1)
_ZERO = Decimal(0)
_TWO = Decimal(2)

Level = tuple[Decimal, Decimal]


class BookError(ValueError):
    """A message would put the book in an impossible state (e.g. a negative size)."""


class OrderBook:
    """One market's book: YES bids and NO bids, exact.

    Attributes:
        ticker: Market ticker.
        valid: False until a snapshot arrives, and again whenever a message may have been
            missed; an invalid book holds no levels and must not be served.
        invalid_reason: Why the book is invalid (``"awaiting snapshot"``, ``"seq gap"``, ...).
        ts_ms: Exchange timestamp of the last applied message, when it carried one.
    """

    __slots__ = (
        "_no",
        "_no_best",
        "_yes",
        "_yes_best",
        "invalid_reason",
        "ticker",
        "ts_ms",
        "valid",
    )

    def __init__(self, ticker: str) -> None:
        """Create an empty, invalid book (it becomes valid with its first snapshot)."""
        self.ticker = ticker
        self._yes: dict[Decimal, Decimal] = {}
        self._no: dict[Decimal, Decimal] = {}
        # Each side's best (highest) bid, or None when unknown (recomputed on demand): the
        # guard reads the other side's best on every new level, and max() over a side on every
        # delta cost a quarter of the delta path.
        self._yes_best: Decimal | None = None
        self._no_best: Decimal | None = None
        self.valid = False
        self.invalid_reason = "awaiting snapshot"
        self.ts_ms: int | None = None

    # -- writes -------------------------------------------------------------------------------

    def apply_snapshot(
        self,
        yes: Iterable[Level],
        no: Iterable[Level],
        *,
        yes_price: bool = False,
        ts_ms: int | None = None,
    ) -> None:
        """Replace the whole book and mark it valid.

        Args:
            yes: YES bid levels ``(price, size)``.
            no: NO levels: NO bid prices, or YES-scale prices when ``yes_price``.
            yes_price: The subscription used ``use_yes_price``.
            ts_ms: Exchange timestamp, if known.

        Raises:
            BookError: A level has a negative size; the book is left invalid.
        """
        new_yes: dict[Decimal, Decimal] = {}
        new_no: dict[Decimal, Decimal] = {}
        for price, size in yes:
            if size < 0:
                self.invalidate("negative size in snapshot")
                raise BookError(f"{self.ticker}: negative size {size} at yes {price}")
            if size:
                # A repeated price adds up: it is still a description of the same aggregate.
                new_yes[price] = new_yes.get(price, _ZERO) + size
        for price, size in no:
            if size < 0:
                self.invalidate("negative size in snapshot")
                raise BookError(f"{self.ticker}: negative size {size} at no {price}")
            if size:
                p = ONE - price if yes_price else price
                new_no[p] = new_no.get(p, _ZERO) + size
        self._yes = new_yes
        self._no = new_no
        self._yes_best = self._no_best = None
        self.valid = True
        self.invalid_reason = ""
        self.ts_ms = ts_ms

    def apply_delta(
        self,
        side: str,
        price: Decimal,
        delta: Decimal,
        *,
        yes_price: bool = False,
        ts_ms: int | None = None,
    ) -> bool:
        """Add a signed size change to one level; a level reaching zero disappears.

        Args:
            side: ``"yes"`` or ``"no"``.
            price: Level price (YES-scale for the NO side when ``yes_price``).
            delta: Signed change of the aggregate size at that price.
            yes_price: The subscription used ``use_yes_price``.
            ts_ms: Exchange timestamp, if known.

        Returns:
            Whether the delta opened a new price level: only a new level can bring a price off
            the grid or cross the book (a level that grows keeps its side's best price).

        Raises:
            BookError: Unknown side, or the size would go negative (the book is invalidated).
        """
        if side == "yes":
            yes = True
            levels = self._yes
            best = self._yes_best
        elif side == "no":
            yes = False
            levels = self._no
            best = self._no_best
            if yes_price:
                price = ONE - price
        else:
            raise BookError(f"{self.ticker}: unknown side {side!r}")
        old = levels.get(price)
        new = delta if old is None else old + delta
        if new > 0:
            levels[price] = new
            if old is None and best is not None and price > best:
                best = price
        elif new == 0:
            if old is not None:
                del levels[price]
                if price == best:
                    best = None
        else:
            self.invalidate("negative size")
            raise BookError(f"{self.ticker}: size at {side} {price} would be {new}")
        if yes:
            self._yes_best = best
        else:
            self._no_best = best
        if ts_ms is not None:
            self.ts_ms = ts_ms
        return old is None and new > 0

    def crossed_by(self, side: str, price: Decimal) -> bool:
        """Whether a bid just added at native ``price`` on ``side`` crossed or locked the book
        (best YES bid >= best YES ask, i.e. a YES bid and a NO bid summing to $1 or more)."""
        other = self._best_no() if side == "yes" else self._best_yes()
        return other is not None and price + other >= ONE

    def in_other_convention(self, yes_ask: Decimal) -> bool:
        """Whether the NO side was read in the other price convention than it was sent in,
        judged against the exchange's best YES ask from another message (its ticker).

        Read as sent, the best NO bid is ``1 - yes_ask``; read the other way (NO bid prices
        taken as YES-scale asks, or the reverse) every level is mirrored (``p -> 1 - p``), so the
        *lowest* level is ``yes_ask`` instead. The book's own contents cannot tell the two apart
        when the YES price is below $0.50: both readings then give an uncrossed book.
        """
        best = self._best_no()
        if best is None or ONE - best == yes_ask:
            return False
        return min(self._no) == yes_ask

    def problem(self, grid: PriceGrid | None = None) -> str | None:
        """Why this book cannot be right, or None: crossed or locked, or a price outside
        (0, 1) or off the market's grid (``grid``: its ``price_ranges``)."""
        yes, no = self._best_yes(), self._best_no()
        if yes is not None and no is not None and yes + no >= ONE:
            return f"crossed book: bid {yes} >= ask {ONE - no}"
        for side, levels in (("yes", self._yes), ("no", self._no)):
            for price in levels:
                bad = price_problem(price, grid)
                if bad is not None:
                    return f"{side} {bad}"
        return None

    def invalidate(self, reason: str) -> None:
        """Drop every level and mark the book invalid until its next snapshot."""
        self._yes = {}
        self._no = {}
        self._yes_best = self._no_best = None
        self.valid = False
        self.invalid_reason = reason

    def _best_yes(self) -> Decimal | None:
        best = self._yes_best
        if best is None and self._yes:
            best = self._yes_best = max(self._yes)
        return best

    def _best_no(self) -> Decimal | None:
        best = self._no_best
        if best is None and self._no:
            best = self._no_best = max(self._no)
        return best

    # -- reads (YES terms) ----------------------------------------------------------------------

    def bids(self, depth: int | None = None) -> list[Level]:
        """YES bids, best (highest) first, at most ``depth`` levels."""
        out = sorted(self._yes.items(), key=_price_key, reverse=True)
        return out if depth is None else out[:depth]

    def asks(self, depth: int | None = None) -> list[Level]:
        """YES asks (``1 - NO bid``), best (lowest) first, at most ``depth`` levels."""
        out = [(ONE - p, s) for p, s in sorted(self._no.items(), key=_price_key, reverse=True)]
        return out if depth is None else out[:depth]

    @property
    def best_bid(self) -> Decimal | None:
        """Highest YES bid, or None when there is none."""
        return self._best_yes()

    @property
    def best_ask(self) -> Decimal | None:
        """Lowest YES ask (``1 - best NO bid``), or None when there are no NO bids."""
        best = self._best_no()
        return None if best is None else ONE - best

    @property
    def best_bid_size(self) -> Decimal | None:
        """Size at the best YES bid."""
        best = self._best_yes()
        return None if best is None else self._yes[best]

    @property
    def best_ask_size(self) -> Decimal | None:
        """Size at the best YES ask."""
        best = self._best_no()
        return None if best is None else self._no[best]

    @property
    def spread(self) -> Decimal | None:
        """``best_ask - best_bid``, or None when a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else ask - bid

    @property
    def mid(self) -> Decimal | None:
        """``(best_bid + best_ask) / 2``, or None when a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else (bid + ask) / _TWO

    def depth(self, n: int) -> tuple[list[Level], list[Level]]:
        """Top-``n`` YES bids and YES asks, best first."""
        return self.bids(n), self.asks(n)

    def levels(self) -> dict[str, list[Level]]:
        """Both sides in Kalshi's native bid terms, ascending by price (like the REST book)."""
        return {
            "yes": sorted(self._yes.items(), key=_price_key),
            "no": sorted(self._no.items(), key=_price_key),
        }

    def __len__(self) -> int:
        return len(self._yes) + len(self._no)

    def __repr__(self) -> str:
        state = "valid" if self.valid else f"invalid: {self.invalid_reason}"
        return (
            f"OrderBook({self.ticker!r}, {state}, bid={self.best_bid}, ask={self.best_ask}, "
            f"levels={len(self)})"
        )


PriceGrid = tuple[tuple[Decimal, Decimal, Decimal], ...]
"""A market's price ranges ``(start, end, step)``, as REST's ``price_ranges``."""


def price_problem(price: Decimal, grid: PriceGrid | None) -> str | None:
    """Why a bid price cannot be right: outside (0, 1), or on none of the grid's ranges."""
    if not _ZERO < price < ONE:
        return f"price {price} out of range"
    if grid:
        for start, end, step in grid:
            if start <= price <= end and (price - start) % step == 0:
                return None
        return f"price {price} off the tick"
    return None


def _price_key(level: Level) -> Decimal:
    return level[0]
