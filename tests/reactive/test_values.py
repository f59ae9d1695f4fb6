import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketpulse.reactive.values import (
    ConvexValueError,
    Int64,
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
