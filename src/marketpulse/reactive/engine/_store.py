"""The committed state in memory: documents and one sorted map per index.

Only the engine changes it, synchronously, after a commit is durable; so any synchronous
function run sees one consistent snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sortedcontainers import SortedDict

from ..schema import BUILTIN_INDEXES, IndexDef, Schema
from ..values import Int64
from ._keys import index_key

__all__ = ["NEW_IDS", "Document", "MemoryStore", "TableData", "Write"]

Document = dict[str, Any]

_ABSENT = object()

_FLAT = frozenset({str, float, int, bool, type(None), bytes, Int64})
"""Exact types of field values that need no copy on read. Anything else (containers, and any
type not listed) marks the document nested: copied on read, which is always safe."""


def _is_flat(doc: Document) -> bool:
    # One C-level pass over the value types (a generator of isinstance calls cost ~1.5 µs a
    # document, a few percent of a 200-market commit's apply).
    return _FLAT.issuperset(map(type, doc.values()))


NEW_IDS = ""
"""The pseudo-table (no table has an empty name) under which a read of an id found in no table
is recorded, with the ``by_id`` key: every insert touches its id's key there too. On a node of a
shared log an id another node has just created is unknown until this node reads that commit, so
a ``get`` that missed it must re-run when it arrives (ids do not name their table)."""

UNMOVED_KEYS_KEPT = 4096
"""Documents per table whose unmoved index keys are kept (see ``TableData``)."""


@dataclass(frozen=True)
class Write:
    """One document change of a commit: ``old`` and/or ``new`` are ``None`` for insert/delete."""

    table: str
    id: str
    old: Document | None
    new: Document | None


class TableData:
    """One table: documents by id plus a ``SortedDict`` (key -> id) per index."""

    def __init__(self, name: str, index_defs: dict[str, IndexDef]) -> None:
        self.name = name
        self.index_defs = index_defs
        self.docs: dict[str, Document] = {}
        self.indexes: dict[str, SortedDict] = {name: SortedDict() for name in index_defs}
        # Ids of documents holding containers (need a deep copy on read); the rest are flat.
        self.nested: set[str] = set()
        # A document's index keys as its unmoved patches report them (see ``put``): a book,
        # price or open-candles document is patched many times a second with the same indexed
        # fields, and encoding its 3-4 keys each time made a 32-market group's apply ~1.5x
        # as long (bench/results/HISTORY.md, session 36). Kept from a document's first unmoved
        # patch (append-only tables hold none), dropped by any put that moves a key, and at
        # most UNMOVED_KEYS_KEPT documents' worth: a table whose documents are each patched
        # once must not double its keys' memory. Sound because a stored document, nested
        # containers included, is never changed in place (reads and writes copy, a patch
        # makes a new document) and every ``old`` given to ``put`` is the stored document:
        # the same field object then encodes to the same key.
        self._unmoved_keys: dict[str, list[tuple[str, str, bytes]]] = {}
        # Top-level fields any index key is made of (``_id`` ends every key).
        self._indexed_fields = tuple(
            dict.fromkeys(
                ["_id", *(f.split(".")[0] for d in index_defs.values() for f in d.key_fields)]
            )
        )

    def put(
        self,
        doc_id: str,
        old: Document | None,
        new: Document | None,
        touched: list[tuple[str, str, bytes]] | None = None,
    ) -> None:
        """Replace ``old`` by ``new`` (either may be ``None``); append every old and new index
        key to ``touched`` as ``(table, index, key)``."""
        if (
            old is not None
            and new is not None
            and all(old.get(f, _ABSENT) is new.get(f, _ABSENT) for f in self._indexed_fields)
        ):
            # A patch that leaves every indexed field the same object (the usual case: a
            # patch copies the untouched fields) moves no key: the keys are the document's
            # as its first unmoved patch encoded them, and the sorted maps stay as they are.
            if touched is not None:
                keys = self._unmoved_keys.get(doc_id)
                if keys is None:
                    if len(self._unmoved_keys) >= UNMOVED_KEYS_KEPT:
                        self._unmoved_keys.clear()  # the hot documents come back at once
                    keys = self._unmoved_keys[doc_id] = self._touched(
                        self._key_changes(None, new), inserted=False
                    )
                touched += keys
            self._store_doc(doc_id, new)
            return
        self._unmoved_keys.pop(doc_id, None)
        changes = self._key_changes(old, new)
        for name, old_key, new_key in changes:
            if old_key != new_key:
                # An unchanged key (a patch of other fields) keeps its place: no re-sort.
                idx = self.indexes[name]
                if old_key is not None:
                    del idx[old_key]
                if new_key is not None:
                    idx[new_key] = doc_id
        if touched is not None:
            touched += self._touched(changes, inserted=old is None)
        if new is None:
            self.docs.pop(doc_id, None)
            self.nested.discard(doc_id)
        else:
            self._store_doc(doc_id, new)

    def _key_changes(
        self, old: Document | None, new: Document | None
    ) -> list[tuple[str, bytes | None, bytes | None]]:
        """``(index, old key, new key)`` of each index (``None`` for a missing side)."""
        old_cache: dict[str, bytes] = {}
        new_cache: dict[str, bytes] = {}
        return [
            (
                name,
                index_key(old, idef.key_fields, old_cache) if old is not None else None,
                index_key(new, idef.key_fields, new_cache) if new is not None else None,
            )
            for name, idef in self.index_defs.items()
        ]

    def _touched(
        self, changes: list[tuple[str, bytes | None, bytes | None]], inserted: bool
    ) -> list[tuple[str, str, bytes]]:
        """The keys ``changes`` write, as ``put`` reports them: each old key, and each new
        one that differs from its old; an ``inserted`` document's id also under
        :data:`NEW_IDS`."""
        touched: list[tuple[str, str, bytes]] = []
        for name, old_key, new_key in changes:
            if old_key is not None:
                touched.append((self.name, name, old_key))
            if new_key is not None and new_key != old_key:
                touched.append((self.name, name, new_key))
                if inserted and name == "by_id":
                    touched.append((NEW_IDS, name, new_key))
        return touched

    def keys_touched(
        self, old: Document | None, new: Document | None
    ) -> list[tuple[str, str, bytes]]:
        """Every index key that replacing ``old`` by ``new`` writes, as :meth:`put` reports
        them to its ``touched``, without changing anything."""
        return self._touched(self._key_changes(old, new), inserted=old is None)

    def _store_doc(self, doc_id: str, new: Document) -> None:
        self.docs[doc_id] = new
        if _is_flat(new):
            self.nested.discard(doc_id)
        else:
            self.nested.add(doc_id)

    def irange(self, index: str, lo: bytes, hi: bytes, reverse: bool) -> Iterator[bytes]:
        """Keys of ``index`` in ``[lo, hi)``."""
        it: Iterator[bytes] = self.indexes[index].irange(
            lo, hi, inclusive=(True, False), reverse=reverse
        )
        return it


class MemoryStore:
    """All tables, plus which table each document id belongs to."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.tables: dict[str, TableData] = {}
        self.id_table: dict[str, str] = {}
        for name in schema.tables:
            self.table(name)

    def table(self, name: str) -> TableData:
        """The table called ``name``, created empty (built-in indexes only) if undeclared."""
        data = self.tables.get(name)
        if data is None:
            declared = self.schema.tables.get(name)
            defs = (
                declared.index_defs(name)
                if declared is not None
                else {d.name: d for d in BUILTIN_INDEXES}
            )
            data = self.tables[name] = TableData(name, defs)
        return data

    def get(self, doc_id: str) -> tuple[str, Document] | None:
        """The table and document with this id, or ``None``."""
        table = self.id_table.get(doc_id)
        if table is None:
            return None
        return table, self.tables[table].docs[doc_id]

    def load(self, documents: Iterable[tuple[str, Document]]) -> None:
        """Bulk-insert documents into empty tables (start-up): one sort per index instead of
        one sorted insertion per document."""
        by_table: dict[str, list[Document]] = {}
        for table, doc in documents:
            by_table.setdefault(table, []).append(doc)
        for table, docs in by_table.items():
            data = self.table(table)
            if data.docs:
                self.apply([Write(table, d["_id"], None, d) for d in docs])
                continue
            data.docs.update((d["_id"], d) for d in docs)
            data.nested.update(d["_id"] for d in docs if not _is_flat(d))
            entries: dict[str, list[tuple[bytes, str]]] = {n: [] for n in data.index_defs}
            for d in docs:
                cache: dict[str, bytes] = {}
                for name, idef in data.index_defs.items():
                    entries[name].append((index_key(d, idef.key_fields, cache), d["_id"]))
            for name, items in entries.items():
                data.indexes[name].update(items)
            self.id_table.update((d["_id"], table) for d in docs)

    def apply(self, writes: list[Write]) -> list[tuple[str, str, bytes]]:
        """Apply a committed set of writes (each ``old`` must be the current document).

        Returns:
            Every old and new index key written, as ``(table, index, key)``: what the
            subscriptions are matched against.
        """
        touched: list[tuple[str, str, bytes]] = []
        for w in writes:
            self.table(w.table).put(w.id, w.old, w.new, touched)
            if w.new is None:
                self.id_table.pop(w.id, None)
            else:
                self.id_table[w.id] = w.table
        return touched
