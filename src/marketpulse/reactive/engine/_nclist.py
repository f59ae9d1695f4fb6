"""A dynamic nested containment list: stabbing queries over byte intervals.

Why not a balanced interval tree: a stabbing query in a pure-Python tree walks O(log n)
Python-level nodes, so its cost grows visibly with the number of subscriptions (the
``intervaltree`` package measured 1.7x from 1k to 100k). Here each level is a list of
intervals none of which contains another, so sorting by ``lo`` also sorts by ``hi``, and the
intervals containing a key are one contiguous run found with a single C-level ``bisect``.
Intervals contained in another live in that one's child level. A stabbing query costs one
bisect per level it visits, and it only visits child levels of intervals that matched:
O(log n + matches) with the log in C.

Invariants, per level: ``los`` and ``his`` strictly increasing, ``nodes[i]`` has bounds
``(los[i], his[i])``, no node contains another, and every node's children lie inside it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["IntervalSet"]

T = TypeVar("T", bound=Hashable)


class _Level(Generic[T]):
    __slots__ = ("his", "los", "nodes")

    def __init__(self) -> None:
        self.los: list[bytes] = []
        self.his: list[bytes] = []
        self.nodes: list[_Node[T]] = []


class _Node(Generic[T]):
    __slots__ = ("children", "hi", "level", "lo", "members")

    def __init__(self, lo: bytes, hi: bytes) -> None:
        self.lo = lo
        self.hi = hi
        self.members: set[T] = set()
        self.children: _Level[T] | None = None
        self.level: _Level[T] | None = None


def _insert(level: _Level[T], node: _Node[T]) -> None:
    lo, hi = node.lo, node.hi
    while True:
        # The only candidate container at this level: the last node starting at or before lo
        # (it has the largest hi among those).
        p = bisect_right(level.los, lo)
        if p and level.his[p - 1] >= hi:
            parent = level.nodes[p - 1]
            if parent.children is None:
                parent.children = _Level()
            level = parent.children
            continue
        break
    start = bisect_left(level.los, lo)
    end = bisect_right(level.his, hi)
    if end > start:
        # Nodes inside the new one move below it, keeping their own subtrees.
        inside = level.nodes[start:end]
        del level.los[start:end], level.his[start:end], level.nodes[start:end]
        if node.children is None:
            node.children = _Level()
        for child in inside:
            _insert(node.children, child)
    level.los.insert(start, lo)
    level.his.insert(start, hi)
    level.nodes.insert(start, node)
    node.level = level


class IntervalSet(Generic[T]):
    """Half-open ``[lo, hi)`` byte intervals, each with the set of tokens that read it."""

    def __init__(self) -> None:
        self._root: _Level[T] = _Level()
        self._nodes: dict[tuple[bytes, bytes], _Node[T]] = {}

    def __len__(self) -> int:
        """Distinct intervals held."""
        return len(self._nodes)

    def add(self, lo: bytes, hi: bytes, token: T) -> None:
        """Record that ``token`` reads ``[lo, hi)`` (ignored when empty)."""
        if lo >= hi:
            return
        node = self._nodes.get((lo, hi))
        if node is None:
            node = self._nodes[(lo, hi)] = _Node(lo, hi)
            _insert(self._root, node)
        node.members.add(token)

    def remove(self, lo: bytes, hi: bytes, token: T) -> None:
        """Forget that ``token`` reads ``[lo, hi)`` (no-op if it does not)."""
        node = self._nodes.get((lo, hi))
        if node is None:
            return
        node.members.discard(token)
        if node.members:
            return
        del self._nodes[(lo, hi)]
        level = node.level
        assert level is not None
        i = bisect_left(level.los, lo)
        del level.los[i], level.his[i], level.nodes[i]
        if node.children is not None:
            # Its children are inside whatever contained it; re-place them from this level.
            for child in node.children.nodes:
                _insert(level, child)

    def stab(self, key: bytes) -> Iterator[T]:
        """Tokens of every interval containing ``key``."""
        stack = [self._root]
        while stack:
            level = stack.pop()
            los, nodes = level.los, level.nodes
            i = bisect_right(level.his, key)
            n = len(los)
            while i < n and los[i] <= key:
                node = nodes[i]
                yield from node.members
                if node.children is not None and node.children.nodes:
                    stack.append(node.children)
                i += 1

    def check(self) -> None:
        """Assert the structure's invariants (for tests)."""
        seen = 0
        stack: list[tuple[_Level[T], bytes, bytes]] = [(self._root, b"", b"\xff" * 64)]
        while stack:
            level, plo, phi = stack.pop()
            assert len(level.los) == len(level.his) == len(level.nodes)
            for i, node in enumerate(level.nodes):
                assert (node.lo, node.hi) == (level.los[i], level.his[i])
                assert node.level is level
                assert plo <= node.lo and node.hi <= phi
                if i:
                    assert level.los[i - 1] < node.lo and level.his[i - 1] < node.hi
                seen += 1
                if node.children is not None:
                    stack.append((node.children, node.lo, node.hi))
        assert seen == len(self._nodes)
