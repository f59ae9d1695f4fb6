"""Rate-limited logging: one flood of an event costs a few lines."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["LogThrottle"]


class LogThrottle:
    """At most ``burst`` log lines per key per ``window_s``; the rest are counted and the count
    is reported on the next line that passes (so a flood of one event costs a few lines).

    Args:
        burst: Lines per key per window.
        window_s: The window.
    """

    def __init__(self, burst: int = 5, window_s: float = 10.0) -> None:
        self._burst = burst
        self._window_s = window_s
        self._seen: dict[str, tuple[float, int, int]] = {}

    def allow(self, key: str) -> int | None:
        """None to drop this line; else how many lines of this key were dropped before it."""
        now = time.monotonic()
        start, passed, dropped = self._seen.get(key, (now, 0, 0))
        if now - start >= self._window_s:
            start, passed = now, 0
        if passed >= self._burst:
            self._seen[key] = (start, passed, dropped + 1)
            return None
        self._seen[key] = (start, passed + 1, 0)
        if len(self._seen) > 1024:  # keys are event names, but stay bounded whatever they are
            self._seen.clear()
        return dropped

    def log(self, logger: Any, level: str, event: str, **fields: Any) -> None:
        """``logger.<level>(event, **fields)`` unless this event is over its rate."""
        dropped = self.allow(event)
        if dropped is None:
            return
        if dropped:
            fields["suppressed"] = dropped
        getattr(logger, level)(event, **fields)
