"""The in-memory committed state: index maintenance on put, including the patch fast path."""

from __future__ import annotations

from marketpulse.reactive.engine._keys import index_key
from marketpulse.reactive.engine._store import MemoryStore, Write
from marketpulse.reactive.schema import Schema, Table


def _store() -> MemoryStore:
    return MemoryStore(Schema({"books": Table(indexes={"by_ticker": ["ticker"]})}))


def _keys(store: MemoryStore, index: str) -> list[bytes]:
    return list(store.tables["books"].indexes[index].keys())


def _key(store: MemoryStore, doc: dict[str, object], index: str = "by_ticker") -> bytes:
    return index_key(doc, store.tables["books"].index_defs[index].key_fields)


def _doc(ticker: str, bids: float) -> dict[str, object]:
    return {"_id": "b1", "_creationTime": 1.0, "ticker": ticker, "bids": bids}


def test_patch_of_unindexed_fields_keeps_keys_and_reports_each_once() -> None:
    store = _store()
    old = _doc("A", 1.0)
    store.apply([Write("books", "b1", None, old)])
    before = {name: _keys(store, name) for name in store.tables["books"].indexes}
    new = dict(old)
    new["bids"] = 2.0
    touched = store.apply([Write("books", "b1", old, new)])
    assert {name: _keys(store, name) for name in before} == before
    table = store.tables["books"]
    expected = [
        ("books", name, index_key(new, idef.key_fields)) for name, idef in table.index_defs.items()
    ]
    assert touched == expected
    assert store.get("b1") == ("books", new)


def test_patch_with_an_equal_but_new_indexed_value_is_handled_like_any_write() -> None:
    store = _store()
    old = _doc("AB", 1.0)
    store.apply([Write("books", "b1", None, old)])
    new = dict(old)
    new["ticker"] = "".join(["A", "B"])  # equal, not the same object
    store.apply([Write("books", "b1", old, new)])
    assert _keys(store, "by_ticker") == [_key(store, new)]


def test_patch_that_moves_an_indexed_field_moves_its_key() -> None:
    store = _store()
    old = _doc("A", 1.0)
    store.apply([Write("books", "b1", None, old)])
    new = dict(old)
    new["ticker"] = "B"
    touched = store.apply([Write("books", "b1", old, new)])
    old_key, new_key = _key(store, old), _key(store, new)
    assert _keys(store, "by_ticker") == [new_key]
    assert ("books", "by_ticker", old_key) in touched
    assert ("books", "by_ticker", new_key) in touched


def test_patch_to_an_equal_comparing_value_of_another_type_moves_its_key() -> None:
    # 1.0 == True in Python, but they are different Convex values with different keys.
    store = _store()
    old = _doc("A", 1.0)
    old["ticker"] = 1.0
    store.apply([Write("books", "b1", None, old)])
    new = dict(old)
    new["ticker"] = True
    store.apply([Write("books", "b1", old, new)])
    assert _keys(store, "by_ticker") == [_key(store, new)]
    assert _key(store, new) != _key(store, old)
