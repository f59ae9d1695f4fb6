"""Order-preserving byte encoding of Convex values, for index keys.

``encode(a) < encode(b)`` (as bytes) exactly when ``a < b`` in Convex's total order:
undefined (a missing field) < null < int64 < float64 < boolean < string < bytes < array < object;
arrays compare element by element, objects field by field in field-name order (as Convex's
``ConvexObject``, a map sorted by name), a shorter one first when it is a prefix of the other.
Every encoding is self-delimiting, so the key of a compound index is the concatenation of its
field encodings (plus the document ``_id``), and:

* all keys starting with prefix ``P`` lie in ``[P, P + b"\\xff")`` (no encoding starts with 0xff);
* the smallest key greater than ``k`` is ``k + b"\\x00"``.
"""

from __future__ import annotations

import struct
from typing import Any

from ..values import Int64

__all__ = ["MISSING", "TOP", "encode_value", "get_field", "index_key", "successor"]

MISSING: Any = object()
"""Marker for a field absent from a document (Convex ``undefined``)."""

TOP = b"\xff"
"""A byte string greater than every encoded key (and than every key with a given prefix)."""

_UNDEFINED = b"\x00"
_NULL = b"\x01"
_INT = b"\x02"
_FLOAT = b"\x03"
_FALSE = b"\x04\x00"
_TRUE = b"\x04\x01"
_STR = b"\x05"
_BYTES = b"\x06"
_ARRAY = b"\x07"
_OBJECT = b"\x08"
_END = b"\x00"
_FIELD = b"\x01"
_SIGN = 1 << 63
_ALL = (1 << 64) - 1


def _escape(raw: bytes) -> bytes:
    # 0x00 is escaped as 0x00 0xff and the terminator is 0x00 0x00, so a shorter string
    # sorts before any longer one that extends it.
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x00"


_pack_double = struct.Struct(">d").pack


def _encode_float(value: float) -> bytes:
    bits = int.from_bytes(_pack_double(value), "big")
    bits = bits ^ _ALL if bits & _SIGN else bits | _SIGN
    return _FLOAT + bits.to_bytes(8, "big")


def _encode_str(value: str) -> bytes:
    return _STR + _escape(value.encode("utf-8"))


def _encode_plain_int(value: int) -> bytes:
    # A plain Python int is a Convex float64 (see values.py).
    return _encode_float(float(value))


# Exact-type fast paths for the common scalars; everything else takes the isinstance chain.
_FAST: dict[type, Any] = {str: _encode_str, float: _encode_float, int: _encode_plain_int}


def encode_value(value: Any) -> bytes:
    """Encode one value (or :data:`MISSING`) as an order-preserving byte string.

    Raises:
        TypeError: the value is not a Convex value.
    """
    fast = _FAST.get(type(value))
    if fast is not None:
        out: bytes = fast(value)
        return out
    if value is None:
        return _NULL
    if value is MISSING:
        return _UNDEFINED
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, float):
        return _encode_float(value)
    if isinstance(value, Int64):
        return _INT + (int(value) + _SIGN).to_bytes(8, "big")
    if isinstance(value, int):
        return _encode_plain_int(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return _BYTES + _escape(bytes(value))
    if isinstance(value, list | tuple):
        return _ARRAY + b"".join(encode_value(v) for v in value) + _END
    if isinstance(value, dict):
        # Convex compares objects field by field in field-name order, whatever order the
        # fields were written in (names are unique: the values are never compared here).
        parts = [
            _FIELD + _escape(k.encode("utf-8")) + encode_value(v) for k, v in sorted(value.items())
        ]
        return _OBJECT + b"".join(parts) + _END
    raise TypeError(f"{type(value).__name__} is not a Convex value")


def get_field(doc: dict[str, Any], path: str) -> Any:
    """Read a (possibly dotted) field; :data:`MISSING` when absent."""
    if "." not in path:
        return doc.get(path, MISSING)
    current: Any = doc
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return MISSING
        current = current[part]
    return current


def index_key(
    doc: dict[str, Any], key_fields: tuple[str, ...], cache: dict[str, bytes] | None = None
) -> bytes:
    """The index key of a document: its field values then its ``_id`` (unless already last).

    ``cache`` (field -> encoding) lets the keys of several indexes of one document share
    the encoding of common fields such as ``_id`` and ``_creationTime``.
    """
    if cache is None:
        key = b"".join([encode_value(get_field(doc, f)) for f in key_fields])
    else:
        parts = []
        for f in key_fields:
            enc = cache.get(f)
            if enc is None:
                enc = cache[f] = encode_value(get_field(doc, f))
            parts.append(enc)
        key = b"".join(parts)
    if key_fields[-1] != "_id":
        key += encode_value(doc["_id"])
    return key


def successor(key: bytes) -> bytes:
    """The smallest byte string greater than ``key``."""
    return key + b"\x00"
