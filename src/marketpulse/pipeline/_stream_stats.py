"""The counters of one stream activity attempt: the feed's, extended with the stream's own."""

from __future__ import annotations

from dataclasses import dataclass, field

from marketpulse._clock import now_ms
from marketpulse.kalshi import FeedStats

__all__ = ["StreamStats"]


@dataclass
class StreamStats(FeedStats):
    """One counters object from the protocol core to the status query.

    The stream hands this object to its feed, which hands it to the protocol core: the core
    counts frames, gaps and recoveries in it, the feed its connection, and the stream's parts
    what they write. Fields are snake_case; :mod:`marketpulse.pipeline._status_reporter`
    renames them to the wire's camelCase.
    """

    state: str = "starting"
    events: int = 0
    """Feed events turned into coalescer input (books, prices, trades, statuses)."""
    batches: int = 0
    batch_errors: int = 0
    last_message_at: float = 0.0
    """When the last such event was handled (epoch ms, 0: none yet)."""
    last_batch_ms: float = 0.0
    """From the first event of the last batch written to the store's acknowledgement."""
    markets_version: int = 0
    markets: int = 0
    finished: int = 0
    """Streamed markets that closed, were determined or settled: no data is expected of them."""
    started_at: float = field(default_factory=now_ms)
