"""The order-preserving index key encoding."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from marketpulse.reactive.engine._keys import MISSING, TOP, encode_value, index_key, successor
from marketpulse.reactive.values import Int64

scalars = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=8),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        # Few names, in any insertion order: objects that share fields, in other orders.
        | st.dictionaries(st.sampled_from(["a", "b", "ab", "c"]), inner, max_size=3)
    ),
    max_leaves=8,
)

_RANK = {type(None): 0, Int64: 1, float: 2, bool: 3, str: 4, bytes: 5, list: 6, dict: 7}


def convex_cmp_key(v: Any) -> Any:
    """A Python sort key implementing Convex's order for the strategies above."""
    rank = _RANK[type(v)]
    if isinstance(v, list):
        return (rank, [convex_cmp_key(x) for x in v])
    if isinstance(v, dict):
        # Convex orders objects as their (field, value) pairs sorted by field name.
        return (rank, [(k.encode("utf-8"), convex_cmp_key(v[k])) for k in sorted(v)])
    if isinstance(v, float):
        return (rank, (v, math.copysign(1.0, v)))  # -0.0 before 0.0
    if isinstance(v, str):
        return (rank, v.encode("utf-8"))
    return (rank, v)


@given(values, values)
def test_encoding_preserves_order(a: Any, b: Any) -> None:
    ka, kb = convex_cmp_key(a), convex_cmp_key(b)
    ea, eb = encode_value(a), encode_value(b)
    assert (ea < eb) == (ka < kb)
    assert (ea == eb) == (ka == kb)


@given(st.lists(values, min_size=1, max_size=3), st.lists(values, min_size=1, max_size=3))
def test_compound_keys_order_lexicographically(a: list[Any], b: list[Any]) -> None:
    if len(a) != len(b):
        return
    ea = b"".join(encode_value(v) for v in a)
    eb = b"".join(encode_value(v) for v in b)
    assert (ea < eb) == ([convex_cmp_key(v) for v in a] < [convex_cmp_key(v) for v in b])


def test_objects_encode_their_fields_sorted_by_name() -> None:
    # Insertion order used to decide: {b, a} neither equalled {a, b} nor sorted by field a.
    assert encode_value({"b": 1.0, "a": 2.0}) == encode_value({"a": 2.0, "b": 1.0})
    assert encode_value({"b": 1.0, "a": 2.0}) < encode_value({"a": 3.0})
    assert encode_value({"a": 1.0}) < encode_value({"a": 1.0, "b": 0.0}) < encode_value({"b": 0.0})


def test_type_order_and_bounds() -> None:
    ordered = [
        MISSING,
        None,
        Int64(-5),
        Int64(7),
        -math.inf,
        -1.0,
        0,
        2.5,
        math.inf,
        False,
        True,
        "",
        "a",
        "a\x00",
        "ab",
        b"",
        b"\x00",
        [],
        [None],
        {"a": 1.0},
    ]
    keys = [encode_value(v) for v in ordered]
    assert keys == sorted(keys)
    assert all(not k.startswith(TOP) for k in keys)
    assert all(k < successor(k) < k + b"\x01" for k in keys)
    assert encode_value(3) == encode_value(3.0)  # a plain int is a float64


def test_index_key_appends_id_and_reads_dotted_fields() -> None:
    doc = {"_id": "x", "_creationTime": 1.0, "a": {"b": 2.0}}
    key = index_key(doc, ("a.b", "missing", "_creationTime", "_id"))
    assert key == encode_value(2.0) + encode_value(MISSING) + encode_value(1.0) + encode_value("x")
    assert index_key(doc, ("_id",)) == encode_value("x")
