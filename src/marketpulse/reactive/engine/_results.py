"""Function results."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..values import JSONValue, value_to_json

__all__ = ["FunctionResult", "encode_json"]

_FAST_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_STRICT_INTEGER
)
_LONG_KEY = re.compile(rb'"[^"]{1025,}":')
"""A field name over 1,024 characters, in JSON without backslashes (no string holds a quote)."""
_FAST_MIN_BYTES = 256
"""Below this the walk costs no more than the checks (a price: ~1.5 µs either way)."""
_NEGATIVE_ZERO = re.compile(rb"-0\.0(?![0-9])")
"""orjson writes -0.0 as ``-0.0`` (Convex sends it as ``$float``); -0.05 is a number."""


def _not_plain(value: Any) -> Any:
    raise TypeError  # Int64, bytes, subclasses, ...: the general encoder decides


def encode_json(value: Any) -> bytes:
    """``orjson.dumps(value_to_json(value))``, the convex_encoded_json bytes of a result,
    byte for byte, faster for plain values of 256 bytes and more.

    ``value_to_json`` walks the value in Python (an order book's result: ~10 µs, a sixth of
    its re-run); orjson writes the same bytes in C whenever the value is plain JSON: str, finite
    non-negative-zero floats, ints within 2**53, bool, None, lists and dicts with valid field
    names. The fast path keeps only output it can prove is that: anything orjson cannot
    write plainly (Int64, bytes, subclasses, ints past 2**53) raises into ``_not_plain``;
    reading the bytes back must give an equal value (NaN and infinities become null, tuples
    lists, and UUIDs or enums strings: all unequal); and the bytes hold no ``-0.0`` number, no
    escape, nothing outside printable ASCII, no ``"$`` and no over-long field name (the
    field-name rules). Everything else, valid or not, takes the general path, which raises
    ``ConvexValueError`` as before.
    """
    try:
        data = orjson.dumps(value, default=_not_plain, option=_FAST_OPTIONS)
    except TypeError:
        return orjson.dumps(value_to_json(value))
    if (
        len(data) >= _FAST_MIN_BYTES
        and data.isascii()
        and b"\\" not in data
        and b"\x7f" not in data
        and b'"$' not in data
        and (b"-0.0" not in data or _NEGATIVE_ZERO.search(data) is None)
        and (len(data) <= 1027 or _LONG_KEY.search(data) is None)
        and orjson.loads(data) == value
    ):
        return data
    return orjson.dumps(value_to_json(value))


@dataclass
class FunctionResult:
    """The outcome of one function run.

    Attributes:
        success: whether the function returned a value.
        value: the returned Convex value (``None`` on failure).
        error_message: the error text on failure.
        error_data: the ``ConvexError`` data (meaningful only when ``has_error_data``).
        has_error_data: whether the failure was a ``ConvexError`` (send ``errorData``).
        log_lines: ``"[LOG] 'msg'"``-style lines.
        ts: the timestamp the result is consistent with (the commit ts for a mutation).
        encoded_error_data: ``error_data`` as convex_encoded_json.
        encoded_json: ``value`` as convex_encoded_json bytes (:func:`encode_json`), computed
            once.
        journal: where a paginated query's page ended (Convex's ``QueryJournal``, opaque to
            clients); ``None`` when the function did not paginate.
    """

    success: bool
    value: Any = None
    error_message: str | None = None
    error_data: Any = None
    has_error_data: bool = False
    log_lines: list[str] = field(default_factory=list)
    ts: int = 0
    encoded_error_data: JSONValue = None
    encoded_json: bytes = b"null"
    journal: str | None = None

    @classmethod
    def failure(
        cls, message: str, log_lines: list[str] | None = None, ts: int = 0
    ) -> FunctionResult:
        """A plain (non-ConvexError) failure."""
        return cls(False, error_message=message, log_lines=log_lines or [], ts=ts)

    def same_outcome(self, other: FunctionResult) -> bool:
        """Whether a client would see no difference (value, error and log lines)."""
        return (
            self.success == other.success
            and self.encoded_json == other.encoded_json
            and self.error_message == other.error_message
            and self.has_error_data == other.has_error_data
            and (
                not self.has_error_data
                or orjson.dumps(self.encoded_error_data) == orjson.dumps(other.encoded_error_data)
            )
            and self.log_lines == other.log_lines
        )
