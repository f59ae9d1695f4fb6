"""Limits of the market-data contract, declared once for the app and its producers.

The app (this package) owns the contract of its functions (docs/interfaces.md §5); the
pipeline, which writes to them, imports these bounds rather than repeating the numbers. This
module imports nothing, so a producer can read it without loading the app or the store.
"""

from __future__ import annotations

__all__ = [
    "BOOK_LEVELS",
    "MARKETS_PER_UPSERT",
    "MAX_CANDLES",
    "MAX_RESULTS",
    "MAX_TEXT",
]

BOOK_LEVELS = 200
"""Levels per side of a book: the most ``applyUpdates`` accepts, the pipeline writes, the store
keeps and ``getOrderbook`` returns (its ``depth`` bound)."""

MAX_RESULTS = 200
"""The most entries a list query returns (the bound of its ``limit`` argument)."""

MAX_CANDLES = 1_500
"""The most candles ``getCandles`` returns: a day of 1-minute candles, with room to spare."""

MAX_TEXT = 256
"""Longest ticker, trade id, stream id or status string accepted."""

MARKETS_PER_UPSERT = 200
"""Markets the pipeline sends per ``upsertMarkets`` call (one mutation stays well inside the
store's time limit)."""
