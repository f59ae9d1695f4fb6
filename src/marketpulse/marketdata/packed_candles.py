"""The packed form of the exchange's candles: shared by the worker that sends a market's
history (``marketData:upsertCandles``' ``packed`` argument) and the store that keeps it.

A row is ``(start, open, high, low, close, volume)`` as little-endian float64 (the store's
numbers are float64): a day of 1-minute candles is one 69 KB bytes value instead of 1,440
JSON objects, which cost the worker, the wire and the store a check and a copy per key.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = ["CANDLE_FIELDS", "ROW_BYTES", "pack_rows", "unpack_rows"]

CANDLE_FIELDS = ("start", "open", "high", "low", "close", "volume")
"""The fields of an exchange candle, in the order of a packed row."""

_ROW = struct.Struct("<6d")
ROW_BYTES = _ROW.size
"""Bytes of one packed candle."""


def pack_rows(rows: Iterable[tuple[float, ...]]) -> bytes:
    """Rows of :data:`CANDLE_FIELDS`, packed sorted by start.

    Raises:
        struct.error: A row is not six numbers.
    """
    return b"".join(_ROW.pack(*row) for row in sorted(rows))


def unpack_rows(blob: bytes) -> list[tuple[float, ...]]:
    """The rows of :func:`pack_rows`, oldest first (``len(blob)`` a multiple of
    :data:`ROW_BYTES`)."""
    return list(_ROW.iter_unpack(blob))
