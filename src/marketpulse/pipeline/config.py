"""Workflow and activity payloads: plain dataclasses that travel through Temporal history.

Field names of :class:`StreamConfig` are camelCase on purpose: they are the seed's workflow
argument (``{markets, enableOrderbook, enableTrades, enablePrices, reconnectDelay,
healthCheckInterval, cleanupInterval}``), so a TypeScript client that starts the workflow the
seed's way decodes into this class unchanged. Fields a client sends that are not declared here
(the seed's ``apiKey`` / ``apiSecret``) are dropped by the data converter: credentials are read by
the worker from its own environment, never from arguments.

Nothing in this module may carry market data: only the control plane passes through history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from math import inf
from typing import Any

__all__ = [
    "CLEANUP_ACTIVITY",
    "HEALTH_ACTIVITY",
    "STREAM_ACTIVITY",
    "TASK_QUEUE",
    "CleanupInput",
    "HealthInput",
    "HealthReport",
    "MarketSet",
    "MarketsChange",
    "StreamConfig",
    "StreamInput",
    "WorkflowStatus",
    "normalise_tickers",
]

TASK_QUEUE = "market-data"
"""The task queue the seed starts its workflow on; every worker polls it."""

STREAM_ACTIVITY = "kalshi_stream"
"""The long-running activity that owns the exchange feed."""
HEALTH_ACTIVITY = "kalshi_stream_health"
"""Short activity: reads the stream activity's last heartbeat and judges it."""
CLEANUP_ACTIVITY = "market_data_cleanup"
"""Short activity: runs ``marketData:cleanup`` until nothing old is left (bounded)."""

_TICKER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
MAX_MARKETS = 10_000
"""Markets one workflow may hold; past that, shard feeds across workflows."""
MAX_INTERVAL_S = 10 * 365 * 86_400.0
"""The longest interval or age a stream accepts (ten years): an infinite one overflowed the
workflow's timer, and its loop ended without a word."""


def normalise_tickers(tickers: list[str] | tuple[str, ...]) -> list[str]:
    """Upper-case, de-duplicate (keeping order) and validate market tickers.

    Args:
        tickers: Market tickers as given by a user or client.

    Returns:
        The cleaned list.

    Raises:
        ValueError: A ticker is empty, too long or holds characters Kalshi tickers never have.
    """
    out: list[str] = []
    seen: set[str] = set()
    for raw in tickers:
        if not isinstance(raw, str):
            raise ValueError(f"market ticker must be a string, got {type(raw).__name__}")
        ticker = raw.strip().upper()
        if not _TICKER.match(ticker):
            raise ValueError(f"invalid market ticker {raw!r}")
        if ticker not in seen:
            seen.add(ticker)
            out.append(ticker)
    if len(out) > MAX_MARKETS:
        raise ValueError(f"too many markets ({len(out)} > {MAX_MARKETS}); shard across workflows")
    return out


