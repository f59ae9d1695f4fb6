"""Order book levels packed: little-endian float64 pairs ``price, size``, best first.

Shared by the worker, which sends books this way (``marketData:applyUpdates``' ``bids`` and
``asks`` as Convex ``bytes``), and the store, which keeps them this way.

A book is rewritten on almost every batch and read by every getOrderbook re-run. As nested
lists, each write is validated and deep-copied level by level by the store, and each read copies
the whole book; as one Convex ``bytes`` value it is a single immutable object both ways, and
getOrderbook unpacks only the ``depth`` levels it returns. On the wire, the lists cost the
worker a Convex-JSON walk per number and the store another to decode them; the bytes are one
base64 string per side.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from itertools import chain
from typing import Any

__all__ = [
    "LEVEL_BYTES",
    "check_packed",
    "level_count",
    "pack_decimal_levels",
    "pack_levels",
    "unpack_levels",
]

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
    if not set(map(type, flat)) <= _NUMBER_TYPES or not _finite(flat):
        return None
    return _pack(flat)


def pack_decimal_levels(levels: Sequence[tuple[Any, Any]]) -> bytes:
    """Pack the worker's ``Decimal`` levels as the store keeps them.

    Args:
        levels: ``(price, size)`` pairs of real numbers, best first.

    Returns:
        The packed levels, each number the float64 nearest to it. Unchecked: the store checks
        what it receives (:func:`check_packed`).
    """
    return _pack([float(x) for level in levels for x in level])


def check_packed(packed: bytes) -> str | None:
    """What is wrong with ``packed`` as levels, if anything.

    Args:
        packed: levels as sent (Convex ``bytes``).

    Returns:
        ``None`` for a whole number of levels whose prices and sizes are all finite (what
        :func:`pack_levels` asks of a list), else what is wrong, for an error message.
    """
    if len(packed) % LEVEL_BYTES:
        return f"{len(packed)} bytes is not a whole number of {LEVEL_BYTES}-byte levels"
    if not _finite(struct.unpack(f"<{len(packed) // 8}d", packed)):
        return "a price or size is not a finite number"
    return None


def _pack(flat: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(flat)}d", *flat)


def _finite(flat: Sequence[float]) -> bool:
    return all(map(math.isfinite, flat))


def level_count(packed: bytes) -> int:
    """How many levels ``packed`` holds."""
    return len(packed) // LEVEL_BYTES


def unpack_levels(packed: bytes, depth: int | None = None) -> list[list[float]]:
    """The first ``depth`` levels (all if ``None``) as ``[[price, size], ...]``."""
    n = level_count(packed) if depth is None else min(depth, level_count(packed))
    flat = struct.unpack_from(f"<{2 * n}d", packed)
    return [[flat[i], flat[i + 1]] for i in range(0, 2 * n, 2)]
