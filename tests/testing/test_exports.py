"""marketpulse.testing's public names: what tests and benchmarks may rely on."""

from __future__ import annotations

import marketpulse.testing


def test_public_names() -> None:
    assert sorted(marketpulse.testing.__all__) == [
        "AdminClient",
        "AsyncAdminClient",
        "Book",
        "ChildProcess",
        "DevProcess",
        "FeedMarket",
        "FunctionError",
        "LocalSystem",
        "ManagedProcess",
        "SimulatorProcess",
        "StoreProcess",
        "Streaming",
        "SyntheticFeed",
        "TemporalProcess",
        "WorkerProcess",
        "canonical_book",
        "free_port",
        "http_ok",
        "new_admin_key",
        "percentile",
        "port_open",
        "summarize_ms",
    ]
    for name in marketpulse.testing.__all__:
        assert hasattr(marketpulse.testing, name), name
