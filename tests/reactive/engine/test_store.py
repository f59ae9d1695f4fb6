"""The in-memory committed state: index maintenance on put, including the patch fast path."""

from __future__ import annotations

import pytest

from marketpulse.reactive.engine import _store as store_module
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


def _reported(store: MemoryStore, doc: dict[str, object]) -> list[tuple[str, str, bytes]]:
    table = store.tables["books"]
    return [("books", n, index_key(doc, d.key_fields)) for n, d in table.index_defs.items()]


def test_patches_after_a_key_move_report_the_moved_keys() -> None:
    # Unmoved patches reuse the keys their first encoding found; a move must replace them.
    store = _store()
    first = _doc("A", 1.0)
    store.apply([Write("books", "b1", None, first)])
    second = {**first, "bids": 2.0}
    assert store.apply([Write("books", "b1", first, second)]) == _reported(store, first)
    moved = {**second, "ticker": "B"}
    store.apply([Write("books", "b1", second, moved)])
    after = {**moved, "bids": 3.0}
    assert store.apply([Write("books", "b1", moved, after)]) == _reported(store, moved)
    assert ("books", "by_ticker", _key(store, first)) not in _reported(store, moved)


def test_a_deleted_and_reinserted_id_reports_its_new_keys() -> None:
    store = _store()
    first = _doc("A", 1.0)
    store.apply([Write("books", "b1", None, first)])
    store.apply([Write("books", "b1", first, {**first, "bids": 2.0})])
    store.apply([Write("books", "b1", {**first, "bids": 2.0}, None)])
    again = _doc("C", 1.0)
    store.apply([Write("books", "b1", None, again)])
    patched = {**again, "bids": 5.0}
    assert store.apply([Write("books", "b1", again, patched)]) == _reported(store, again)


def test_the_kept_keys_stay_bounded_and_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "UNMOVED_KEYS_KEPT", 3)
    store = _store()
    docs = {
        f"b{i}": {"_id": f"b{i}", "_creationTime": 1.0, "ticker": f"T{i}", "bids": 1.0}
        for i in range(10)
    }
    store.apply([Write("books", i, None, d) for i, d in docs.items()])
    for _ in range(2):
        for i, old in docs.items():
            new = docs[i] = {**old, "bids": old["bids"] + 1}
            assert store.apply([Write("books", i, old, new)]) == _reported(store, old)
            assert len(store.tables["books"]._unmoved_keys) <= 3
