"""Transactions over the committed store plus pending overlays, against a brute-force model."""

from __future__ import annotations

import random
from typing import Any

import pytest

from marketpulse.reactive.engine._database import DatabaseWriter
from marketpulse.reactive.engine._overlay import Overlay
from marketpulse.reactive.engine._store import MemoryStore, Write
from marketpulse.reactive.engine._transaction import Transaction
from marketpulse.reactive.schema import Schema, Table

SCHEMA = Schema({"t": Table(indexes={"by_ab": ["a", "b"]})})


def doc(i: int, a: Any, b: Any) -> dict[str, Any]:
    return {"_id": f"d{i:04d}", "_creationTime": float(i), "a": a, "b": b}


@pytest.mark.parametrize("seed", range(8))
def test_scans_merge_store_pending_commits_and_own_writes(seed: int) -> None:
    rnd = random.Random(seed)
    store = MemoryStore(SCHEMA)
    state: dict[str, dict[str, Any]] = {}
    committed = [doc(i, rnd.randrange(4), float(rnd.randrange(10))) for i in range(40)]
    store.apply([Write("t", d["_id"], None, d) for d in committed])
    state.update((d["_id"], d) for d in committed)

    def random_writes(overlay: Overlay, start: int) -> None:
        for n in range(rnd.randrange(0, 40)):
            ids = sorted(state)
            choice = rnd.random()
            if choice < 0.4 or not ids:
                new = doc(start + n, rnd.randrange(4), float(rnd.randrange(10)))
            elif choice < 0.75:
                old = state[rnd.choice(ids)]
                new = {**old, "a": rnd.randrange(4), "b": float(rnd.randrange(10))}
            else:
                doc_id = rnd.choice(ids)
                overlay.set("t", doc_id, None)
                del state[doc_id]
                continue
            overlay.set("t", new["_id"], new)
            state[new["_id"]] = new

    base = Overlay()
    random_writes(base, 1000)
    tx = Transaction(store, writable=True, deadline=None, base=base)
    db = DatabaseWriter(tx)
    random_writes(tx.pending, 2000)
    for step in range(40):
        a = rnd.randrange(4)
        lo, hi = sorted(rnd.sample(range(11), 2))
        order = rnd.choice(["asc", "desc"])
        got = (
            db.query("t")
            .with_index("by_ab", lambda q, a=a, lo=lo, hi=hi: q.eq("a", a).gte("b", lo).lt("b", hi))
            .order(order)
            .collect()
        )
        expected = sorted(
            (d for d in state.values() if d["a"] == a and lo <= d["b"] < hi),
            key=lambda d: (d["b"], d["_creationTime"], d["_id"]),
            reverse=order == "desc",
        )
        assert got == expected
        # Point reads agree too, and interleaved writes are seen by the next scan.
        some = rnd.choice(sorted(state))
        assert db.get(some) == state[some]
        new = doc(3000 + step, a, float(lo))
        tx.pending.set("t", new["_id"], new)
        state[new["_id"]] = new
    # The net writes are computed against the state the transaction started from.
    for w in tx.writes():
        assert w.new == state.get(w.id)
        before = (
            base.tables["t"][w.id]
            if w.id in base.tables.get("t", {})
            else store.tables["t"].docs.get(w.id)
        )
        assert w.old == before


@pytest.mark.parametrize("seed", range(6))
def test_first_reads_and_records_what_a_one_row_scan_does(seed: int) -> None:
    rnd = random.Random(seed)
    store = MemoryStore(SCHEMA)
    committed = [doc(i, rnd.randrange(4), [float(rnd.randrange(10))]) for i in range(30)]
    store.apply([Write("t", d["_id"], None, d) for d in committed])
    keys = sorted(store.tables["t"].indexes["by_ab"].keys())
    bounds = [b"", *keys, keys[0][:3], keys[-1] + b"\xff"]
    for _ in range(60):
        lo, hi = sorted(rnd.sample(bounds, 2))
        reverse = rnd.random() < 0.5
        base = Overlay()
        if rnd.random() < 0.3:  # a pending commit in the table: the general path
            base.set("t", "d9999", doc(9999, rnd.randrange(4), [0.0]))
        fast = Transaction(store, writable=False, deadline=None, base=base)
        slow = Transaction(store, writable=False, deadline=None, base=base)
        got = fast.first("t", "by_ab", lo, hi, reverse)
        scan = slow.scan("t", "by_ab", lo, hi, reverse)
        want = next((d for _, d in scan), None)
        scan.finish()
        assert got == want
        assert fast.read_set.intervals == slow.read_set.intervals
        if got is not None and got["_id"] in store.tables["t"].docs:
            got["b"].append(1.0)  # a copy: the stored document is untouched
            assert store.tables["t"].docs[got["_id"]]["b"] != got["b"]


def test_mutable_bytes_are_stored_as_bytes() -> None:
    # A bytearray used to be stored as given: its writer, or a query changing "its copy",
    # changed the stored document (and left its index keys stale).
    store = MemoryStore(SCHEMA)
    tx = Transaction(store, writable=True, deadline=None)
    buf, nested = bytearray(b"aa"), bytearray(b"nn")
    doc_id = tx.insert("t", {"a": buf, "b": [memoryview(nested)], "c": {"d": bytearray(b"d")}})
    other = tx.insert("t", {"a": 1.0})
    tx.patch(other, {"b": bytearray(b"p")})
    tx.replace(other, {"a": bytearray(b"r"), "b": (bytearray(b"t"),)})
    buf[:] = b"zz"
    nested[:] = b"zz"
    store.apply(tx.writes())
    reader = Transaction(store, writable=False, deadline=None)
    got, replaced = reader.get(doc_id), reader.get(other)
    assert got is not None and replaced is not None
    assert (got["a"], got["b"], got["c"]) == (b"aa", [b"nn"], {"d": b"d"})
    assert (replaced["a"], replaced["b"]) == (b"r", [b"t"])
    stored = [store.tables["t"].docs[i] for i in (doc_id, other)]
    assert type(stored[0]["a"]) is bytes and type(stored[0]["b"][0]) is bytes
    assert type(stored[1]["a"]) is bytes and type(stored[1]["b"][0]) is bytes


def test_new_ids_are_32_characters_of_the_whole_alphabet() -> None:
    from marketpulse.reactive.engine._transaction import _ID_ALPHABET, new_id

    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and set(i) <= set(_ID_ALPHABET) for i in ids)
    counts = {c: 0 for c in _ID_ALPHABET}
    for i in ids:
        for c in i:
            counts[c] += 1
    # 64,000 characters over 32 letters: 2,000 each on average; a biased map would skew some.
    assert min(counts.values()) > 1700 and max(counts.values()) < 2300, counts
