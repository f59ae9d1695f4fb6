"""Exchange names and URLs resolve to the REST and WebSocket endpoints."""

from __future__ import annotations

import pytest

from marketpulse.pipeline._exchange import resolve_exchange


def test_named_exchanges() -> None:
    prod = resolve_exchange("prod")
    assert prod.rest_url == "https://external-api.kalshi.com/trade-api/v2"
    assert prod.ws_url == "wss://external-api-ws.kalshi.com/trade-api/ws/v2"
    assert resolve_exchange("demo").ws_url.startswith("wss://external-api-ws.demo.kalshi.co/")


def test_sim_and_urls() -> None:
    sim = resolve_exchange("sim", sim_url="http://127.0.0.1:9999")
    assert (sim.name, sim.rest_url, sim.ws_url) == (
        "sim",
        "http://127.0.0.1:9999/trade-api/v2",
        "ws://127.0.0.1:9999/trade-api/ws/v2",
    )
    for spec in ("http://h:1", "http://h:1/trade-api/v2", "ws://h:1/trade-api/ws/v2/"):
        ex = resolve_exchange(spec)
        assert ex.rest_url == "http://h:1/trade-api/v2"
        assert ex.ws_url == "ws://h:1/trade-api/ws/v2"
    assert resolve_exchange("https://x.example").ws_url == "wss://x.example/trade-api/ws/v2"


@pytest.mark.parametrize("bad", ["ftp://x", "nonsense", "http://"])
def test_bad_exchange_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="exchange must be"):
        resolve_exchange(bad)
