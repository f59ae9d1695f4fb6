"""Prometheus metrics of the pipeline (one registry per process; see ``worker --metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "ALERTS",
    "BATCHES",
    "BATCH_ERRORS",
    "BATCH_LATENCY",
    "BATCH_SIZE",
    "FEED_MESSAGES",
    "GAPS",
    "MESSAGES",
    "RECONNECTS",
    "STORE_WRITE",
    "STREAM_CONNECTED",
    "SUBSCRIBED_MARKETS",
    "serve_metrics",
]

MESSAGES = Counter(
    "marketpulse_stream_events",
    "Feed events handled (books and tickers already coalesced by the feed)",
    ["stream", "kind"],
)
FEED_MESSAGES = Counter(
    "marketpulse_stream_feed_messages", "Exchange messages received by the feed", ["stream"]
)
BATCHES = Counter("marketpulse_stream_batches", "applyUpdates batches written", ["stream"])
BATCH_ERRORS = Counter(
    "marketpulse_stream_batch_errors", "applyUpdates batches that failed", ["stream"]
)
BATCH_LATENCY = Histogram(
    "marketpulse_stream_batch_latency_seconds",
    "From the first event of a batch to the store's acknowledgement",
    ["stream"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STORE_WRITE = Histogram(
    "marketpulse_stream_store_write_seconds",
    "One applyUpdates round trip to the store (the store's share of the batch latency)",
    ["stream"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
BATCH_SIZE = Histogram(
    "marketpulse_stream_batch_events",
    "Feed events coalesced into one batch",
    ["stream"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
RECONNECTS = Counter("marketpulse_stream_reconnects", "Feed reconnects", ["stream"])
GAPS = Counter("marketpulse_stream_gaps", "Sequence gaps detected", ["stream"])
SUBSCRIBED_MARKETS = Gauge(
    "marketpulse_stream_markets", "Markets subscribed by the stream", ["stream"]
)
STREAM_CONNECTED = Gauge(
    "marketpulse_stream_connected", "1 while the feed is connected", ["stream"]
)
ALERTS = Counter("marketpulse_alerts", "Alerts raised", ["stream", "kind"])


def serve_metrics(port: int, host: str = "127.0.0.1") -> int:
    """Expose ``/metrics`` on ``host:port`` (0 picks a free port); returns the port."""
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:  # name the port: the bare errno line did not
        raise OSError(exc.errno, f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
    return int(server.server_port)
