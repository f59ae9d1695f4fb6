"""Read sets: the index-key intervals a function run actually scanned."""

from __future__ import annotations

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

    def __len__(self) -> int:
        return sum(len(v) for v in self.intervals.values())

    def __repr__(self) -> str:
        return f"ReadSet({self.intervals!r})"
