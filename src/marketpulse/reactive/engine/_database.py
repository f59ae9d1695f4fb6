"""``ctx.db``: the database API functions use (``get``, ``query``, ``insert`` ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import orjson

from ..values import value_to_json
from ._keys import TOP, encode_value
from ._pagination import (
    END,
    MAX_ROWS_READ,
    SOFT_MAX_PAGE_LEN,
    PageOptions,
    decode_cursor,
    encode_cursor,
    query_fingerprint,
    soft_limit,
)
from ._store import Document
from ._transaction import Scan, Transaction

__all__ = ["DatabaseReader", "DatabaseWriter", "IndexRange", "Query", "SystemReader"]


class IndexRange:
    """Builds an index range: ``eq`` on a prefix of the index fields, then optionally a lower
    bound (``gt``/``gte``) and an upper bound (``lt``/``lte``) on the next field."""

    __slots__ = ("_eq", "_fields", "_index", "_lower", "_range_field", "_table", "_upper")

    def __init__(self, table: str, index: str, fields: tuple[str, ...]) -> None:
        self._table = table
        self._index = index
        self._fields = fields
        self._eq: list[bytes] = []
        self._range_field: str | None = None
        self._lower: tuple[bytes, bool] | None = None  # (encoded value, inclusive)
        self._upper: tuple[bytes, bool] | None = None

    @property
    def _where(self) -> str:
        # Only error messages need it: formatted then, not for every range built.
        return f"{self._table}.{self._index}"

    def _next_field(self) -> str | None:
        n = len(self._eq)
        return self._fields[n] if n < len(self._fields) else None

    def _encode(self, value: Any) -> bytes:
        try:
            return encode_value(value)
        except TypeError as exc:
            raise ValueError(f"index range on {self._where}: {exc}") from exc

    def eq(self, field: str, value: Any) -> IndexRange:
        """Restrict the next index field to ``value``."""
        if self._range_field is not None:
            raise ValueError(f"index range on {self._where}: eq({field!r}) after gt/lt")
        expected = self._next_field()
        if field != expected:
            raise ValueError(
                f"index range on {self._where}: expected eq on {expected!r}, got {field!r} "
                f"(fields must be used in index order: {list(self._fields)})"
            )
        self._eq.append(self._encode(value))
        return self

    def _bound_field(self, field: str, op: str) -> None:
        expected = self._range_field or self._next_field()
        if field != expected:
            raise ValueError(
                f"index range on {self._where}: expected {op} on {expected!r}, got {field!r} "
                f"(fields must be used in index order: {list(self._fields)})"
            )
        self._range_field = field

    def _set_lower(self, field: str, value: Any, inclusive: bool, op: str) -> IndexRange:
        self._bound_field(field, op)
        if self._lower is not None:
            raise ValueError(f"index range on {self._where}: two lower bounds on {field!r}")
        self._lower = (self._encode(value), inclusive)
        return self

    def _set_upper(self, field: str, value: Any, inclusive: bool, op: str) -> IndexRange:
        self._bound_field(field, op)
        if self._upper is not None:
            raise ValueError(f"index range on {self._where}: two upper bounds on {field!r}")
        self._upper = (self._encode(value), inclusive)
        return self

    def gt(self, field: str, value: Any) -> IndexRange:
        """Lower bound, exclusive."""
        return self._set_lower(field, value, False, "gt")

    def gte(self, field: str, value: Any) -> IndexRange:
        """Lower bound, inclusive."""
        return self._set_lower(field, value, True, "gte")

    def lt(self, field: str, value: Any) -> IndexRange:
        """Upper bound, exclusive."""
        return self._set_upper(field, value, False, "lt")

    def lte(self, field: str, value: Any) -> IndexRange:
        """Upper bound, inclusive."""
        return self._set_upper(field, value, True, "lte")

    def bounds(self) -> tuple[bytes, bytes]:
        """The half-open key interval ``[lo, hi)`` this range selects."""
        prefix = b"".join(self._eq)
        if self._lower is None:
            lo = prefix
        else:
            enc, inclusive = self._lower
            lo = prefix + enc if inclusive else prefix + enc + TOP
        if self._upper is None:
            hi = prefix + TOP
        else:
            enc, inclusive = self._upper
            hi = prefix + enc + TOP if inclusive else prefix + enc
        return lo, hi


class Query:
    """A query over one table, built fluently and run by a terminal method."""

    __slots__ = (
        "_filters",
        "_hi",
        "_index",
        "_indexed",
        "_lo",
        "_ordered",
        "_reverse",
        "_table",
        "_tx",
    )

    def __init__(self, tx: Transaction, table: str, *, system: bool = False) -> None:
        if not isinstance(table, str) or not table:
            raise ValueError(f"invalid table name {table!r}")
        if table.startswith("_") != system:
            raise ValueError(
                f"{table!r} is a system table: use ctx.db.system.query"
                if not system
                else f"{table!r} is not a system table: use ctx.db.query"
            )
        self._tx = tx
        self._table = table
        self._index = "by_creation_time"
        self._lo = b""
        self._hi = TOP
        self._reverse = False
        self._filters: list[Callable[[Document], Any]] = []
        self._indexed = False
        self._ordered = False

    def with_index(
        self, name: str, range_fn: Callable[[IndexRange], IndexRange] | None = None
    ) -> Query:
        """Scan the index ``name``, restricted by ``range_fn(q)`` (``q.eq(...).gt(...)``)."""
        if self._indexed:
            raise ValueError("with_index() may be called once per query")
        idef = self._tx.index_def(self._table, name)
        rng = IndexRange(self._table, name, idef.key_fields)
        if range_fn is not None:
            result = range_fn(rng)
            if not isinstance(result, IndexRange):
                raise TypeError("the index range function must return the range builder")
            rng = result
        self._index = name
        self._lo, self._hi = rng.bounds()
        self._indexed = True
        return self

    def order(self, order: Literal["asc", "desc"]) -> Query:
        """``asc`` (default) or ``desc`` index order."""
        if order not in ("asc", "desc"):
            raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
        self._reverse = order == "desc"
        self._ordered = True
        return self

    def filter(self, predicate: Callable[[Document], Any]) -> Query:
        """Keep documents for which ``predicate(doc)`` is truthy (scanned documents still count
        as read)."""
        self._filters.append(predicate)
        return self

    def _scan(self, lo: bytes | None = None, hi: bytes | None = None) -> Scan:
        return self._tx.scan(
            self._table,
            self._index,
            self._lo if lo is None else max(lo, self._lo),
            self._hi if hi is None else min(hi, self._hi),
            self._reverse,
        )

    def _run(self, scan: Scan, limit: int | None) -> Iterator[tuple[bytes, Document]]:
        if limit is not None and limit <= 0:
            return
        n = 0
        for key, doc in scan:
            if all(f(doc) for f in self._filters):
                yield key, doc
                n += 1
                if limit is not None and n >= limit:
                    return

    def _collect(self, limit: int | None) -> list[Document]:
        scan = self._scan()
        try:
            return [doc for _, doc in self._run(scan, limit)]
        finally:
            scan.finish()

    def take(self, n: int) -> list[Document]:
        """The first ``n`` documents."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"take() expects a non-negative integer, got {n!r}")
        return self._collect(n)

    def first(self) -> Document | None:
        """The first document, or ``None``."""
        if not self._filters:
            return self._tx.first(self._table, self._index, self._lo, self._hi, self._reverse)
        docs = self._collect(1)
        return docs[0] if docs else None

    def unique(self) -> Document | None:
        """The only document, or ``None``.

        Raises:
            ValueError: more than one document matches.
        """
        docs = self._collect(2)
        if len(docs) > 1:
            raise ValueError(f"unique() found more than one document in {self._table}")
        return docs[0] if docs else None

    def collect(self) -> list[Document]:
        """Every matching document."""
        return self._collect(None)

    def __iter__(self) -> Iterator[Document]:
        scan = self._scan()
        try:
            for _, doc in self._run(scan, None):
                yield doc
        finally:
            scan.finish()

    def paginate(self, opts: Any) -> dict[str, Any]:
        """One page of a reactive paginated query (what ``usePaginatedQuery`` runs).

        ``opts`` is ``paginationOpts``: ``numItems``, ``cursor`` and optionally ``endCursor``,
        ``maximumRowsRead``, ``maximumBytesRead`` and the client's ``id``. Without an end
        cursor the page stops after ``numItems`` documents; a re-run of a subscribed page
        keeps the end it first had (the journal, see ``_pagination``), so loaded pages stay
        contiguous while rows are inserted and deleted. A function may paginate once.

        Returns:
            ``{"page", "isDone", "continueCursor", "splitCursor", "pageStatus"}``;
            ``splitCursor`` and ``pageStatus`` are ``None`` unless the page should be split.

        Raises:
            ValueError: bad options, an invalid cursor (``InvalidCursor: ...``), or a second
                ``paginate`` in the same function.
        """
        o = PageOptions.parse(opts)
        tx = self._tx
        if tx.paginated:
            raise ValueError(
                "MultiplePaginatedDatabaseQueries: a function may run only one paginated query"
            )
        tx.paginated = True
        end = o.end_cursor if o.end_cursor is not None else tx.journal_in
        fp = query_fingerprint(self._table, self._index, self._lo, self._hi, self._reverse)
        start_key = decode_cursor(o.cursor, fp) if o.cursor is not None else b""
        if o.cursor is not None and start_key is None:
            # Starting at the end: nothing left.
            tx.journal_out = END
            return _page_result([], True, END, None, None)
        end_key: bytes | None = b""
        if end is not None:
            end_key = decode_cursor(end, fp, "endCursor")
        lo = hi = None
        if o.cursor is not None:
            assert start_key is not None
            if self._reverse:
                hi = start_key
            else:
                lo = start_key + b"\x00"
        if end is not None and end_key is not None:
            # The end cursor is inclusive: the page runs up to and including that key.
            if self._reverse:
                lo = end_key if lo is None else max(lo, end_key)
            else:
                hi = end_key + b"\x00" if hi is None else min(hi, end_key + b"\x00")
        bounded = end is not None
        max_rows = o.maximum_rows_read if not bounded else None
        max_bytes = o.maximum_bytes_read if not bounded else None
        page: list[Document] = []
        scanned: list[bytes] = []
        read_bytes = 0
        status: str | None = None
        stop_key: bytes | None = None  # the position the page ends at, when not the end
        scan = self._scan(lo, hi)
        filters = self._filters
        try:
            for key, doc in scan:
                if not bounded and len(page) >= o.num_items and all(f(doc) for f in filters):
                    # One more match exists: the page is full and not the last one.
                    stop_key = scanned[-1] if scanned else key
                    break
                if (max_rows is not None and len(scanned) >= max_rows) or (
                    max_bytes is not None and read_bytes >= max_bytes
                ):
                    status = "SplitRequired"
                    stop_key = scanned[-1]
                    break
                scanned.append(key)
                if max_bytes is not None or o.maximum_bytes_read is not None:
                    read_bytes += _doc_bytes(doc)
                if all(f(doc) for f in filters):
                    page.append(doc)
        finally:
            scan.finish()
        if stop_key is not None:
            cursor = encode_cursor(stop_key, fp)
        elif bounded:
            assert end is not None
            cursor = end
        else:
            cursor = END
        rows_limit = o.maximum_rows_read or MAX_ROWS_READ
        if status is None and (
            len(scanned) > soft_limit(rows_limit)
            or (o.maximum_bytes_read is not None and read_bytes > soft_limit(o.maximum_bytes_read))
            or len(page) > SOFT_MAX_PAGE_LEN
        ):
            status = "SplitRecommended"
        split = encode_cursor(scanned[len(scanned) // 2], fp) if len(scanned) > 2 else None
        tx.journal_out = cursor
        return _page_result(page, cursor == END, cursor, split, status)


def _doc_bytes(doc: Document) -> int:
    return len(orjson.dumps(value_to_json(doc)))


def _page_result(
    page: list[Document], done: bool, cursor: str, split: str | None, status: str | None
) -> dict[str, Any]:
    return {
        "page": page,
        "isDone": done,
        "continueCursor": cursor,
        "splitCursor": split,
        "pageStatus": status,
    }


class SystemReader:
    """``ctx.db.system``: read-only access to the system tables (``_scheduled_functions``)."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    def get(self, doc_id: str) -> Document | None:
        """The system document with this id, or ``None``."""
        table = self._tx.table_of(doc_id) if isinstance(doc_id, str) else None
        if table is not None and not table.startswith("_"):
            return None
        return self._tx.get(doc_id)

    def query(self, table: str) -> Query:
        """Start a query over the system table ``table``."""
        return Query(self._tx, table, system=True)


class DatabaseReader:
    """``ctx.db`` inside a query."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self.system = SystemReader(tx)

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or ``None``."""
        return self._tx.get(doc_id)

    def query(self, table: str) -> Query:
        """Start a query over ``table`` (``by_creation_time`` order unless ``with_index``)."""
        return Query(self._tx, table)

    def normalize_id(self, table: str, doc_id: Any) -> str | None:
        """``doc_id`` if it is a valid id for ``table``, else ``None``.

        As Convex's ``normalizeId``, this does not mean the document exists: ``get`` may
        still return ``None``.
        """
        if not isinstance(doc_id, str):
            return None
        return self._tx.normalize_id(table, doc_id)


class DatabaseWriter(DatabaseReader):
    """``ctx.db`` inside a mutation."""

    def insert(self, table: str, value: dict[str, Any]) -> str:
        """Insert a document; returns its ``_id``."""
        return self._tx.insert(table, value)

    def patch(self, doc_id: str, fields: dict[str, Any]) -> None:
        """Shallow-merge ``fields`` into the document."""
        self._tx.patch(doc_id, fields)

    def replace(self, doc_id: str, value: dict[str, Any]) -> None:
        """Replace the document's user fields."""
        self._tx.replace(doc_id, value)

    def delete(self, doc_id: str) -> None:
        """Delete the document."""
        self._tx.delete(doc_id)
