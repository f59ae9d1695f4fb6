"""Liveness of one exchange connection, sans I/O: application pings and per-subscription silence.

Two rules, both decided from ``now`` values the driver passes in:

- Pings: every ``ping_interval`` the driver sends a WebSocket ping (:meth:`Liveness.ping_due`)
  and reports its pong (:meth:`Liveness.pong_received`); a pong later than ``pong_timeout``
  means the peer stopped answering (a stalled exchange, a cut network): close and reconnect.
  websockets' own keep-alive waits 10 s + 10 s, and Kalshi's heartbeat pings come every 10 s.
- Silence: each subscription's stream (``orderbook_delta``, ``ticker`` ...) learns its
  usual gap between messages (an exponential average); once it has seen ``min_samples``
  messages, a silence longer than ``silence_factor`` usual gaps (and at least ``min_silence``)
  means the exchange still answers pings but stopped sending that subscription: close and
  reconnect. A busy book is thus noticed within seconds, a quiet one is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Liveness"]

# Streams only. ``orderbook_snapshot`` is left out: snapshots come once per subscription (and
# after a resubscribe), in a burst whose usual gap is ~0, so watching them as a stream declared
# every connection stalled ``min_silence`` after its start.
_WATCHED = frozenset({"orderbook_delta", "ticker", "ticker_v2", "trade"})
_ALPHA = 0.05  # the average's weight per message: the usual gap over the last ~20 messages


@dataclass
class _Kind:
    last: float
    gap: float = 0.0
    count: int = 0


class Liveness:
    """Decides when a connection is dead although it is still open.

    Args:
        ping_interval: Seconds between our pings (None: no pings).
        pong_timeout: Seconds a pong may take.
        silence_factor: Usual gaps of silence before a subscription is declared stalled.
        min_silence: Never declare a subscription stalled sooner than this, in seconds.
        min_samples: Messages a subscription must have had before its silence counts.
    """

    def __init__(
        self,
        ping_interval: float | None = 1.0,
        pong_timeout: float = 2.0,
        *,
        silence_factor: float = 10.0,
        min_silence: float = 3.0,
        min_samples: int = 20,
    ) -> None:
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.silence_factor = silence_factor
        self.min_silence = min_silence
        self.min_samples = min_samples
        self._kinds: dict[str, _Kind] = {}
        self._ping_sent: float | None = None
        self._last_ping = 0.0
        self.last_heard = 0.0
        """When the peer was last heard from (a frame or a pong), monotonic seconds."""

    def reset(self, now: float) -> None:
        """A new connection: forget everything learned on the last one."""
        self._kinds.clear()
        self._ping_sent = None
        self._last_ping = now
        self.last_heard = now

    def frame(self, kind: object, now: float) -> None:
        """A frame of message type ``kind`` arrived."""
        self.last_heard = now
        if kind not in _WATCHED:
            return
        assert isinstance(kind, str)
        k = self._kinds.get(kind)
        if k is None:
            self._kinds[kind] = _Kind(last=now)
            return
        gap = now - k.last
        k.gap = gap if k.count == 0 else k.gap + _ALPHA * (gap - k.gap)
        k.count += 1
        k.last = now

    def ping_due(self, now: float) -> bool:
        """Whether to send a ping now (then it counts as sent at ``now``)."""
        if self.ping_interval is None or self._ping_sent is not None:
            return False
        if now - self._last_ping < self.ping_interval:
            return False
        self._ping_sent = self._last_ping = now
        return True

    def pong_received(self, now: float) -> None:
        """The pong of the last ping arrived."""
        self._ping_sent = None
        self.last_heard = now

    def dead(self, now: float) -> str | None:
        """Why the connection must be closed now, or None while it looks alive."""
        if self._ping_sent is not None and now - self._ping_sent > self.pong_timeout:
            return f"no pong within {self.pong_timeout:g}s"
        for kind, k in self._kinds.items():
            if k.count < self.min_samples:
                continue
            allowed = max(self.min_silence, self.silence_factor * k.gap)
            silent = now - k.last
            if silent > allowed:
                return f"{kind} silent for {silent:.1f}s (usually every {k.gap:.2f}s)"
        return None
