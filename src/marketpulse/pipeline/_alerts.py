"""Error alerting: logged at error level and POSTed as JSON to a webhook.

Alerts fire when a stream goes stale, when its gap or reconnect rate spikes, or when its
activity keeps failing. Each (stream, kind) fires at most once per cooldown so a flapping feed
does not flood the receiver. Delivery is best effort and never blocks the feed for long.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import httpx
import structlog

from marketpulse._clock import now_ms
from marketpulse.pipeline import _metrics

__all__ = ["Alerter", "RateWatch"]

log = structlog.get_logger("marketpulse.pipeline.alerts")


class Alerter:
    """Sends alerts to the log and, when configured, to a webhook.

    Args:
        webhook_url: Where to POST alerts (JSON); None logs only.
        cooldown: Seconds during which a repeat of the same (stream, kind) is suppressed.
        timeout: Seconds per webhook POST.
    """

    def __init__(
        self, webhook_url: str | None = None, *, cooldown: float = 300.0, timeout: float = 5.0
    ) -> None:
        self.webhook_url = webhook_url or None
        self.cooldown = cooldown
        self._timeout = timeout
        self._last: dict[tuple[str, str], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent = 0

    async def alert(self, stream: str, kind: str, message: str, **details: Any) -> bool:
        """Raise an alert; returns False when suppressed by the cooldown.

        Args:
            stream: Stream (workflow) id.
            kind: ``stale`` | ``gap_rate`` | ``reconnect_rate`` | ``activity_failing`` | ...
            message: Human-readable summary (must hold no secret).
            **details: Extra JSON-able fields.
        """
        now = time.monotonic()
        key = (stream, kind)
        last = self._last.get(key)
        if last is not None and now - last < self.cooldown:
            return False
        self._last[key] = now
        payload = {
            "source": "marketpulse",
            "stream": stream,
            "kind": kind,
            "severity": "error",
            "message": message,
            "at": now_ms(),
            "details": details,
        }
        log.error("alert", stream=stream, kind=kind, message=message, **details)
        _metrics.ALERTS.labels(stream=stream, kind=kind).inc()
        if self.webhook_url:
            await self._post(payload)
        self.sent += 1
        return True

    async def _post(self, payload: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                resp = await http.post(self.webhook_url, json=payload)
            if resp.status_code >= 300:
                log.warning("alert webhook refused", status=resp.status_code)
        except httpx.HTTPError as exc:
            log.warning("alert webhook unreachable", error=type(exc).__name__)


class RateWatch:
    """Counts events in a sliding window and says when a threshold is crossed.

    Args:
        window: Seconds.
        threshold: Events within ``window`` that count as a spike.
    """

    def __init__(self, window: float, threshold: int) -> None:
        self.window = window
        self.threshold = threshold
        self._times: deque[float] = deque()

    def add(self, now: float, n: int = 1) -> bool:
        """Record ``n`` events at ``now``; True when the window now holds a spike."""
        for _ in range(min(n, self.threshold)):
            self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        return len(self._times) >= self.threshold
