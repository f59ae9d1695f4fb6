"""``encode_json`` writes exactly the bytes of ``orjson.dumps(value_to_json(value))``, or fails
where that fails: the result bytes every socket and HTTP answer carries."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpulse.reactive.engine._results import encode_json
from marketpulse.reactive.values import ConvexValueError, Int64, json_to_value, value_to_json


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: float = 1.0


def reference(value: Any) -> bytes | type[Exception]:
    try:
        return orjson.dumps(value_to_json(value))
    except Exception as exc:
        return type(exc)


def encoded(value: Any) -> bytes | type[Exception]:
    try:
        return encode_json(value)
    except Exception as exc:
        return type(exc)


BOOK = {
    "ticker": "KX-1",
    "bids": [[0.35 - j / 100, 10.0 + j] for j in range(10)],
    "asks": [[0.37 + j / 100, 5.0 + j] for j in range(10)],
    "spread": 0.02,
    "mid": None,
    "live": True,
}


@pytest.mark.parametrize(
    "value",
    [
        BOOK,
        None,
        0.0,
        -0.0,
        [1.0, -0.0],
        {"change": -0.05, "zero": -0.0},
        float("nan"),
        [float("inf")],
        {"x": -math.inf},
        Int64(-3),
        {"n": Int64(2**40)},
        b"\x00\xff",
        (1.0, "a"),
        2**53,
        2**53 + 1,
        -(2**53) - 1,
        "é",
        "line\nbreak",
        '"quoted"',
        "\x7f",
        {"$id": 1},
        {"a": "$not a field"},
        {"k" * 1024: 1},
        {"k" * 1025: 1},
        {"big": ["x" * 3000], "k" * 1025: 2},
        {"é": 1},
        {"tab\t": 1},
        {"del\x7f": 1},
        {1: 2},
        uuid.UUID(int=7),
        Colour.RED,
        Point(),
        datetime.datetime(2026, 1, 1),
        {1, 2},
        object(),
    ],
)
def test_the_same_bytes_or_the_same_failure(value: Any) -> None:
    assert encoded(value) == reference(value)
    padded = [value, "p" * 300]  # past the size under which the general path always runs
    assert encoded(padded) == reference(padded)


def test_values_it_refuses_still_raise_convex_value_error() -> None:
    for bad in ({"$x": 1}, uuid.UUID(int=1), Colour.RED, 2**60, {"k" * 1025: 0}):
        with pytest.raises(ConvexValueError):
            encode_json(bad)


def test_special_values_round_trip() -> None:
    value = {"i": Int64(-5), "b": b"ab", "f": -0.0, "n": float("nan"), "l": [1.5, None]}
    back = json_to_value(orjson.loads(encode_json(value)))
    assert back["i"] == -5 and isinstance(back["i"], Int64)
    assert back["b"] == b"ab" and math.copysign(1.0, back["f"]) < 0 and math.isnan(back["n"])


keys = st.text(
    alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=6
) | st.sampled_from(["$a", "ok", "k" * 1025, "-0.0"])
scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**54), max_value=2**54)
    | st.builds(Int64, st.integers(min_value=-(2**63), max_value=2**63 - 1))
    | st.binary(max_size=8)
    | st.text(max_size=8)
    | st.sampled_from([-0.0, 0.0, -0.05, "-0.0", '"$x"', "\\"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(keys, inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(values)
def test_any_value_encodes_as_the_general_encoder_does(value: Any) -> None:
    assert encoded(value) == reference(value)
    # Padded past the size under which everything takes the general path.
    padded = {"pad": "p" * 300, "value": value}
    assert encoded(padded) == reference(padded)


def test_a_plain_book_skips_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    from marketpulse.reactive.engine import _results

    expected = orjson.dumps(value_to_json(BOOK))

    def walked(value: Any) -> Any:
        raise AssertionError("the general path ran")

    monkeypatch.setattr(_results, "value_to_json", walked)
    assert encode_json(BOOK) == expected
    with pytest.raises(AssertionError):
        encode_json({**BOOK, "mid": float("nan")})
