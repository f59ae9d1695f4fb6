"""Function results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..values import JSONValue

__all__ = ["FunctionResult"]


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
        encoded: ``value`` as convex_encoded_json, computed once.
        encoded_error_data: ``error_data`` as convex_encoded_json.
        encoded_json: ``encoded`` serialised as JSON bytes (orjson), computed once.
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
    encoded: JSONValue = None
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
