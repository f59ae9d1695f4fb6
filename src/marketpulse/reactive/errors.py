"""Errors raised by and inside Convex-style functions."""

from __future__ import annotations

from typing import Any

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
        return repr(self.data) if not isinstance(self.data, str) else self.data


class ArgumentValidationError(ValueError):
    """The arguments passed to a function do not match its declared parameters."""


class FunctionNotFoundError(LookupError):
    """No function the caller may run is registered at the requested path."""


class QueryLimitError(RuntimeError):
    """A function exceeded a configured limit (run time, result size, documents read)."""
