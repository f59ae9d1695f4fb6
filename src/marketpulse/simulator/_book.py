"""One market's order book in Kalshi's native terms: YES bids and NO bids.

A NO bid at ``q`` is a YES ask at ``1 - q``. The book is never crossed: for the best YES bid
``p`` and best NO bid ``q``, ``p + q < 1``. Matching is done by the model; this class only
stores levels and answers best-price questions.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

from marketpulse.simulator._units import ONE

SIDES = ("yes", "no")


class Book:
    """Resting size per price, per side (integer units, see ``_units``)."""

    __slots__ = ("no", "yes")

    def __init__(self) -> None:
        self.yes: SortedDict = SortedDict()
        self.no: SortedDict = SortedDict()

    def side(self, side: str) -> SortedDict:
        """The levels of ``"yes"`` or ``"no"``."""
        return self.yes if side == "yes" else self.no

    def best(self, side: str) -> tuple[int, int] | None:
        """Best (highest) bid on a side as ``(price, size)``, or None when the side is empty."""
        levels = self.yes if side == "yes" else self.no
        if not levels:
            return None
        price, size = levels.peekitem(-1)
        return int(price), int(size)

    def change(self, side: str, price: int, delta: int) -> int:
        """Add ``delta`` (may be negative) to a level; returns the new size (0 = removed)."""
        levels = self.yes if side == "yes" else self.no
        new = levels.get(price, 0) + delta
        if new < 0:
            raise ValueError(f"level {side} {price} would go negative ({new})")
        if new == 0:
            levels.pop(price, None)
        else:
            levels[price] = new
        return int(new)

    def is_crossed(self) -> bool:
        """True if the best YES bid plus the best NO bid reach one dollar (never expected)."""
        by, bn = self.best("yes"), self.best("no")
        return by is not None and bn is not None and by[0] + bn[0] >= ONE

    def levels(self, side: str) -> list[tuple[int, int]]:
        """All levels of a side, ascending by price."""
        return [(int(p), int(s)) for p, s in self.side(side).items()]

    def copy(self) -> Book:
        """An independent copy."""
        b = Book()
        b.yes = SortedDict(self.yes)
        b.no = SortedDict(self.no)
        return b