@dataclass
class StreamConfig:
    """Argument of ``KalshiStreamWorkflow`` (the seed's config, minus credentials).

    Attributes:
        markets: Market tickers to stream.
        enableOrderbook: Subscribe to ``orderbook_delta`` and write books.
        enableTrades: Subscribe to ``trade`` and write trades.
        enablePrices: Subscribe to ``ticker`` and write prices.
        reconnectDelay: Seconds; first retry delay of the stream activity and the feed's own
            reconnect delay.
        healthCheckInterval: Seconds between health checks.
        cleanupInterval: Seconds between ``marketData:cleanup`` runs.
        exchange: ``sim`` | ``demo`` | ``prod`` | a base URL; empty means the worker's default.
        staleAfter: Seconds without any data message on a connected feed after which the
            health check restarts it (0 disables this rule).
        retention: Seconds of trades/history kept by the cleanup.
        heartbeatTimeout: Seconds; the server declares the stream activity lost after this
            long without a heartbeat (e.g. its worker was killed) and retries it.
        maxRetryInterval: Seconds; cap of the retry backoff.
        continueAsNewAfterEvents: Continue-as-new once history holds this many events, in
            addition to when the server suggests it (0: only when suggested).
        streamId: Id under which status is reported to the store; empty = the workflow id.
        generation: How many times this workflow has continued-as-new (set by the workflow).
        nextCleanupAt: Epoch ms the next cleanup is due (set by the workflow when it
            continues-as-new, so a run shorter than ``cleanupInterval`` does not put it off
            again); 0: ``cleanupInterval`` after the run starts.
    """

    markets: list[str] = field(default_factory=list)
    enableOrderbook: bool = True
    enableTrades: bool = True
    enablePrices: bool = True
    reconnectDelay: float = 5.0
    healthCheckInterval: float = 30.0
    cleanupInterval: float = 3600.0
    exchange: str = ""
    staleAfter: float = 300.0
    retention: float = 86_400.0
    heartbeatTimeout: float = 10.0
    maxRetryInterval: float = 60.0
    continueAsNewAfterEvents: int = 0
    streamId: str = ""
    generation: int = 0
    nextCleanupAt: float = 0.0

    def validated(self) -> StreamConfig:
        """A copy with tickers normalised and every interval checked.

        Raises:
            ValueError: A field is out of range.
        """
        for name in (
            "reconnectDelay",
            "healthCheckInterval",
            "cleanupInterval",
            "heartbeatTimeout",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= MAX_INTERVAL_S:
                raise ValueError(
                    f"{name} must be a positive number of seconds up to {MAX_INTERVAL_S:.0f}, "
                    f"got {value!r}"
                )
        for name in ("staleAfter", "retention", "maxRetryInterval"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value <= MAX_INTERVAL_S:
                raise ValueError(
                    f"{name} must be >= 0 seconds up to {MAX_INTERVAL_S:.0f}, got {value!r}"
                )
        if not isinstance(self.nextCleanupAt, int | float) or not 0 <= self.nextCleanupAt < inf:
            raise ValueError(
                f"nextCleanupAt must be an epoch time in ms, got {self.nextCleanupAt!r}"
            )
        if not (self.enableOrderbook or self.enableTrades or self.enablePrices):
            raise ValueError(
                "at least one of enableOrderbook, enableTrades, enablePrices is needed"
            )
        return StreamConfig(
            **{**self.__dict__, "markets": normalise_tickers(list(self.markets))},
        )

    def channels(self) -> tuple[str, ...]:
        """Kalshi WebSocket channels this config subscribes to."""
        out: list[str] = []
        if self.enableOrderbook:
            out.append("orderbook_delta")
        if self.enablePrices:
            out.append("ticker")
        if self.enableTrades:
            out.append("trade")
        # Lifecycle (market and event) always: a market that closes or settles shows so at once.
        out.append("market_lifecycle_v2")
        return tuple(out)


@dataclass
class StreamInput:
    """Argument of the stream activity: the config at the time it started, and who it serves."""

    config: StreamConfig
    streamId: str
    marketsVersion: int


@dataclass
class MarketSet:
    """The workflow's desired markets; ``version`` changes whenever the set does."""

    version: int
    markets: list[str]


@dataclass
class HealthReport:
    """What the health check activity found (small, bounded: it is recorded in history).

    Attributes:
        running: A stream activity attempt is executing (not waiting for a retry).
        stale: The feed should be restarted.
        reason: Why it is stale, or what state it is in.
        attempt: Attempt number of the stream activity.
        state: Feed state from its last heartbeat (``connected``, ``reconnecting``, ...).
        messages: Messages received by the current attempt.
        batches: Batches written by the current attempt.
        reconnects: Reconnects of the current attempt.
        gaps: Sequence gaps of the current attempt.
        lastMessageAt: Epoch ms of the last data message (0: none yet).
        lastHeartbeatAgeS: Seconds since the last heartbeat reached the server.
        lastFailure: Message of the last failed attempt, if any.
        checkedAt: Epoch ms of the check.
    """

    running: bool = False
    stale: bool = False
    reason: str = ""
    attempt: int = 0
    state: str = ""
    messages: int = 0
    batches: int = 0
    reconnects: int = 0
    gaps: int = 0
    lastMessageAt: float = 0.0
    lastHeartbeatAgeS: float = 0.0
    lastFailure: str = ""
    checkedAt: float = 0.0


@dataclass
class WorkflowStatus:
    """Answer of the ``status`` query."""

    workflowId: str
    runId: str
    state: str
    markets: list[str]
    marketsVersion: int
    channels: list[str]
    exchange: str
    streamStarts: int
    healthRestarts: int
    continuedAsNew: int
    historyLength: int
    lastHealth: HealthReport | None
    lastCleanup: dict[str, Any] | None


@dataclass
class MarketsChange:
    """Argument of the ``updateMarkets`` update."""

    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@dataclass
class HealthInput:
    """Argument of the health check activity."""

    workflowId: str
    runId: str
    staleAfter: float
    heartbeatTimeout: float
    healthCheckInterval: float
    streamId: str


@dataclass
class CleanupInput:
    """Argument of the cleanup activity."""

    olderThanMs: float
    maxRounds: int = 20
