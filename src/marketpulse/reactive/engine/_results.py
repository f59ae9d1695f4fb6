"""Function results and the limits that bound a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..values import JSONValue

__all__ = ["FunctionResult", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Bounds on a function run.

    Attributes:
        query_time_limit: seconds a query may run (checked on every db operation).
        mutation_time_limit: seconds a mutation may run (same cooperative check).
        action_time_limit: seconds an action may run (enforced with ``asyncio.wait_for``).
        max_result_bytes: largest encoded JSON result a function may return.
        max_log_lines: log lines kept per run (more are counted, then dropped).
    """

    query_time_limit: float = 1.0
    mutation_time_limit: float = 1.0
    action_time_limit: float = 600.0
    max_result_bytes: int = 8 * 1024 * 1024
    max_log_lines: int = 256


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
