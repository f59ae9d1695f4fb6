"""Write failures named by their real cause, and logged once per cause per interval."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

__all__ = ["FailureLog", "describe"]

log = structlog.get_logger("marketpulse.persistence")


def describe(exc: BaseException) -> str:
    """SQLite's own words for a failure, with its error name: ``database or disk is full
    (SQLITE_FULL)``, ``attempt to write a readonly database (SQLITE_READONLY)``, ``disk I/O
    error (SQLITE_IOERR_FSYNC)``."""
    name = getattr(exc, "sqlite_errorname", None)
    text = str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


class FailureLog:
    """Logs a failing cause the first time it is seen and then at most once per ``interval``,
    with how many times it recurred meanwhile: a full disk under 1,000 mutations/s is one line
    every ``interval``, not a traceback per mutation.

    Args:
        event: the log event's text.
        interval: seconds between two lines about the same cause.
        clock: monotonic seconds (a parameter for tests).
    """

    MAX_CAUSES = 64
    """Distinct causes remembered (bounded: the oldest is forgotten first)."""

    def __init__(
        self,
        event: str,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.event = event
        self.interval = interval
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}

    def report(self, cause: str) -> bool:
        """Count one failure; returns whether a line was logged for it."""
        now = self._clock()
        seen = self._seen.get(cause)
        if seen is not None and now - seen[0] < self.interval:
            self._seen[cause] = (seen[0], seen[1] + 1)
            return False
        if seen is None and len(self._seen) >= self.MAX_CAUSES:
            del self._seen[next(iter(self._seen))]
        self._seen.pop(cause, None)
        self._seen[cause] = (now, 0)
        repeats = seen[1] if seen is not None else 0
        log.error(self.event, cause=cause, repeated_since_last_line=repeats)
        return True
