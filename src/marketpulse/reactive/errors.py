"""Errors raised by and inside Convex-style functions."""

from __future__ import annotations

from typing import Any

import orjson

from .values import Int64

__all__ = [
    "ArgumentValidationError",
    "ConvexError",
    "FunctionNotFoundError",
    "QueryLimitError",
]


class ConvexError(Exception):
    """An application error whose ``data`` reaches the client (as ``errorData``).

    Args:
        data: any Convex value; the client's ``ConvexError`` exposes it as ``.data``.
    """

    def __init__(self, data: Any = None) -> None:
        super().__init__(data)
        self.data = data

    def __str__(self) -> str:
        # As the official clients write it: the string itself, else the data as compact JSON
        # (convex-js' stringifyValueForError), an Int64 as ``<n>n``.
        if isinstance(self.data, str):
            return self.data
        try:
            data = orjson.dumps(
                self.data, default=_for_message, option=orjson.OPT_PASSTHROUGH_SUBCLASS
            )
            return data.decode()
        except (TypeError, orjson.JSONEncodeError):  # not a Convex value, or too deep for JSON
            return repr(self.data)


def _for_message(value: Any) -> Any:
    if isinstance(value, Int64):
        return f"{int(value)}n"
    # Other subclasses of what JSON holds: as their base is written.
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    for base in (str, int, float):
        if isinstance(value, base):
            return base(value)
    raise TypeError(type(value).__name__)


class ArgumentValidationError(ValueError):
    """The arguments passed to a function do not match its declared parameters."""


class FunctionNotFoundError(LookupError):
    """No function the caller may run is registered at the requested path."""


class QueryLimitError(RuntimeError):
    """A function exceeded a configured limit (run time, result size, documents read)."""
