"""Order book levels stored packed: little-endian float64 pairs ``price, size``, best first.

A book is rewritten on almost every batch and read by every getOrderbook re-run. As nested
lists, each write is validated and deep-copied level by level by the store, and each read copies
the whole book; as one Convex ``bytes`` value it is a single immutable object both ways, and
getOrderbook unpacks only the ``depth`` levels it returns.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any

__all__ = ["LEVEL_BYTES", "level_count", "pack_levels", "unpack_levels"]

LEVEL_BYTES = 16
_NUMBER_TYPES = frozenset({int, float})
_PAIR_TYPES = frozenset({list, tuple})


def pack_levels(levels: Sequence[Any]) -> bytes | None:
    """Pack ``[[price, size], ...]`` levels; ``None`` unless every level is two finite numbers.

    The fast path for well-formed input; the caller explains what is wrong otherwise.
    """
    if not levels:
        return b""
    # Whole-list checks through C-level map() rather than a Python loop per level: a batch can
    # carry thousands of books of ~100 levels each.
    if not set(map(type, levels)) <= _PAIR_TYPES or set(map(len, levels)) != {2}:
        return None
    flat = list(chain.from_iterable(levels))
    # type() rather than isinstance: a bool is an int, and never a valid price or size.
    if not set(map(type, flat)) <= _NUMBER_TYPES or not all(map(math.isfinite, flat)):
        return None
    return struct.pack(f"<{len(flat)}d", *flat)


def level_count(packed: bytes) -> int:
    """How many levels ``packed`` holds."""
    return len(packed) // LEVEL_BYTES


def unpack_levels(packed: bytes, depth: int | None = None) -> list[list[float]]:
    """The first ``depth`` levels (all if ``None``) as ``[[price, size], ...]``."""
    n = level_count(packed) if depth is None else min(depth, level_count(packed))
    flat = struct.unpack_from(f"<{2 * n}d", packed)
    return [[flat[i], flat[i + 1]] for i in range(0, 2 * n, 2)]
