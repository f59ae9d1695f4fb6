import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketpulse.reactive.values import (
    MAX_NESTING,
    ConvexValueError,
    Int64,
    check_value,
    decode_ts,
    encode_ts,
    json_to_value,
    value_to_json,
)


def test_ts_encoding_matches_spec_examples() -> None:
    assert encode_ts(0) == "AAAAAAAAAAA="
    assert encode_ts(1) == "AQAAAAAAAAA="
    assert decode_ts("AQAAAAAAAAA=") == 1


def test_int64_and_special_floats() -> None:
    assert value_to_json(Int64(1)) == {"$integer": "AQAAAAAAAAA="}
    assert value_to_json(Int64(-1)) == {"$integer": "//////////8="}
    assert value_to_json(float("nan")) == {"$float": "AAAAAAAA+H8="}
    assert value_to_json(float("inf")) == {"$float": "AAAAAAAA8H8="}
    assert value_to_json(float("-inf")) == {"$float": "AAAAAAAA8P8="}
    assert value_to_json(-0.0) == {"$float": "AAAAAAAAAIA="}
    assert value_to_json(1.5) == 1.5
    assert value_to_json(3) == 3
    assert value_to_json(b"hi") == {"$bytes": "aGk="}
    decoded = json_to_value({"$integer": "//////////8="})
    assert isinstance(decoded, Int64) and decoded == -1
    assert math.isnan(json_to_value({"$float": "AAAAAAAA+H8="}))


@pytest.mark.parametrize(
    "bad",
    [{"$float": "AAAAAAAA8D8="}, {"$set": []}, {"$integer": "AQ=="}, {"$x": 1}, {"a\x01": 1}],
)
def test_rejects_invalid_encodings(bad: object) -> None:
    with pytest.raises(ConvexValueError):
        json_to_value(bad)


def test_rejects_unrepresentable_values() -> None:
    with pytest.raises(ConvexValueError):
        value_to_json({"$bad": 1})
    with pytest.raises(ConvexValueError):
        value_to_json(object())
    with pytest.raises(ConvexValueError):
        value_to_json(2**60)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.integers(-(2**63), 2**63 - 1).map(Int64),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), children, max_size=4
        )
    ),
    max_leaves=20,
)


@given(values)
def test_round_trip(value: object) -> None:
    assert json_to_value(value_to_json(value)) == value


# Anything at all, valid or not: keys that are no field names, ints past 2**53, tuples, sets,
# objects, bytearrays, NaN, subclasses.
class _Str(str):
    pass


anything = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.integers()
    | st.integers(-(2**63), 2**63 - 1).map(Int64)
    | st.builds(bytearray, st.binary(max_size=3))
    | st.builds(_Str, st.text(max_size=3))
    | st.just(object())
    | st.frozensets(st.integers(), max_size=2),
    lambda children: (
        st.lists(children, max_size=3)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(
            st.text(max_size=4) | st.sampled_from(["$bytes", "a" * 1025, "ok"]) | st.integers(),
            children,
            max_size=3,
        )
    ),
    max_leaves=12,
)


def _verdict(fn: object, value: object) -> str | None:
    try:
        fn(value)  # type: ignore[operator]
    except ConvexValueError as exc:
        return str(exc)
    return None


@given(anything)
def test_check_value_accepts_and_refuses_what_the_encoder_does(value: object) -> None:
    assert _verdict(check_value, value) == _verdict(value_to_json, value)


def test_check_value_refuses_the_usual_mistakes() -> None:
    for bad in ({"$bad": 1}, {"a": [2**60]}, {1: 2}, [object()], {"a\x01": 1}):
        with pytest.raises(ConvexValueError):
            check_value(bad)
    check_value({"ticker": "A", "bids": b"\x00", "ts": float("nan"), "n": Int64(3), "x": [1, None]})


def _nested(levels: int, leaf: object = 1.0) -> object:
    value = leaf
    for i in range(levels):
        value = [value] if i % 2 else {"v": value}
    return value


def test_check_value_refuses_lone_surrogates_the_disk_cannot_hold() -> None:
    # orjson, which writes every commit, refuses them: stored in memory, such a string made
    # every later write fail.
    for bad in ("x\ud800", "\udfff", ["ok", "é\udc00"], {"a": {"b": "\ud83d"}}, ("\ud800",)):
        with pytest.raises(ConvexValueError, match="lone surrogate"):
            check_value(bad)
    check_value({"s": "héllo \U0001f600 \u0000", "t": ["日本", "\ud7ff\ue000"]})


def test_check_value_refuses_what_nests_deeper_than_convex_allows() -> None:
    deepest = _nested(MAX_NESTING)
    check_value(deepest)
    orjson.dumps(value_to_json(deepest))  # what passes can be written
    for bad in (_nested(MAX_NESTING + 1), _nested(300), [_nested(MAX_NESTING)]):
        with pytest.raises(ConvexValueError, match=f"deeper than {MAX_NESTING} levels"):
            check_value(bad)
    tuples: object = 1.0
    for _ in range(MAX_NESTING + 1):
        tuples = (tuples,)
    with pytest.raises(ConvexValueError, match="deeper than"):
        check_value(tuples)
