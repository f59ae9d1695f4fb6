"""Which subscriptions' read sets contain a written index key.

For each (table, index) an :class:`IntervalSet` (a nested containment list, see ``_nclist``)
holds the distinct ``[lo, hi)`` byte intervals read by live queries; identical intervals from
several queries share one entry with a member set. Finding the queries affected by a written
key costs O(log n + matches) with the log inside C's ``bisect``, so it barely grows with the
number of subscriptions elsewhere in the index.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

from ._nclist import IntervalSet
from ._readset import ReadSet

__all__ = ["SubscriptionIndex"]

T = TypeVar("T", bound=Hashable)
_EMPTY: frozenset[tuple[bytes, bytes]] = frozenset()


class SubscriptionIndex(Generic[T]):
    """Maps index-key intervals to the tokens (subscriptions) that read them."""

    def __init__(self) -> None:
        self._sets: dict[tuple[str, str], IntervalSet[T]] = {}
        self._registered: dict[T, ReadSet] = {}

    def __len__(self) -> int:
        return len(self._registered)

    def add(self, token: T, read_set: ReadSet) -> None:
        """Register (or re-register) ``token`` with the intervals of ``read_set``.

        Re-registration only touches the trees for intervals that changed: a re-run query
        usually reads the same ranges again, and tree updates are the costly part.
        """
        previous = self._registered.get(token)
        self._registered[token] = read_set
        old = previous.intervals if previous is not None else {}
        new = read_set.intervals
        for key in old.keys() | new.keys():
            before = old.get(key, _EMPTY)
            after = new.get(key, _EMPTY)
            if before == after:
                continue
            iset = self._sets.get(key)
            if iset is None:
                iset = self._sets[key] = IntervalSet()
            for lo, hi in before - after:
                iset.remove(lo, hi, token)
            for lo, hi in after - before:
                iset.add(lo, hi, token)
            if not len(iset):
                del self._sets[key]

    def remove(self, token: T) -> None:
        """Forget ``token``'s intervals (no-op if not registered)."""
        read_set = self._registered.pop(token, None)
        if read_set is None:
            return
        for (table, index), intervals in read_set.intervals.items():
            iset = self._sets[(table, index)]
            for lo, hi in intervals:
                iset.remove(lo, hi, token)
            if not len(iset):
                del self._sets[(table, index)]

    def find(self, points: Iterable[tuple[str, str, bytes]]) -> set[T]:
        """Tokens whose read sets contain any of the (table, index, key) points."""
        found: set[T] = set()
        for table, index, key in points:
            iset = self._sets.get((table, index))
            if iset is not None:
                found.update(iset.stab(key))
        return found
