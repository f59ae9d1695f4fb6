"""Reactive pagination: cursors, page options and the page journal.

A cursor is a position in a query's scan order: *after* an index key, or the *end* of the
query's range. A page runs from its start cursor (exclusive) up to its end cursor (inclusive)
or, without one, until ``numItems`` documents are found. The position a page stops at is its
``continueCursor`` and also its *journal* (Convex's ``QueryJournal``): a subscribed page re-runs
with its journal as its end, so its end stays fixed while rows come and go, and the next page
(which starts at that same cursor) stays contiguous with it. The clients keep the journal and
send it back when they re-subscribe after a reconnect.

Splitting follows Convex's backend: a page reports ``splitCursor`` (the position after the
middle row it scanned) and ``pageStatus``: ``SplitRequired`` when a read limit stopped it
early, ``SplitRecommended`` when it is close to a limit or longer than
:data:`SOFT_MAX_PAGE_LEN`. The official clients then replace it by two pages, ``[cursor,
splitCursor]`` and ``[splitCursor, continueCursor]``, using ``endCursor``.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

__all__ = [
    "END",
    "MAX_ROWS_READ",
    "SOFT_MAX_PAGE_LEN",
    "PageOptions",
    "decode_cursor",
    "encode_cursor",
    "soft_limit",
]

MAX_ROWS_READ = 32_000
"""Rows one page may scan by default (Convex's per-transaction read limit)."""

SOFT_MAX_PAGE_LEN = 8192 * 3 // 4
"""A page longer than this recommends a split (Convex: 3/4 of the longest array)."""

END = "~end"
"""The cursor of the end of a query's range (``~`` is not in the base64url alphabet)."""

_OPTION_KEYS = frozenset(
    {"numItems", "cursor", "endCursor", "id", "maximumRowsRead", "maximumBytesRead"}
)


def soft_limit(hard: int) -> int:
    """Past this much of a read limit a page recommends a split (Convex: 3/4)."""
    return hard * 3 // 4


def encode_cursor(key: bytes | None) -> str:
    """The cursor after index key ``key``; ``None`` is the end of the range."""
    if key is None:
        return END
    return binascii.b2a_base64(key, newline=False).decode("ascii").translate(_TO_URLSAFE)


_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


def decode_cursor(cursor: str, what: str = "cursor") -> bytes | None:
    """The index key a cursor points after, or ``None`` for :data:`END`.

    Raises:
        ValueError: not a cursor (the message starts ``InvalidCursor``, which makes
            ``usePaginatedQuery`` start over from the first page).
    """
    if cursor == END:
        return None
    try:
        return binascii.a2b_base64(
            cursor.translate(_FROM_URLSAFE).encode("ascii"), strict_mode=True
        )
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"InvalidCursor: invalid pagination {what} {cursor[:40]!r}") from exc


def _count(opts: dict[str, Any], key: str, *, minimum: int) -> int | None:
    value = opts.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"paginationOpts.{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _cursor(opts: dict[str, Any], key: str) -> str | None:
    value = opts.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"paginationOpts.{key} must be a string or null")
    return value or None


@dataclass(frozen=True)
class PageOptions:
    """Validated ``paginationOpts``.

    Attributes:
        num_items: documents wanted when the page has no end cursor.
        cursor: where the page starts (exclusive); ``None`` for the start of the range.
        end_cursor: where the page ends (inclusive), fixing its extent whatever
            ``num_items`` says; ``None`` when not given.
        maximum_rows_read: stop (``SplitRequired``) after scanning this many rows, when the
            page has no end cursor.
        maximum_bytes_read: likewise for the documents' encoded bytes.
    """

    num_items: int
    cursor: str | None
    end_cursor: str | None
    maximum_rows_read: int | None
    maximum_bytes_read: int | None

    @classmethod
    def parse(cls, opts: Any) -> PageOptions:
        """Validate ``paginationOpts`` as the official clients send it.

        Raises:
            ValueError: a missing, unknown or mistyped option.
        """
        if not isinstance(opts, dict):
            raise ValueError("paginate() expects {'numItems': n, 'cursor': str | None}")
        unknown = sorted(set(opts) - _OPTION_KEYS)
        if unknown:
            raise ValueError(f"paginationOpts: unknown option(s) {unknown}")
        if "numItems" not in opts:
            raise ValueError("paginationOpts.numItems is required")
        num = _count(opts, "numItems", minimum=1)
        assert num is not None
        if num > MAX_ROWS_READ:
            raise ValueError(
                f"paginationOpts.numItems: requested too many items: {num} (at most "
                f"{MAX_ROWS_READ})"
            )
        return cls(
            num_items=num,
            cursor=_cursor(opts, "cursor"),
            end_cursor=_cursor(opts, "endCursor"),
            maximum_rows_read=_count(opts, "maximumRowsRead", minimum=1),
            maximum_bytes_read=_count(opts, "maximumBytesRead", minimum=1),
        )
