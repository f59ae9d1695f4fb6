"""Convex values and their JSON encoding ("convex_encoded_json").

Python representation of each Convex type:

=========  =====================================================
Convex     Python
=========  =====================================================
null       ``None``
float64    ``float`` (and plain ``int``, which encodes as a JSON number,
           as the official Python client does)
int64      :class:`Int64` (an ``int`` subclass), encoded as ``$integer``
boolean    ``bool``
string     ``str``
bytes      ``bytes``
array      ``list`` (tuples are accepted when encoding)
object     ``dict[str, Value]``
=========  =====================================================
"""

from __future__ import annotations

import base64
import math
import re
import struct
from typing import Any, TypeAlias

__all__ = [
    "MAX_NESTING",
    "ConvexValueError",
    "Int64",
    "JSONValue",
    "Value",
    "check_value",
    "decode_ts",
    "encode_ts",
    "json_to_value",
    "value_to_json",
]

Value: TypeAlias = Any
"""A Convex value (see the module docstring for the mapping)."""

JSONValue: TypeAlias = Any
"""A JSON-serialisable structure in the convex_encoded_json format."""

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MAX_FIELD_LEN = 1024
_SPECIAL_KEYS = frozenset({"$bytes", "$integer", "$float"})


class ConvexValueError(ValueError):
    """A value that cannot be represented or decoded as a Convex value."""


class Int64(int):
    """A Convex int64 (``bigint`` in JavaScript).

    Plain Python ``int`` values travel as float64 JSON numbers, matching the
    official Python client; wrap a value in ``Int64`` to send an int64.
    """

    def __new__(cls, value: int = 0) -> Int64:
        if not _INT64_MIN <= int(value) <= _INT64_MAX:
            raise ConvexValueError(f"{value} does not fit in int64")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"Int64({int(self)})"


def encode_ts(ts: int) -> str:
    """Encode a u64 timestamp as padded standard base64 of its little-endian bytes."""
    return base64.b64encode(struct.pack("<Q", ts)).decode("ascii")


def decode_ts(text: str) -> int:
    """Decode a u64 timestamp encoded by :func:`encode_ts` (url-safe alphabet accepted)."""
    raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    if len(raw) != 8:
        raise ConvexValueError(f"timestamp must be 8 bytes, got {len(raw)}")
    value: int = struct.unpack("<Q", raw)[0]
    return value


def _check_field_name(key: object) -> str:
    if not isinstance(key, str):
        raise ConvexValueError(f"object keys must be strings, got {type(key).__name__}")
    if key.startswith("$"):
        raise ConvexValueError(f"field name {key!r} must not start with '$'")
    if len(key) > _MAX_FIELD_LEN:
        raise ConvexValueError(f"field name longer than {_MAX_FIELD_LEN} characters")
    if not key.isascii() or not key.isprintable():
        raise ConvexValueError(f"field name {key!r} must be printable ASCII")
    return key


def _encode_float(value: float) -> JSONValue:
    # NaN, infinities and -0 are not representable as JSON numbers.
    if math.isfinite(value) and not (value == 0.0 and math.copysign(1.0, value) < 0):
        return value
    return {"$float": base64.b64encode(struct.pack("<d", value)).decode("ascii")}


_JSON_SCALARS = frozenset({float, int, str, bool, type(None)})
"""Exact types that decode to themselves."""
_PASS_THROUGH = frozenset({str, bool, type(None)})
"""Exact types that encode as themselves (floats need a finiteness check, ints a range check)."""

_GOOD_FIELDS: set[str] = set()
_GOOD_FIELDS_MAX = 10_000


def _field(key: object) -> str:
    # Field names repeat across documents: remember the valid ones (bounded).
    if key in _GOOD_FIELDS:
        return key  # type: ignore[return-value]
    name = _check_field_name(key)
    if len(_GOOD_FIELDS) < _GOOD_FIELDS_MAX:
        _GOOD_FIELDS.add(name)
    return name


def value_to_json(value: Value) -> JSONValue:
    """Encode a Python value as convex_encoded_json.

    Raises:
        ConvexValueError: the value has no Convex representation.
    """
    # Exact-type fast paths for the common cases; subclasses take the general chain below.
    # Containers test their scalar items inline: a call per number is most of the cost of
    # encoding a large batch.
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is float:
        if value - value == 0.0 and value != 0.0:  # finite and non-zero: a plain JSON number
            return value
        return _encode_float(value)
    if kind is dict:
        return {
            _field(k): v
            if (type(v) is float and v - v == 0.0 and v != 0.0) or type(v) in _PASS_THROUGH
            else value_to_json(v)
            for k, v in value.items()
        }
    if kind is list:
        return [
            v
            if (type(v) is float and v - v == 0.0 and v != 0.0) or type(v) in _PASS_THROUGH
            else value_to_json(v)
            for v in value
        ]
    # Order matters: bool and Int64 are both int subclasses.
    if isinstance(value, bool | str):
        return value
    if isinstance(value, Int64):
        return {"$integer": base64.b64encode(struct.pack("<q", value)).decode("ascii")}
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise ConvexValueError(f"{value} loses precision as float64; wrap it in Int64")
        return value
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [value_to_json(item) for item in value]
    if isinstance(value, dict):
        return {_check_field_name(k): value_to_json(v) for k, v in value.items()}
    raise ConvexValueError(f"{type(value).__name__} is not a Convex value")


