"""Read sets: the index-key intervals a function run actually scanned."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

__all__ = ["ReadSet"]


class ReadSet:
    """Per (table, index), the half-open byte intervals ``[lo, hi)`` that a run read."""

    __slots__ = ("intervals",)

    def __init__(self) -> None:
        self.intervals: dict[tuple[str, str], set[tuple[bytes, bytes]]] = {}

    def add(self, table: str, index: str, lo: bytes, hi: bytes) -> None:
        """Record that every key of ``index`` in ``[lo, hi)`` was read (empty ranges ignored)."""
        if lo < hi:
            self.intervals.setdefault((table, index), set()).add((lo, hi))

    def contains(self, table: str, index: str, key: bytes) -> bool:
        """Whether ``key`` of ``(table, index)`` lies in a recorded interval (linear; for tests)."""
        return any(lo <= key < hi for lo, hi in self.intervals.get((table, index), ()))

    def touches(self, points: Iterable[tuple[str, str, bytes]]) -> bool:
        """Whether any ``(table, index, key)`` point lies in a recorded interval (each index's
        intervals are merged once, then every point is one bisection)."""
        merged: dict[tuple[str, str], tuple[list[bytes], list[bytes]]] = {}
        for table, index, key in points:
            where = (table, index)
            spans = merged.get(where)
            if spans is None:
                spans = merged[where] = _merge(self.intervals.get(where, ()))
            los, his = spans
            pos = bisect_right(los, key) - 1
            if pos >= 0 and key < his[pos]:
                return True
        return False

    def __len__(self) -> int:
        return sum(len(v) for v in self.intervals.values())

    def __repr__(self) -> str:
        return f"ReadSet({self.intervals!r})"


def _merge(intervals: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """Sorted, disjoint ``[lo, hi)`` intervals covering ``intervals``, as (los, his)."""
    los: list[bytes] = []
    his: list[bytes] = []
    for lo, hi in sorted(intervals):
        if his and lo <= his[-1]:
            his[-1] = max(his[-1], hi)
        else:
            los.append(lo)
            his.append(hi)
    return los, his
