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

A cursor is bound to its query: it carries a short fingerprint of the scan (table, index, range,
order), and a cursor from another query is refused with ``InvalidCursor`` (which restarts the
client's pagination) rather than read as a position in a range it was never in. Convex binds
its cursors the same way.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = [
    "END",
    "MAX_ROWS_READ",
    "SOFT_MAX_PAGE_LEN",
    "PageOptions",
    "decode_cursor",
    "encode_cursor",
    "query_fingerprint",
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


_FINGERPRINT_BYTES = 4
"""Enough to tell a user's queries apart; a collision only lets a foreign cursor through."""


def query_fingerprint(table: str, index: str, lo: bytes, hi: bytes, reverse: bool) -> bytes:
    """What a cursor of this scan carries, so that another query's cursor is refused."""
    h = hashlib.blake2b(digest_size=_FINGERPRINT_BYTES)
    for part in (table.encode(), index.encode(), lo, hi, b"desc" if reverse else b"asc"):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


def encode_cursor(key: bytes | None, fingerprint: bytes) -> str:
    """The cursor after index key ``key`` of the query ``fingerprint``; ``None``: the end."""
    if key is None:
        return END
    raw = fingerprint + key
    return binascii.b2a_base64(raw, newline=False).decode("ascii").translate(_TO_URLSAFE)


_TO_URLSAFE = str.maketrans("+/", "-_")
_FROM_URLSAFE = str.maketrans("-_", "+/")


def decode_cursor(cursor: str, fingerprint: bytes, what: str = "cursor") -> bytes | None:
    """The index key a cursor of the query ``fingerprint`` points after; ``None`` for :data:`END`.

    Raises:
        ValueError: not a cursor, or one of another query (the message starts
            ``InvalidCursor``, which makes ``usePaginatedQuery`` start over from the first page).
    """
    if cursor == END:
        return None
    try:
        raw = binascii.a2b_base64(cursor.translate(_FROM_URLSAFE).encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"InvalidCursor: invalid pagination {what} {cursor[:40]!r}") from exc
    if raw[:_FINGERPRINT_BYTES] != fingerprint or len(raw) <= _FINGERPRINT_BYTES:
        raise ValueError(
            f"InvalidCursor: pagination {what} {cursor[:40]!r} belongs to another query"
        )
    return raw[_FINGERPRINT_BYTES:]


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