_VALID_LEAVES = frozenset({bool, type(None), float, bytes, Int64})
"""Exact types that are valid Convex values whatever they hold (``Int64`` checks its range when
made; strings need a Unicode check, plain ints a range check)."""

MAX_NESTING = 64
"""How deeply arrays and objects may nest in one value (a document counts as one level), as
Convex's own values (its ``MAX_NESTING``): far inside what the persistence's JSON encoder
(orjson, 254 levels) writes, so a value that passes :func:`check_value` can always be stored."""

# One C-level scan of a non-ASCII string; ASCII ones (most) never get here.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_str(text: str) -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        raise ConvexValueError(
            f"string {text[:40]!r} is not valid Unicode: lone surrogate "
            f"U+{ord(found.group()):04X} at index {found.start()}"
        )


def _too_deep() -> ConvexValueError:
    return ConvexValueError(f"value nested deeper than {MAX_NESTING} levels of arrays and objects")


def check_value(value: Value, _depth: int = 1) -> None:
    """Check that ``value`` is a Convex value that can be stored, without building anything.

    Refuses what :func:`value_to_json` refuses, and also what the JSON written to disk cannot
    hold: strings with lone surrogates and values nested deeper than :data:`MAX_NESTING`. It
    costs a fraction of an encoding for the plain documents that most writes are (it allocates
    nothing and base64-encodes no bytes): every write is checked, and a market data batch
    patches hundreds of documents.

    Args:
        value: the value to check.
        _depth: internal: the nesting ``value`` is at if it is a container.

    Raises:
        ConvexValueError: the value has no Convex representation, or cannot be stored.
    """
    kind = type(value)
    if kind is dict:
        if _depth > MAX_NESTING:
            raise _too_deep()
        for k, v in value.items():
            if k not in _GOOD_FIELDS:
                _field(k)
            if type(v) not in _VALID_LEAVES:
                # Strings inline: isascii() is O(1), and a call per field is most of the cost.
                if type(v) is str:
                    if not v.isascii():
                        _check_str(v)
                else:
                    check_value(v, _depth + 1)
    elif kind is list:
        if _depth > MAX_NESTING:
            raise _too_deep()
        for v in value:
            if type(v) not in _VALID_LEAVES:
                if type(v) is str:
                    if not v.isascii():
                        _check_str(v)
                else:
                    check_value(v, _depth + 1)
    elif kind is str:
        if not value.isascii():
            _check_str(value)
    elif kind not in _VALID_LEAVES:
        _check_other(value, _depth)


def _check_other(value: Value, depth: int) -> None:
    """Tuples, subclasses and ints: checked in :func:`value_to_json`'s order of tests, so that
    both refuse a bad value with the same message."""
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        if not value.isascii():
            _check_str(value)
    elif isinstance(value, list | tuple):
        if depth > MAX_NESTING:
            raise _too_deep()
        for v in value:
            check_value(v, depth + 1)
    elif isinstance(value, dict):
        if depth > MAX_NESTING:
            raise _too_deep()
        for k, v in value.items():
            _check_field_name(k)
            check_value(v, depth + 1)
    else:
        # Ints (a range check), Int64, floats, bytes-likes, and what is no Convex value.
        value_to_json(value)


def _decode_special(key: str, payload: object) -> Value:
    if not isinstance(payload, str):
        raise ConvexValueError(f"{key} payload must be a base64 string")
    try:
        raw = base64.b64decode(payload, validate=True)
    except ValueError as exc:
        raise ConvexValueError(f"malformed base64 in {key}") from exc
    if key == "$bytes":
        return raw
    if len(raw) != 8:
        raise ConvexValueError(f"{key} must hold exactly 8 bytes")
    if key == "$integer":
        return Int64(struct.unpack("<q", raw)[0])
    number: float = struct.unpack("<d", raw)[0]
    if math.isfinite(number) and not (number == 0.0 and math.copysign(1.0, number) < 0):
        raise ConvexValueError("$float is only for NaN, infinities and -0")
    return number


def json_to_value(data: JSONValue) -> Value:
    """Decode convex_encoded_json into Python values.

    Raises:
        ConvexValueError: the JSON is not a valid Convex encoding.
    """
    kind = type(data)
    if kind in _JSON_SCALARS:
        return data
    if kind is list:
        return [v if type(v) in _JSON_SCALARS else json_to_value(v) for v in data]
    if kind is dict and len(data) != 1:
        return {
            _field(k): v if type(v) in _JSON_SCALARS else json_to_value(v) for k, v in data.items()
        }
    if data is None or isinstance(data, bool | str | float):
        return data
    if isinstance(data, int):
        return data
    if isinstance(data, list):
        return [json_to_value(item) for item in data]
    if isinstance(data, dict):
        if len(data) == 1:
            ((key, payload),) = data.items()
            if key in _SPECIAL_KEYS:
                return _decode_special(key, payload)
            if key in ("$set", "$map"):
                raise ConvexValueError(f"{key} is no longer a Convex type")
        return {_field(k): json_to_value(v) for k, v in data.items()}
    raise ConvexValueError(f"{type(data).__name__} is not valid convex_encoded_json")
