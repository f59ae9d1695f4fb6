"""A transaction: reads at the committed state plus its own pending writes.

Queries use a read-only transaction that records its read set; mutations use a writable one
whose writes stay in an overlay (so reads see them) until the engine commits them. Nothing
here touches the committed state: a mutation that raises simply drops its transaction.

A mutation may also see a ``base`` overlay: the net writes of earlier commits that are on
their way to disk (pipelined commits), so it runs on the state every earlier commit leaves.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import QueryLimitError
from ..schema import BUILTIN_INDEXES, IndexDef
from ..values import ConvexValueError, check_value
from ._keys import encode_value, successor
from ._overlay import Overlay
from ._readset import ReadSet
from ._store import NEW_IDS, Document, MemoryStore, Write

__all__ = ["Scan", "Transaction", "copy_value", "is_id", "new_id"]

# Index entries a guarded scan reads per hold of the guard: short enough that a commit waits
# microseconds for it, long enough that the lock costs little per document.
_GUARDED_CHUNK = 64
_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_BUILTIN_DEFS = {d.name: d for d in BUILTIN_INDEXES}


# Byte -> its id character (``b & 31``): one C-level translate instead of a generator over
# the 32 bytes (0.6 vs 2.3 µs an id; a 10,000 msg/s group inserts a few hundred documents).
_ID_TABLE = bytes(ord(_ID_ALPHABET[b & 31]) for b in range(256))


def new_id() -> str:
    """A fresh random document id (32 characters of Crockford-style base32)."""
    # os.urandom is what secrets.token_bytes calls, less two Python frames per insert.
    return os.urandom(32).translate(_ID_TABLE).decode("ascii")


def is_id(text: str) -> bool:
    """Whether ``text`` has the form of an id :func:`new_id` makes."""
    return len(text) == 32 and not text.strip(_ID_ALPHABET)


_LEAVES = frozenset({str, float, int, bool, type(None), bytes})
"""Exact types shared as they are: immutable. Anything else goes through :func:`copy_value`."""


def copy_value(value: Any) -> Any:
    """Copy the containers of a value so callers cannot mutate stored documents.

    Mutable bytes (``bytearray``, ``memoryview``) become ``bytes``: what every write stores,
    so no read can hand out a buffer another caller shares.
    """
    # Leaves are recognised by exact type in a set, inline: every read and write copies, and
    # an isinstance against a tuple of the mutable types cost a third more (0.46 µs a price).
    if isinstance(value, dict):
        return {k: v if type(v) in _LEAVES else copy_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _LEAVES else copy_value(v) for v in value]
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


class Transaction:
    """One function run's view of the database.

    Args:
        store: the committed state.
        writable: whether writes are allowed (mutations).
        deadline: ``time.monotonic()`` value after which any db operation raises
            :class:`QueryLimitError`; ``None`` for no limit.
        creation_time: returns a fresh ``_creationTime`` (float ms) for inserts.
        guard: for a read-only run on another thread than the event loop's (see
            ``_offloop``): the lock the loop applies commits under, taken for each read of the
            committed state, so every read sees it between two commits.
    """

    def __init__(
        self,
        store: MemoryStore,
        *,
        writable: bool,
        deadline: float | None,
        time_limit: float | None = None,
        creation_time: Callable[[], float] | None = None,
        base: Overlay | None = None,
        journal: str | None = None,
        guard: threading.Lock | None = None,
    ) -> None:
        self.store = store
        self.guard = guard
        self.writable = writable
        self.deadline = deadline
        self.time_limit = time_limit
        self.read_set = ReadSet()
        # table -> id -> new document (None = deleted), in write order.
        self.pending = Overlay()
        self.base = base if base is not None else Overlay()
        self._creation_time = creation_time or (lambda: time.time() * 1000.0)
        # Pagination (see ``_pagination``): the end a subscribed page had on its previous
        # run, whether this run paginated, and the end it stopped at.
        self.journal_in = journal
        self.paginated = False
        self.journal_out: str | None = None

    # -- limits ---------------------------------------------------------------------------
    def check(self) -> None:
        """Raise when past the deadline.

        The check is cooperative: it runs on every database operation and every document a
        scan yields. A pure-CPU loop that never touches the database is stopped by the
        engine's watchdog instead (see ``_watchdog``).
        """
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryLimitError(f"Function execution timed out (limit {self.time_limit or 0:g}s)")

    # -- reads ----------------------------------------------------------------------------
    def index_def(self, table: str, index: str) -> IndexDef:
        """The definition of ``table.index``.

        Raises:
            ValueError: no such index.
        """
        data = self.store.tables.get(table)
        if data is not None:
            defs = data.index_defs
        else:
            declared = self.store.schema.tables.get(table)
            defs = declared.index_defs(table) if declared is not None else _BUILTIN_DEFS
        idef = defs.get(index)
        if idef is None:
            raise ValueError(f"Index {table}.{index} not found.")
        return idef

    def _lookup(self, doc_id: str) -> tuple[str, Document | None] | None:
        found = self.pending.lookup(doc_id) or self.base.lookup(doc_id)
        if found is not None:
            return found
        if self.guard is not None:
            with self.guard:
                return self.store.get(doc_id)
        return self.store.get(doc_id)

    def get(self, doc_id: Any) -> Document | None:
        """The document with this id (a copy), or ``None``; records the read."""
        self.check()
        if not isinstance(doc_id, str):
            raise TypeError(f"document id must be a string, got {type(doc_id).__name__}")
        found = self._lookup(doc_id)
        key = encode_value(doc_id)
        if found is None:
            # Not in any table: on a node of a shared log it may be another node's insert
            # this node has not read yet, which touches this key (see NEW_IDS).
            self.read_set.add(NEW_IDS, "by_id", key, successor(key))
            return None
        table, doc = found
        self.read_set.add(table, "by_id", key, successor(key))
        return copy_value(doc) if doc is not None else None

    def table_of(self, doc_id: str) -> str | None:
        """The table of an existing (possibly pending) document."""
        found = self._lookup(doc_id)
        return found[0] if found is not None and found[1] is not None else None

    def normalize_id(self, table: str, doc_id: str) -> str | None:
        """``doc_id`` if it has an id's form and names no document of another table.

        As Convex's ``normalizeId``, it does not check that the document exists. Ids do not
        carry their table here, so a document found in another table is what refuses one;
        that answer changes when the document is deleted, so it is recorded as a read.
        """
        self.check()
        if not is_id(doc_id):
            return None
        found = self._lookup(doc_id)
        if found is not None and found[0] == table:
            return doc_id  # a document never changes table: nothing to record
        key = encode_value(doc_id)
        if found is None:
            # Unknown here, but on a node of a shared log another node may have just made it
            # in another table (see NEW_IDS).
            self.read_set.add(NEW_IDS, "by_id", key, successor(key))
            return doc_id
        self.read_set.add(found[0], "by_id", key, successor(key))
        return None

    def scan(self, table: str, index: str, lo: bytes, hi: bytes, reverse: bool) -> Scan:
        """Iterate ``(key, document)`` pairs of ``table.index`` in ``[lo, hi)``."""
        self.check()
        return Scan(self, table, self.index_def(table, index), lo, hi, reverse)

    def first(self, table: str, index: str, lo: bytes, hi: bytes, reverse: bool) -> Document | None:
        """The first document of ``table.index`` in ``[lo, hi)`` (a copy), or ``None``.

        Reads and records exactly what a :class:`Scan` stopped after one document would. With
        no pending write in the table it is one bisection of the index: a point lookup by
        ticker is most of what a market data batch and its re-runs read, and the generic scan
        (generators, overlay merge) costs several times the lookup itself.
        """
        if self.pending.tables.get(table) or self.base.tables.get(table):
            scan = self.scan(table, index, lo, hi, reverse)
            try:
                return next((doc for _, doc in scan), None)
            finally:
                scan.finish()
        self.check()
        idef = self.index_def(table, index)
        if self.guard is not None:
            with self.guard:
                key, doc, nested = self._first_committed(table, idef.name, lo, hi, reverse)
        else:
            key, doc, nested = self._first_committed(table, idef.name, lo, hi, reverse)
        if key is None or doc is None:
            self.read_set.add(table, idef.name, lo, hi)
            return None
        if reverse:
            self.read_set.add(table, idef.name, key, hi)
        else:
            self.read_set.add(table, idef.name, lo, successor(key))
        # Committed documents are never changed in place (a commit stores new ones), so the
        # copy needs no guard.
        return copy_value(doc) if nested else dict(doc)

    def _first_committed(
        self, table: str, index: str, lo: bytes, hi: bytes, reverse: bool
    ) -> tuple[bytes | None, Document | None, bool]:
        """The committed state's first (key, document, nested?) of ``[lo, hi)``."""
        data = self.store.tables.get(table)
        if data is None:
            return None, None, False
        # The range's first key through an iterator: a bisection and a positional read of
        # the sorted keys cost 1.4-2.7x as much (the position walks the key list's index).
        key = next(data.irange(index, lo, hi, reverse), None)
        if key is None:
            return None, None, False
        doc_id = data.indexes[index][key]
        return key, data.docs[doc_id], doc_id in data.nested

    # -- writes ---------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if not self.writable:
            raise TypeError("queries cannot write; use a mutation")

    @staticmethod
    def _check_user_fields(value: Any, what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise TypeError(f"{what} expects an object, got {type(value).__name__}")
        for system in ("_id", "_creationTime"):
            if system in value:
                raise ValueError(f"{what}: the system field {system} cannot be set")
        try:
            check_value(value)
        except ConvexValueError as exc:
            raise ValueError(f"{what}: {exc}") from exc
        return value

    def insert(self, table: str, value: Any, *, system: bool = False) -> str:
        """Insert a document; returns its new ``_id``. Only ``system`` writers (the engine's
        own modules, such as the scheduler) may write tables whose name starts with ``_``."""
        self.check()
        self._require_writable()
        if not isinstance(table, str) or not table or table.startswith("_") != system:
            raise ValueError(f"invalid table name {table!r}")
        fields = self._check_user_fields(value, "insert")
        doc_id = new_id()
        doc: Document = {"_id": doc_id, "_creationTime": self._creation_time()}
        doc.update(copy_value(fields))
        self.pending.set(table, doc_id, doc)
        return doc_id

    def _existing(self, doc_id: Any, what: str, system: bool = False) -> tuple[str, Document]:
        if not isinstance(doc_id, str):
            raise TypeError(f"{what}: document id must be a string")
        found = self._lookup(doc_id)
        if found is None or found[1] is None:
            raise ValueError(f"{what}: document {doc_id!r} does not exist")
        if found[0].startswith("_") and not system:
            raise ValueError(f"{what}: {found[0]} is a system table and read-only")
        return found[0], found[1]

    def patch(self, doc_id: str, fields: Any, *, system: bool = False) -> None:
        """Set (shallow-merge) fields of an existing document."""
        self.check()
        self._require_writable()
        table, doc = self._existing(doc_id, "patch", system)
        fields = self._check_user_fields(fields, "patch")
        new = dict(doc)
        new.update(copy_value(fields))
        self.pending.set(table, doc_id, new)
        # Reading the old document to patch it is a read of that document.
        key = encode_value(doc_id)
        self.read_set.add(table, "by_id", key, successor(key))

    def replace(self, doc_id: str, value: Any) -> None:
        """Replace all user fields of an existing document."""
        self.check()
        self._require_writable()
        table, doc = self._existing(doc_id, "replace")
        fields = self._check_user_fields(value, "replace")
        new: Document = {"_id": doc["_id"], "_creationTime": doc["_creationTime"]}
        new.update(copy_value(fields))
        self.pending.set(table, doc_id, new)

    def delete(self, doc_id: str, *, system: bool = False) -> None:
        """Delete an existing document."""
        self.check()
        self._require_writable()
        table, _ = self._existing(doc_id, "delete", system)
        self.pending.set(table, doc_id, None)

    def writes(self) -> list[Write]:
        """The net changes against the committed state, in write order."""
        out: list[Write] = []
        for table, docs in self.pending.tables.items():
            committed = self.store.tables.get(table)
            base = self.base.tables.get(table, {})
            for doc_id, new in docs.items():
                if doc_id in base:
                    old = base[doc_id]
                else:
                    old = committed.docs.get(doc_id) if committed is not None else None
                if old is None and new is None:
                    continue
                out.append(Write(table, doc_id, old, new))
        return out


class Scan:
    """A lazy index scan that records, when finished, the key interval it actually covered."""

    def __init__(
        self, tx: Transaction, table: str, idef: IndexDef, lo: bytes, hi: bytes, reverse: bool
    ) -> None:
        self.tx = tx
        self.table = table
        self.idef = idef
        self.lo = lo
        self.hi = hi
        self.reverse = reverse
        self.last_key: bytes | None = None
        self.exhausted = False
        self._finished = False

    def _committed(
        self, own: dict[str, Document | None], base: dict[str, Document | None]
    ) -> Iterator[tuple[bytes, Document]]:
        if self.tx.guard is not None:
            yield from self._committed_guarded(self.tx.guard)
            return
        data = self.tx.store.tables.get(self.table)
        if data is None:
            return
        ids = data.indexes[self.idef.name]
        docs = data.docs
        nested = data.nested
        for key in data.irange(self.idef.name, self.lo, self.hi, self.reverse):
            doc_id = ids[key]
            if doc_id in own or doc_id in base:
                continue  # superseded by a pending write
            # Copies keep handlers from mutating stored documents; flat ones copy at C speed.
            yield key, copy_value(docs[doc_id]) if doc_id in nested else dict(docs[doc_id])

    def _committed_guarded(self, guard: threading.Lock) -> Iterator[tuple[bytes, Document]]:
        """The committed documents in chunks, each read under ``guard`` and re-sought after the
        previous chunk's last key: a commit between two chunks may move the index's internal
        positions, never a key. (Only read-only runs are guarded: no pending writes.)"""
        lo, hi, name = self.lo, self.hi, self.idef.name
        while True:
            with guard:
                data = self.tx.store.tables.get(self.table)
                if data is None:
                    return
                ids, docs, nested = data.indexes[name], data.docs, data.nested
                chunk = []
                for key in data.irange(name, lo, hi, self.reverse):
                    doc_id = ids[key]
                    chunk.append((key, docs[doc_id], doc_id in nested))
                    if len(chunk) == _GUARDED_CHUNK:
                        break
            for key, doc, deep in chunk:
                yield key, copy_value(doc) if deep else dict(doc)
            if len(chunk) < _GUARDED_CHUNK:
                return
            if self.reverse:
                hi = chunk[-1][0]
            else:
                lo = successor(chunk[-1][0])

    def __iter__(self) -> Iterator[tuple[bytes, Document]]:
        own = self.tx.pending.tables.get(self.table) or {}
        base = self.tx.base.tables.get(self.table) or {}
        source: Iterator[tuple[bytes, Document]] = self._committed(own, base)
        if own or base:
            extra = [
                (key, doc)
                for key, doc_id, doc in self.tx.base.in_range(
                    self.table, self.idef, self.lo, self.hi
                )
                if doc_id not in own
            ]
            extra += [
                (key, doc)
                for key, _, doc in self.tx.pending.in_range(self.table, self.idef, self.lo, self.hi)
            ]
            if extra:
                extra.sort(key=_first, reverse=self.reverse)
                copies = ((k, copy_value(d)) for k, d in extra)
                source = heapq.merge(source, copies, key=_first, reverse=self.reverse)
        check = self.tx.check
        for key, doc in source:
            check()
            self.last_key = key
            yield key, doc
        self.exhausted = True

    def finish(self) -> None:
        """Record the covered interval in the transaction's read set (idempotent)."""
        if self._finished:
            return
        self._finished = True
        rs = self.tx.read_set
        if self.exhausted:
            rs.add(self.table, self.idef.name, self.lo, self.hi)
        elif self.last_key is not None:
            if self.reverse:
                rs.add(self.table, self.idef.name, self.last_key, self.hi)
            else:
                rs.add(self.table, self.idef.name, self.lo, successor(self.last_key))


def _first(entry: tuple[bytes, Document]) -> bytes:
    return entry[0]
