"""Pending writes with sorted index views, so scans over them cost O(log n + matches).

A mutation sees two overlays on top of the committed store: the net writes of earlier
commits still on their way to disk (the engine's) and its own. Both can hold hundreds of
documents (a market data batch), and a mutation may run hundreds of index lookups, so
merging by scanning every pending document per lookup would be quadratic. Each overlay
therefore keeps, per (table, index) that has been scanned, a ``SortedDict`` of the index keys
of its live documents, brought up to date lazily from the ids written since.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from ..schema import IndexDef
from ._keys import index_key
from ._store import Document

__all__ = ["Overlay"]


class _View:
    __slots__ = ("key_fields", "key_of", "keys", "stale", "syncing")

    def __init__(self, key_fields: tuple[str, ...], ids: Iterator[str]) -> None:
        self.key_fields = key_fields
        self.keys = SortedDict()  # index key -> id, for documents present in the overlay
        self.key_of: dict[str, bytes] = {}
        self.stale: set[str] = set(ids)
        # Left True by a sync that was interrupted (the watchdog can stop a function run at
        # any bytecode, even inside SortedDict): such a view is rebuilt, never trusted.
        self.syncing = False

    def sync(self, docs: dict[str, Document | None]) -> None:
        self.syncing = True
        keys, key_of = self.keys, self.key_of
        for doc_id in self.stale:
            old = key_of.pop(doc_id, None)
            if old is not None:
                del keys[old]
            doc = docs.get(doc_id)
            if doc is not None:
                key = index_key(doc, self.key_fields)
                keys[key] = doc_id
                key_of[doc_id] = key
        self.stale.clear()
        self.syncing = False


class Overlay:
    """table -> document id -> new document (``None`` = deleted), in write order."""

    __slots__ = ("_views", "tables")

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Document | None]] = {}
        self._views: dict[str, dict[str, _View]] = {}

    def __bool__(self) -> bool:
        return bool(self.tables)

    def set(self, table: str, doc_id: str, doc: Document | None) -> None:
        """Record the new state of a document."""
        self.tables.setdefault(table, {})[doc_id] = doc
        views = self._views.get(table)
        if views:
            for view in views.values():
                view.stale.add(doc_id)

    def lookup(self, doc_id: str) -> tuple[str, Document | None] | None:
        """``(table, doc or None)`` if the overlay holds this id."""
        for table, docs in self.tables.items():
            if doc_id in docs:
                return table, docs[doc_id]
        return None

    def in_range(
        self, table: str, idef: IndexDef, lo: bytes, hi: bytes
    ) -> list[tuple[bytes, str, Document]]:
        """The overlay's live documents of ``table`` whose ``idef`` key is in ``[lo, hi)``,
        ascending, as ``(key, id, doc)`` (a list: later writes cannot disturb a running scan).
        """
        docs = self.tables.get(table)
        if not docs:
            return []
        views = self._views.setdefault(table, {})
        view = views.get(idef.name)
        if view is None or view.syncing:
            view = views[idef.name] = _View(idef.key_fields, iter(docs))
        if view.stale:
            view.sync(docs)
        out = []
        for key in view.keys.irange(lo, hi, inclusive=(True, False)):
            doc_id = view.keys[key]
            doc = docs[doc_id]
            assert doc is not None
            out.append((key, doc_id, doc))
        return out
